"""Garbage collection after each response, in gunicorn workers (``post_worker_init``).

A hook call leaves a few hundred objects in reference cycles (the engine's record and its
lab results refer to each other; werkzeug's URL matcher is a recursive closure), so the
decoded request they hold is freed by the cycle collector, not by reference counting.
With a large young generation (``gunicorn_conf``: 50,000) a collection came every 30 or
so calls, in the middle of one (mostly while the next request was being decoded), and
walked tens of thousands of objects gone cold in the cache: ~9-12 ms each, ~0.4 ms a call
at 200 resources. Collecting the young generation once the answer has been sent walks one
call's objects while they are still in the cache (~0.1 ms), and no call waits for it:
7-12% less CPU a call at 200 resources, the same at 20 (bench/NOTES.md).

The automatic collector stays on as before, as a safety net (a long call, a burst).
"""

from __future__ import annotations

import gc

MIDDLE_EVERY = 20  # responses between collections of the middle generation too
FULL_EVERY = 2_000  # responses between full collections

_enabled = False
_responses = 0


def enable() -> None:
    """Collect after every response from now on (called in each gunicorn worker)."""
    global _enabled
    _enabled = True


def after_response() -> None:
    """The collection due after one more response (nothing unless enabled)."""
    global _responses
    if not _enabled:
        return
    _responses += 1
    if _responses % FULL_EVERY == 0:
        gc.collect(2)
    elif _responses % MIDDLE_EVERY == 0:
        gc.collect(1)
    else:
        gc.collect(0)
