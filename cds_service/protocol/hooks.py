"""CDS Hooks documents: the JSON Schemas we ship, request validation, discovery.

Validation errors name the offending field (a JSON path) and the rule it broke, never
the value, so no patient data leaks into an error message.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

import jsonschema_rs

from cds_service.errors import InvalidRequest
from cds_service.lazy import lazy_module
from cds_service.protocol.services import REQUEST_SCHEMAS, Service

if TYPE_CHECKING:
    import jsonschema
    import referencing
else:  # only to describe what is wrong with a document (~50 ms of start-up otherwise)
    jsonschema = lazy_module("jsonschema")
    referencing = lazy_module("referencing")

SCHEMA_FILES = (
    "coding",
    "card",
    "cds-response",
    "discovery",
    "feedback",
    *REQUEST_SCHEMAS.values(),
)
SPEC_VERSION = "2.0"


@cache
def _schemas() -> dict[str, dict]:
    """Our schemas by ``$id``."""
    found = {}
    for name in SCHEMA_FILES:
        schema = json.loads(
            resources.files("cds_service.schemas").joinpath(f"{name}.json").read_text()
        )
        found[schema["$id"]] = schema
    return found


@cache
def _registry() -> referencing.Registry:
    registry = referencing.Registry()
    for uri, schema in _schemas().items():
        registry = registry.with_resource(uri, referencing.Resource.from_contents(schema))
    return registry


@cache
def _fast_validator(name: str):
    """The same schema compiled by jsonschema-rs: about 1 us per request instead of 60-90 us
    for the pure-Python validator, which is kept to describe what is wrong."""
    schemas = _schemas()
    registry = jsonschema_rs.Registry(list(schemas.items()))
    return jsonschema_rs.validator_for(
        schemas[f"urn:leg-cramp-cds:schema:{name}"], registry=registry, validate_formats=True
    )


@cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    """A compiled validator for one of our schemas (``card``, ``cds-response``, ...)."""
    schema = _registry().get_or_retrieve(f"urn:leg-cramp-cds:schema:{name}").value.contents
    return jsonschema.Draft202012Validator(
        schema, registry=_registry(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def _describe(error: jsonschema.ValidationError) -> str:
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "a member"
        return f"{path}: required field '{missing}' is missing"
    if error.validator == "dependentRequired":
        return (
            f"{path}: {error.message.split(' is a dependency')[0].strip()} requires another field"
        )
    if error.validator == "type":
        return f"{path}: must be of type {error.validator_value}"
    if error.validator in {"enum", "const"}:
        return f"{path}: value is not allowed here"
    return f"{path}: violates '{error.validator}'"


def check(name: str, document: object, what: str) -> None:
    """Raise an InvalidRequest (400) naming the first field that breaks schema ``name``."""
    try:
        if _fast_validator(name).is_valid(document):  # the common case
            return
    except ValueError:  # jsonschema-rs gives up on values nested too deeply to convert
        raise InvalidRequest(f"Invalid {what}: nested too deeply") from None
    try:
        error = jsonschema.exceptions.best_match(validator(name).iter_errors(document))
    except RecursionError:  # its messages repr() the value: too deeply nested to print
        error = None
    if error is not None:
        raise InvalidRequest(f"Invalid {what}: {_describe(error)}")
    # jsonschema-rs is stricter in one place: a pattern's "$" does not match before a
    # trailing newline (as in JSON Schema's ECMA-262 dialect; Python's re does). Name it.
    try:
        fast_error = next(_fast_validator(name).iter_errors(document))
    except (ValueError, StopIteration):
        raise InvalidRequest(f"Invalid {what}: nested too deeply") from None
    path = "$" + "".join(
        f"[{p}]" if isinstance(p, int) else f".{p}" for p in fast_error.instance_path
    )
    keyword = type(fast_error.kind).__name__
    raise InvalidRequest(f"Invalid {what}: {path}: violates '{keyword[:1].lower() + keyword[1:]}'")


def discovery(services: list[Service], templates: dict[str, str], routes: list[str]) -> dict:
    """The discovery document: one entry per declared service, its prefetch templates
    (``templates``: every key's) and ``routes``, the titles of the loaded route files."""
    return {
        "services": [
            {
                "hook": service.hook,
                "id": service.id,
                "title": service.title,
                "description": service.description.replace("{routes}", ", ".join(routes)),
                "usageRequirements": service.usage,
                "version": SPEC_VERSION,
                "prefetch": {name: templates[name] for name, _required in service.prefetch},
            }
            for service in services
        ]
    }
