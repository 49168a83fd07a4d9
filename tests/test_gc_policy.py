"""Garbage collection after each response (gunicorn workers): young generation each time,
the older ones now and then, nothing at all unless a worker enabled it."""

from __future__ import annotations

import gc

from cds_service.service import CdsService
from cds_service.web import gc_policy


def test_collects_the_generation_due_only_when_enabled(monkeypatch):
    collected: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda generation=2: collected.append(generation))
    monkeypatch.setattr(gc_policy, "_enabled", False)
    gc_policy.after_response()
    assert collected == []
    monkeypatch.setattr(gc_policy, "_enabled", True)
    monkeypatch.setattr(gc_policy, "_responses", 0)
    for _ in range(gc_policy.FULL_EVERY):
        gc_policy.after_response()
    assert collected.count(2) == 1
    assert collected.count(1) == gc_policy.FULL_EVERY // gc_policy.MIDDLE_EVERY - 1
    assert len(collected) == gc_policy.FULL_EVERY


def _cyclic_garbage_of(action) -> list:
    """What ``action`` leaves for the cycle collector (reference counting cannot free)."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        action()
        gc.collect()
        return list(gc.garbage)
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()


def test_a_hook_evaluation_leaves_no_reference_cycles(settings):
    """The record and its lab results refer to each other until ``Record.release``: without
    it every call's record (and the resources it holds) waits for the cycle collector."""
    import orjson
    from synthea import SYNTHEA_DIR, hook_request

    from cds_service.protocol import fhir_json

    body = orjson.dumps(hook_request(SYNTHEA_DIR / "Gabriel_Blanda_95f1227c.json"))
    service = CdsService(settings)  # no app: its store opens in a thread that makes garbage
    assert service.evaluate(fhir_json.decode_request(body)).routes  # the rules did run
    garbage = _cyclic_garbage_of(lambda: service.evaluate(fhir_json.decode_request(body)))
    # Only the service's own objects: another test's thread may leave garbage meanwhile.
    ours = [o for o in garbage if type(o).__module__.startswith("cds_service")]
    assert ours == []


def test_the_bookkeeping_frees_the_call_before_collecting(app, monkeypatch):
    """The young generation is collected after the call's request and outcome are let go,
    so the collection walks what is left, not every decoded resource of the call."""
    import weakref

    from conftest import minimal_request

    service = app.extensions["cds"]
    outcomes: list[weakref.ref] = []
    real_evaluate = service.evaluate

    def evaluate_and_watch(request, *declared):  # CdsService.call names the service
        outcome = real_evaluate(request, *declared)
        outcomes.append(weakref.ref(outcome))
        return outcome

    alive_at_collection: list[bool] = []
    monkeypatch.setattr(service, "evaluate", evaluate_and_watch)
    monkeypatch.setattr(
        gc_policy, "after_response", lambda: alive_at_collection.append(outcomes[-1]() is not None)
    )
    response = app.test_client().post("/cds-services/leg-cramp-referral", json=minimal_request())
    assert response.status_code == 200
    response.close()
    assert outcomes and alive_at_collection == [False]


def test_the_bookkeeping_leaves_an_enclosing_app_context_alone(app):
    """A request served inside an app context its caller pushed (a script, a command) shares
    that context's ``g``: only the call's own state is let go (found in review)."""
    from conftest import minimal_request
    from flask import g

    with app.app_context():
        g.caller_value = 1
        response = app.test_client().post(
            "/cds-services/leg-cramp-referral", json=minimal_request()
        )
        assert response.status_code == 200
        response.close()
        assert g.get("caller_value") == 1
