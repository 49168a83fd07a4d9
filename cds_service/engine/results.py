"""A record's lab results by concept: dated, ordered newest first, each read once.

Kept apart from ``record.Record`` (which owns the resources and their screening) because
results have their own rules: an unreadable newest result is never replaced by an older one,
and same-instant results are ordered by rule, never by the bundle.
"""

from __future__ import annotations

import logging
from datetime import datetime
from operator import itemgetter
from typing import TYPE_CHECKING

from cds_service.engine.dates import Read, Unreadable
from cds_service.engine.quality import Reading, assess
from cds_service.engine.reading import observation_when
from cds_service.engine.shapes import Resource
from cds_service.engine.terminology import Concept

if TYPE_CHECKING:
    from cds_service.engine.concepts import ObservationConcept
    from cds_service.engine.record import Record

log = logging.getLogger(__name__)

# (when, value in the concept's unit or None when unusable, resource, code matched)
Result = tuple[datetime, float | None, Resource, Concept]
ValuedResult = tuple[datetime, float, Resource, Concept]  # a Result whose value is usable
# (POSIX timestamp, when, resource, code matched): how results are kept, newest first
Dated = tuple[float, datetime, Resource, Concept]
# (the date as read: unreadable, absent or after today; resource, code matched)
Unplaced = tuple[Read, Resource, Concept]
# What a list of results is asked by: which list, concept name, statuses, window start, same
# day (answered once in the record's memo, which forgets when a resource proves invalid).
Question = tuple[str, str, frozenset[str], datetime | None, bool]
_stamp = itemgetter(0)


class LabResults:
    """The results of one record, per observation concept. Every answer is kept in the
    record's one memo (``Record.memo``), never here."""

    def __init__(self, record: Record) -> None:
        self.record = record  # a cycle (the record holds its results): ``Record.release``
        self._after_today = record.read.tomorrow.timestamp()  # a result from then on: unplaced

    def newest_result(
        self,
        concept: ObservationConcept,
        statuses: frozenset[str],
        since: datetime | None = None,
    ) -> Result | None:
        """The newest result of a lab concept with one of ``statuses`` (from ``since`` on):
        (when, canonical value, resource, code), or None.

        The value is ``None`` when it cannot be converted to the concept's unit: an
        unreadable newest result is not silently replaced by an older one. Results are
        screened and converted only when reached (most rules stop at the newest one); a
        plain loop, as abandoning a generator part-way costs more than the rest.
        """
        dated = self._dated_of(concept)
        if not dated:  # most concepts on most charts: no question to ask
            return None
        record = self.record
        oldest = since.timestamp() if since is not None else None
        for stamp, when, resource, code in dated:
            if oldest is not None and stamp < oldest:
                return None  # newest first: the rest are older still
            if (
                record.screen(resource)
                and resource.get("status") in statuses
                and not record.known_invalid(resource)
            ):
                return when, self._value(concept, resource), resource, code
        return None

    def results_in(
        self, concept: ObservationConcept, statuses: frozenset[str], since: datetime | None
    ) -> list[Result]:
        """Every such result from ``since`` on, newest first (see ``newest_result``).
        Answered once per question and record (several rules ask it): not to be changed."""
        dated = self._dated_of(concept)
        if not dated:  # most concepts on most charts: nothing to answer
            return []
        key: Question = ("in", concept.name, _frozen(statuses), since, False)
        memo = self.record.memo
        found = memo.get(key)
        if found is None:
            found = memo[key] = self._results_in(dated, concept, statuses, since)
        return found

    def _results_in(
        self,
        dated: list[Dated],
        concept: ObservationConcept,
        statuses: frozenset[str],
        since: datetime | None,
    ) -> list[Result]:
        record = self.record
        oldest = since.timestamp() if since is not None else None
        found: list[Result] = []
        for stamp, when, resource, code in dated:
            if oldest is not None and stamp < oldest:
                break
            if (
                record.screen(resource)
                and resource.get("status") in statuses
                and not record.known_invalid(resource)
            ):
                found.append((when, self._value(concept, resource), resource, code))
        return found

    def newest_results(
        self,
        concept: ObservationConcept,
        statuses: frozenset[str],
        since: datetime | None = None,
        same_day: bool = False,
    ) -> list[Result]:
        """Every result at the newest instant (``same_day``: on the newest day) from
        ``since`` on, usable or not: several results of one instant are decided by rule
        (the worse value), never by which came first in the bundle. Answered once per
        question and record, like ``results_in``."""
        dated = self._dated_of(concept)
        if not dated:
            return []
        key: Question = ("newest", concept.name, _frozen(statuses), since, same_day)
        memo = self.record.memo
        found = memo.get(key)
        if found is None:
            found = memo[key] = self._newest_results(dated, concept, statuses, since, same_day)
        return found

    def _newest_results(
        self,
        dated: list[Dated],
        concept: ObservationConcept,
        statuses: frozenset[str],
        since: datetime | None,
        same_day: bool,
    ) -> list[Result]:
        record = self.record
        oldest = since.timestamp() if since is not None else None
        found: list[Result] = []
        first: tuple[float, datetime] | None = None
        for stamp, when, resource, code in dated:
            if oldest is not None and stamp < oldest:
                break
            if first is not None and (
                when.date() != first[1].date() if same_day else stamp != first[0]
            ):
                break
            if (
                record.screen(resource)
                and resource.get("status") in statuses
                and not record.known_invalid(resource)
            ):
                first = first or (stamp, when)
                found.append((when, self._value(concept, resource), resource, code))
        return found

    def _dated_of(self, concept: ObservationConcept) -> list[Dated]:
        key = ("dated", concept.name)
        memo = self.record.memo
        dated = memo.get(key)
        if dated is None:
            dated = memo[key] = self._dated_results(concept)
        return dated

    def _value(self, concept: ObservationConcept, resource: Resource) -> float | None:
        """The result's value in the concept's canonical unit when usable, else None."""
        return self.reading(concept, resource).value

    def reading(self, concept: ObservationConcept, resource: Resource) -> Reading:
        """The result as the rules may use it (``quality.assess``), decided once per record."""
        memo = self.record.memo
        key = ("reading", concept.name, id(resource))
        found = memo.get(key)
        if found is None:
            found = memo[key] = assess(concept, resource)
            if not found.usable:
                # Why stays on the card: the reason may quote the resource (its unit as
                # written), and no patient data goes to the logs.
                log.info("a %s result is %s", concept.name, found.status)
        return found

    def _dated_results(self, concept: ObservationConcept) -> list[Dated]:
        """(POSIX timestamp, when, resource, code), newest first. Sorted and compared on
        timestamps: comparing datetimes that carry UTC offsets is several times slower."""
        after_today = self._after_today
        record = self.record
        reader = record.read
        # (timestamp, date) of each effectiveDateTime text read this call: a lab panel's
        # results share one, and most concepts' results are looked at by several routes.
        instants = reader.instants
        dated: list[Dated] = []
        unplaced: list[Unplaced] = []
        for resource, code in record._candidates("Observation", concept.value_set):
            effective = (
                resource.get("effectiveDateTime")
                if type(resource) is dict
                else resource.effectiveDateTime  # type: ignore[attr-defined]  # a FhirNode
            )
            found: tuple[float, datetime] | Unreadable | None = (
                instants.get(effective) if type(effective) is str else None
            )
            if found is None:
                found = self._instant_of(resource, effective)
            if not isinstance(found, tuple):  # unreadable or absent: for review, never dropped
                unplaced.append((found, resource, code))
            elif found[0] >= after_today:  # after today: for review too
                unplaced.append((found[1], resource, code))
            else:
                dated.append((found[0], found[1], resource, code))
        record.memo["unplaced", concept.name] = unplaced
        dated.sort(key=_stamp, reverse=True)  # newest first, stable: ties keep their order
        _order_ties(dated, concept)
        return dated

    def unplaced(self, concept: ObservationConcept) -> list[Unplaced]:
        """Results that cannot be placed among the others: a date that cannot be read, or
        after today. They never decide (an unknown date must not hide a known critical
        result, nor a dated one be replaced by them), and are listed for review."""
        memo = self.record.memo
        found: list[Unplaced] | None = memo.get(("unplaced", concept.name))
        if found is None:  # filed while its results are dated
            self._dated_of(concept)
            found = memo.get(("unplaced", concept.name), [])
        return found

    def _instant_of(
        self, resource: Resource, effective: object
    ) -> tuple[float, datetime] | Unreadable | None:
        """(timestamp, date) of a result: its effective time in any form, else ``issued``;
        the date as read when it cannot be (``Unreadable``, or None: no date at all)."""
        record = self.record
        when = observation_when(record.read, resource)
        if not isinstance(when, datetime):
            return when
        found = (when.timestamp(), when)
        if type(effective) is str and record.read.memo.get(effective) is when:
            record.read.instants[effective] = found  # read from effectiveDateTime itself
        return found


def _frozen(statuses: frozenset[str]) -> frozenset[str]:
    """Statuses as a memo key: the rules' are frozensets already (made when they load)."""
    return statuses if type(statuses) is frozenset else frozenset(statuses)


def _order_ties(dated: list[Dated], concept: ObservationConcept) -> None:
    """Results of one instant in a fixed order whatever the bundle's: the concept's codes as
    listed (serum or plasma before blood), then the resource id. Only the runs of equal
    timestamps are sorted again (they are rare), which orders the list as sorting all of it
    on (-timestamp, code rank, id) would."""
    count = len(dated)
    if len(set(map(_stamp, dated))) == count:  # no two of one instant: the usual case
        return
    start = 0
    while start < count - 1:
        end = start + 1
        stamp = dated[start][0]
        while end < count and dated[end][0] == stamp:
            end += 1
        if end - start > 1:
            rank = concept.value_set.rank
            other = len(rank)
            dated[start:end] = sorted(
                dated[start:end],
                key=lambda r: (rank.get((r[3].system, r[3].code), other), str(r[2].get("id"))),
            )
        start = end
