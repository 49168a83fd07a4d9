"""Garbage collection after each response (gunicorn workers): young generation each time,
the older ones now and then, nothing at all unless a worker enabled it."""

from __future__ import annotations

import gc

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
