"""Feedback bound to its client and its card (issue 24), on SQLite and PostgreSQL.

A card record keeps the client it was issued to (the JWT ``iss``, or "anonymous" without
authentication). Feedback on a card is refused (403) from any other client; it suppresses
only when received within the feedback window of the card's issue, with a reason (system
and code) the card offered; a suppression ends at the card's issue + the rule's days
whatever is posted later, and ``outcomeTimestamp`` never lies beyond the receipt. Without
authentication nothing is suppressed unless allowed. Each client's feedback within the window
is capped (much lower without authentication), and feedback for unknown cards per client and
overall (429); one card takes a few rows, a comment is stored cut.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timedelta

import pytest
from jwt_helpers import Signer, jwks
from sqlalchemy import select
from test_storage import Backend, _postgres_backend, make_settings
from test_suppression import (
    NEPHROLOGY,
    OVERRIDE_SYSTEM,
    another_host,
    example,
    hold_card_writes,
    later,
    store_of,
    timestamp,
)

from cds_service.storage import database
from cds_service.storage.feedback import COMMENT_KEPT
from cds_service.storage.feedback_checks import FEEDBACK_PER_CARD
from cds_service.web.app import create_app

BASE = "https://cds.example.org"
SERVICE = "/cds-services/leg-cramp-referral"
FEEDBACK = SERVICE + "/feedback"
EHR_A = "https://ehr-a.example.org"
EHR_B = "https://ehr-b.example.org"
SALT = "trust-secret"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request, tmp_path):
    if request.param == "sqlite":
        yield Backend("sqlite", "", "")
    else:
        yield from _postgres_backend()


@pytest.fixture(scope="module")
def signer():
    return Signer.es384()


@pytest.fixture
def jwt_settings(backend, tmp_path, signer):
    """Two trusted EHRs (clients), each with its own issuer."""

    def make(**extra):
        jwks_file = tmp_path / "jwks.json"
        jwks_file.write_text(json.dumps(jwks(signer)))
        return make_settings(
            tmp_path,
            backend.url,
            patient_hash_salt=SALT,
            auth_mode="jwt",
            jwks_file=str(jwks_file),
            trusted_issuers=(EHR_A, EHR_B),
            public_base_url=BASE,
            **extra,
        )

    return make


@pytest.fixture
def apps():
    """Apps made in a test, their stores closed at its end."""
    made: list = []
    yield made
    for app in made:
        store_of(app).close()


class Ehr:
    """A CDS client: every call with a fresh token from its issuer."""

    def __init__(self, app, signer: Signer, issuer: str | None):
        self.http = app.test_client()
        self.signer = signer
        self.issuer = issuer

    def post(self, path: str, body: dict):
        headers = {}
        if self.issuer is not None:
            headers["Authorization"] = f"Bearer {self.signer.token(BASE + path, self.issuer)}"
        return self.http.post(path, json=body, headers=headers)

    def cards(self, request: dict) -> dict[str, dict]:
        response = self.post(SERVICE, request)
        assert response.status_code == 200, response.get_data(as_text=True)
        return {c["source"]["topic"]["code"]: c for c in response.get_json()["cards"]}

    def feedback(self, *items: dict):
        return self.post(FEEDBACK, {"feedback": list(items)})


def overridden(
    card_uuid: str, code: str = "patient-declined", system: str = OVERRIDE_SYSTEM, at: str = ""
) -> dict:
    return {
        "card": card_uuid,
        "outcome": "overridden",
        "outcomeTimestamp": at or timestamp(),
        "overrideReason": {"reason": {"system": system, "code": code}},
    }


def accepted(card: dict, at: str = "") -> dict:
    return {
        "card": card["uuid"],
        "outcome": "accepted",
        "outcomeTimestamp": at or timestamp(),
        "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
    }


def table(app, which) -> list:
    with store_of(app).engine.connect() as conn:
        return list(conn.execute(select(which)))


def issued_at(app, card: dict) -> datetime:
    with store_of(app).engine.connect() as conn:
        return conn.execute(
            select(database.issued_card.c.issued_at).where(
                database.issued_card.c.card_uuid == card["uuid"]
            )
        ).scalar_one()


def assert_outcome(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code
    return body


def first_card(app, ehr: Ehr) -> dict:
    card = ehr.cards(example(NEPHROLOGY))["nephrology"]
    assert store_of(app).flush()  # its record is in the database before its feedback
    return card


# -- without authentication ---------------------------------------------------------------


@pytest.mark.parametrize("allowed", [False, True])
def test_auth_off_stores_feedback_and_suppresses_only_when_allowed(
    backend, tmp_path, signer, apps, caplog, allowed
):
    settings = make_settings(
        tmp_path, backend.url, patient_hash_salt=SALT, suppression_without_auth=allowed
    )
    with caplog.at_level(logging.WARNING, logger="cds_service.web.app"):
        app = create_app(settings)
        apps.append(app)
        ehr = Ehr(app, signer, None)
        card = first_card(app, ehr)
        assert ehr.feedback(overridden(card["uuid"])).status_code == 200
        again = ehr.cards(example(NEPHROLOGY))
    [feedback_row] = table(app, database.feedback)
    assert feedback_row.client == "anonymous" and feedback_row.unknown_card is False
    assert ("nephrology" not in again) is allowed
    assert (len(table(app, database.suppression)) == 1) is allowed
    said = [r.getMessage() for r in caplog.records if r.name == "cds_service.web.app"]
    expected = (
        "any caller's feedback can suppress cards"
        if allowed
        else "feedback is stored but suppresses no card"
    )
    assert len(said) == 1 and expected in said[0]  # once, at start-up


def test_jwt_mode_says_nothing_about_suppression_at_start_up(jwt_settings, apps, caplog):
    with caplog.at_level(logging.WARNING, logger="cds_service.web.app"):
        apps.append(create_app(jwt_settings()))
    assert not [r for r in caplog.records if r.name == "cds_service.web.app"]


# -- bound to the client ----------------------------------------------------------------


def test_feedback_on_another_clients_card_is_refused(jwt_settings, signer, apps):
    app = create_app(jwt_settings())
    apps.append(app)
    ehr_a, ehr_b = Ehr(app, signer, EHR_A), Ehr(app, signer, EHR_B)
    card_a = first_card(app, ehr_a)
    card_b = ehr_b.cards(example(NEPHROLOGY, patient="p-b"))["nephrology"]
    assert store_of(app).flush()
    assert sorted(r.client for r in table(app, database.issued_card)) == [EHR_A, EHR_B]

    body = assert_outcome(ehr_b.feedback(overridden(card_a["uuid"])), 403, "forbidden")
    assert card_a["uuid"] not in json.dumps(body)
    # A batch with one item about another client's card is refused whole.
    response = ehr_b.feedback(overridden(card_b["uuid"]), overridden(card_a["uuid"]))
    assert_outcome(response, 403, "forbidden")
    assert table(app, database.feedback) == []
    assert "nephrology" in ehr_a.cards(example(NEPHROLOGY))

    # Near miss: the card's own client is heard, and its override suppresses.
    assert ehr_a.feedback(overridden(card_a["uuid"])).status_code == 200
    assert "nephrology" not in ehr_a.cards(example(NEPHROLOGY))


def test_a_suppression_leaves_the_card_out_only_on_its_clients_calls(jwt_settings, signer, apps):
    """Client B cannot hide a patient's card from client A by overriding a card of its own:
    each client's override suppresses on that client's calls only."""
    app = create_app(jwt_settings())
    apps.append(app)
    ehr_a, ehr_b = Ehr(app, signer, EHR_A), Ehr(app, signer, EHR_B)
    card_b = first_card(app, ehr_b)
    assert ehr_b.feedback(overridden(card_b["uuid"])).status_code == 200
    assert "nephrology" not in ehr_b.cards(example(NEPHROLOGY))
    assert "nephrology" in ehr_a.cards(example(NEPHROLOGY))
    [held] = table(app, database.suppression)
    assert held.client == EHR_B


def test_another_clients_override_never_ends_or_replaces_a_suppression(jwt_settings, signer, apps):
    """A's and B's suppressions of the same patient's route are two rows: B overriding its
    own card, then accepting it, leaves A's suppression as it was."""
    app = create_app(jwt_settings())
    apps.append(app)
    ehr_a, ehr_b = Ehr(app, signer, EHR_A), Ehr(app, signer, EHR_B)
    card_a = first_card(app, ehr_a)
    assert ehr_a.feedback(overridden(card_a["uuid"])).status_code == 200
    assert "nephrology" not in ehr_a.cards(example(NEPHROLOGY))  # A's copy holds it now
    card_b = first_card(app, ehr_b)
    assert ehr_b.feedback(overridden(card_b["uuid"])).status_code == 200
    held = {(r.client, r.card_uuid) for r in table(app, database.suppression)}
    assert held == {(EHR_A, card_a["uuid"]), (EHR_B, card_b["uuid"])}
    assert "nephrology" not in ehr_a.cards(example(NEPHROLOGY))
    assert "nephrology" not in ehr_b.cards(example(NEPHROLOGY))
    assert ehr_b.feedback(accepted(card_b)).status_code == 200  # ends B's only
    assert [r.client for r in table(app, database.suppression)] == [EHR_A]
    assert "nephrology" not in ehr_a.cards(example(NEPHROLOGY))
    assert "nephrology" in ehr_b.cards(example(NEPHROLOGY))


@pytest.mark.parametrize("sender, suppressed", [(EHR_A, True), (EHR_B, False)])
def test_an_early_override_is_adopted_only_from_the_cards_client(
    jwt_settings, signer, apps, sender, suppressed
):
    """The override reaches an instance on another host before the card's record: it is
    stored as for an unknown card and adopted when the record is written, suppressing only
    if it came from the client the card was issued to."""
    settings = jwt_settings()
    one, two = create_app(settings), create_app(another_host(settings))
    apps.extend([one, two])
    gate = hold_card_writes(store_of(one))
    card = Ehr(one, signer, EHR_A).cards(example(NEPHROLOGY))["nephrology"]
    assert Ehr(two, signer, sender).feedback(overridden(card["uuid"])).status_code == 200
    gate.set()
    assert store_of(one).flush()
    [row] = table(two, database.feedback)
    assert row.unknown_card is False and row.client == sender
    again = Ehr(two, signer, EHR_A).cards(example(NEPHROLOGY))
    assert ("nephrology" not in again) is suppressed


# -- what an override can do ------------------------------------------------------------


@pytest.mark.parametrize("system, suppressed", [("urn:evil", False), (OVERRIDE_SYSTEM, True)])
def test_a_reason_under_a_foreign_system_is_stored_but_suppresses_nothing(
    jwt_settings, signer, apps, system, suppressed
):
    app = create_app(jwt_settings())
    apps.append(app)
    ehr = Ehr(app, signer, EHR_A)
    card = first_card(app, ehr)
    assert ehr.feedback(overridden(card["uuid"], system=system)).status_code == 200
    [row] = table(app, database.feedback)
    assert (row.override_reason_system, row.override_reason_code) == (system, "patient-declined")
    assert ("nephrology" not in ehr.cards(example(NEPHROLOGY))) is suppressed


@pytest.mark.parametrize("hours, suppressed", [(25, False), (23, True)])
def test_an_override_received_after_the_window_suppresses_nothing(
    jwt_settings, signer, apps, hours, suppressed
):
    app = create_app(jwt_settings(feedback_window_hours=24))
    apps.append(app)
    ehr = Ehr(app, signer, EHR_A)
    card = first_card(app, ehr)
    later(store_of(app), timedelta(hours=hours))  # the feedback arrives this much later
    assert ehr.feedback(overridden(card["uuid"])).status_code == 200
    assert ("nephrology" not in ehr.cards(example(NEPHROLOGY))) is suppressed


def test_a_renewed_override_never_extends_the_suppression(jwt_settings, signer, apps):
    """Re-posting the override, or another with a longer suppression, for the same card keeps
    the end at the card's issue + the first reason's days."""
    app = create_app(jwt_settings())
    apps.append(app)
    store = store_of(app)
    store.suppression_policy = {
        "nephrology": {
            (OVERRIDE_SYSTEM, "patient-declined"): 30,
            (OVERRIDE_SYSTEM, "already-under-care"): 90,
        }
    }
    ehr = Ehr(app, signer, EHR_A)
    card = first_card(app, ehr)
    end = issued_at(app, card) + timedelta(days=30)
    assert ehr.feedback(overridden(card["uuid"])).status_code == 200
    [held] = table(app, database.suppression)
    assert held.expires_at == end

    later(store, timedelta(hours=10))  # still within the feedback window
    renewed = [
        overridden(card["uuid"], at=timestamp(timedelta(hours=10, seconds=-2))),
        overridden(card["uuid"], code="already-under-care", at=timestamp(timedelta(hours=10))),
    ]
    assert ehr.feedback(*renewed).status_code == 200
    [held] = table(app, database.suppression)
    assert held.expires_at == end and held.reason_code == "already-under-care"
    later(store, timedelta(days=29))
    assert "nephrology" not in ehr.cards(example(NEPHROLOGY))
    later(store, timedelta(days=30, minutes=1))
    assert "nephrology" in ehr.cards(example(NEPHROLOGY))


def test_a_future_dated_override_is_clamped_and_blocks_no_later_acceptance(
    jwt_settings, signer, apps
):
    app = create_app(jwt_settings())
    apps.append(app)
    ehr = Ehr(app, signer, EHR_A)
    card = first_card(app, ehr)
    far = "2099-01-01T00:00:00Z"
    assert ehr.feedback(overridden(card["uuid"], at=far)).status_code == 200
    [row] = table(app, database.feedback)
    assert row.outcome_timestamp == row.received_at  # clamped to the receipt
    [held] = table(app, database.suppression)
    assert held.expires_at == issued_at(app, card) + timedelta(days=90)
    assert held.suppressed_at <= row.received_at
    assert "nephrology" not in ehr.cards(example(NEPHROLOGY))
    # The clinician accepts the card a moment later: the 2099 override does not outrank it.
    assert ehr.feedback(accepted(card, at=timestamp(timedelta(seconds=1)))).status_code == 200
    assert table(app, database.suppression) == []
    assert "nephrology" in ehr.cards(example(NEPHROLOGY))


# -- feedback for unknown cards is capped -------------------------------------------------


def unknown_items(count: int) -> list[dict]:
    return [overridden(str(uuid.uuid4())) for _ in range(count)]


def test_feedback_for_unknown_cards_stops_at_its_cap_with_429(jwt_settings, signer, apps):
    app = create_app(jwt_settings(unknown_feedback_per_client=3, unknown_feedback_total=5))
    apps.append(app)
    ehr_a, ehr_b = Ehr(app, signer, EHR_A), Ehr(app, signer, EHR_B)
    first = unknown_items(2)
    assert ehr_a.feedback(*first).status_code == 200
    assert ehr_a.feedback(*unknown_items(1)).status_code == 200

    response = ehr_a.feedback(*unknown_items(1))  # past A's own cap
    assert_outcome(response, 429, "throttled")
    assert 0 < int(response.headers["Retry-After"]) <= 24 * 3600
    assert ehr_a.feedback(*first).status_code == 200  # a retry of stored items still passes
    assert ehr_b.feedback(*unknown_items(2)).status_code == 200  # B has its own
    response = ehr_b.feedback(*unknown_items(1))  # past the overall cap
    assert_outcome(response, 429, "throttled")
    assert int(response.headers["Retry-After"]) > 0
    rows = table(app, database.feedback)
    assert len(rows) == 5 and all(r.unknown_card for r in rows)
    assert sorted(r.client for r in rows) == [EHR_A] * 3 + [EHR_B] * 2

    # Feedback on a known card is still taken; a batch that would pass the cap is refused
    # whole, its known card's item included.
    card = first_card(app, ehr_a)
    both = [overridden(card["uuid"]), *unknown_items(1)]
    assert_outcome(ehr_a.feedback(*both), 429, "throttled")
    assert ehr_a.feedback(overridden(card["uuid"])).status_code == 200
    # Once the rows are older than the window they no longer count.
    later(store_of(app), timedelta(hours=25))
    assert ehr_a.feedback(*unknown_items(3)).status_code == 200


def test_one_card_takes_a_bounded_amount_of_feedback(jwt_settings, signer, apps):
    app = create_app(jwt_settings())
    apps.append(app)
    ehr = Ehr(app, signer, EHR_A)
    card = first_card(app, ehr)
    start = database.utcnow().replace(microsecond=0)  # one clock reading: distinct seconds

    def at(seconds_before: int) -> str:
        return (start - timedelta(seconds=seconds_before)).isoformat() + "Z"

    items = [
        overridden(card["uuid"], code="cds-not-applicable", at=at(i))
        for i in range(FEEDBACK_PER_CARD)
    ]
    assert ehr.feedback(*items).status_code == 200
    assert ehr.feedback(*items).status_code == 200  # a retry: stored already, counted once
    one_more = overridden(card["uuid"], at=at(FEEDBACK_PER_CARD))
    response = ehr.feedback(one_more)
    assert_outcome(response, 429, "throttled")
    assert "Retry-After" not in response.headers  # waiting would not help
    assert len(table(app, database.feedback)) == FEEDBACK_PER_CARD
    assert table(app, database.suppression) == []  # the refused override did nothing


def test_each_clients_feedback_on_its_own_cards_is_capped_within_the_window(
    jwt_settings, signer, apps
):
    """Cards a client was shown are no way round the disk bound: all its feedback rows
    within the window count, on known cards too."""
    app = create_app(jwt_settings(feedback_per_client=FEEDBACK_PER_CARD + 1))
    apps.append(app)
    ehr_a, ehr_b = Ehr(app, signer, EHR_A), Ehr(app, signer, EHR_B)
    first, second = first_card(app, ehr_a), first_card(app, ehr_a)
    start = database.utcnow().replace(microsecond=0)
    items = [
        overridden(first["uuid"], at=(start - timedelta(seconds=i)).isoformat() + "Z")
        for i in range(FEEDBACK_PER_CARD)
    ]
    assert ehr_a.feedback(*items).status_code == 200
    assert ehr_a.feedback(accepted(second)).status_code == 200  # the allowance, reached
    response = ehr_a.feedback(overridden(second["uuid"]))
    assert_outcome(response, 429, "throttled")
    assert 0 < int(response.headers["Retry-After"]) <= 24 * 3600
    assert ehr_a.feedback(*items).status_code == 200  # a retry of stored items still passes
    assert ehr_b.feedback(accepted(first_card(app, ehr_b))).status_code == 200  # B's own
    assert len(table(app, database.feedback)) == FEEDBACK_PER_CARD + 2
    later(store_of(app), timedelta(hours=25))  # the rows counted have left the window
    assert ehr_a.feedback(overridden(second["uuid"])).status_code == 200


def test_without_authentication_the_one_anonymous_client_gets_a_small_allowance(
    backend, tmp_path, signer, apps
):
    defaults = make_settings(tmp_path, backend.url)
    assert defaults.feedback_without_auth * 5 <= defaults.feedback_per_client
    app = create_app(make_settings(tmp_path, backend.url, patient_hash_salt=SALT))
    apps.append(app)
    anyone = Ehr(app, signer, None)
    allowance = defaults.feedback_without_auth
    assert anyone.feedback(*unknown_items(allowance)).status_code == 200
    response = anyone.feedback(*unknown_items(1))
    assert_outcome(response, 429, "throttled")
    assert int(response.headers["Retry-After"]) > 0
    assert len(table(app, database.feedback)) == allowance


def test_a_stored_comment_is_cut_to_a_bounded_length(jwt_settings, signer, apps):
    app = create_app(jwt_settings())
    apps.append(app)
    ehr = Ehr(app, signer, EHR_A)
    item = overridden(first_card(app, ehr)["uuid"])
    item["overrideReason"]["userComment"] = "é" * 4000
    assert ehr.feedback(item).status_code == 200
    [row] = table(app, database.feedback)
    assert row.user_comment == "é" * COMMENT_KEPT and COMMENT_KEPT <= 500


def test_an_item_cannot_carry_an_unbounded_list_of_suggestions(jwt_settings, signer, apps):
    """What one stored row may hold is bounded, so the caps bound the disk used."""
    app = create_app(jwt_settings())
    apps.append(app)
    ehr = Ehr(app, signer, EHR_A)
    card = first_card(app, ehr)
    item = accepted(card)
    item["acceptedSuggestions"] = [{"id": str(i)} for i in range(17)]
    body = assert_outcome(ehr.feedback(item), 400, "invalid")
    assert "acceptedSuggestions" in body["issue"][0]["details"]["text"]
    item["acceptedSuggestions"] = item["acceptedSuggestions"][:16]
    assert ehr.feedback(item).status_code == 200
