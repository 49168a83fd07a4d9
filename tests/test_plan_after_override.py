"""The plan after an override (issue 22's one plan, with issue 13's suppression).

When a clinician's override hides a card, the other cards are composed again without it: a
step the hidden card had taken (its test) comes back to the card still shown, a step asking
for the hidden route's referral is not asked again (the override said how it stands), and no
card says "See the X card" for a card that is not there.
"""

from __future__ import annotations

import pytest
import vignettes as v
from test_suppression import app, backend, cards_by_route, client, override, settings, store_of

__all__ = ["app", "backend", "client", "settings"]  # the fixtures, used by name

ASKS_NEUROLOGY = "also send a neurology referral"


def _next_steps(card: dict) -> str:
    return card["detail"].split("**Next step**")[-1]


def test_a_hidden_neurology_card_is_not_pointed_to_nor_its_referral_asked_again(app, client):
    request = v.polyneuropathy_with_hba1c_10_2_and_fasciculation()
    first = cards_by_route(client, request)
    assert "See the Neurology card" in _next_steps(first["endocrinology"])
    assert ASKS_NEUROLOGY not in _next_steps(first["endocrinology"])
    override(client, store_of(app), first["neurology"])

    again = cards_by_route(client, request)
    assert "neurology" not in again
    steps = _next_steps(again["endocrinology"])
    assert "See the Neurology card" not in steps
    assert ASKS_NEUROLOGY not in steps
    # The endocrinology card's own advice is unchanged.
    assert again["endocrinology"]["summary"] == first["endocrinology"]["summary"]


def test_a_test_the_hidden_card_asked_for_goes_back_to_the_card_shown(app, client):
    request = v.polyneuropathy_without_hba1c()
    first = cards_by_route(client, request)
    workup = first["primary-care-workup"]
    assert "HbA1c" in workup["detail"]
    assert "See the Primary care workup card" in _next_steps(first["neurology"])
    override(client, store_of(app), workup)

    again = cards_by_route(client, request)
    assert "primary-care-workup" not in again
    steps = _next_steps(again["neurology"])
    assert "See the Primary care workup card" not in steps
    assert "HbA1c" in steps


@pytest.mark.parametrize("hidden", ["endocrinology"])
def test_near_miss_hiding_a_card_no_step_points_to_leaves_the_others_as_they_were(
    app, client, hidden
):
    request = v.polyneuropathy_with_hba1c_10_2_and_fasciculation()
    first = cards_by_route(client, request)
    override(client, store_of(app), first[hidden])
    again = cards_by_route(client, request)
    assert hidden not in again
    for route, card in again.items():
        assert _next_steps(card) == _next_steps(first[route]), route
