"""What the access log says of a request: one PHI-free line (see ``cds_service.logs``)."""

from __future__ import annotations

from flask import g


def note_request(payload: object) -> None:
    """Keep the hookInstance for the access log (an opaque id, nothing about the patient)."""
    hook_instance = payload.get("hookInstance") if isinstance(payload, dict) else None
    if isinstance(hook_instance, str) and 0 < len(hook_instance) <= 128:
        g.hook_instance = hook_instance


def access_line(state, method: str, endpoint: str, status: int, elapsed: float) -> dict:
    """One PHI-free line per request, errors included (see cds_service.logs)."""
    outcome = state.get("outcome")
    return {
        "method": method,
        "endpoint": endpoint,
        "service": state.get("service_id"),
        "status": status,
        "duration_ms": round(elapsed * 1000.0, 3),
        "hookInstance": state.get("hook_instance"),
        "routes": outcome.routes if outcome is not None else None,
        "rules": outcome.rule_ids if outcome is not None else None,
        "cards": len(outcome.routes) if outcome is not None else None,
        "resources": outcome.resource_count if outcome is not None else None,
        "resource_counts": outcome.resource_counts if outcome is not None else None,
        "error": state.get("error"),
    }
