"""The CDS services this server offers, each declared once.

Discovery, the OpenAPI document, request validation, the HTTP routes and the command line
are all built from ``SERVICES``: adding a service is one ``Service`` entry here and its rule
files in ``cards/`` (README, "Extending"). A declaration holds no clinical content: which
rules a service runs is named (``rules``), and the rules themselves are data in ``cards/``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cds_service import SERVICE_ID
from cds_service.errors import InvalidRequest, NotFound

# The patient's chart, as every service reads it: prefetch key -> required. A required key
# that is neither prefetched nor fetchable from ``fhirServer`` answers 412; an optional one
# only sharpens the advice, so the call goes on without it (and the log says so).
CHART: dict[str, bool] = {
    "patient": True,
    "conditions": True,
    "observations": True,
    "procedures": True,
    "medications": True,
    "medicationstatements": False,
    "servicerequests": False,
}
# The JSON Schema (cds_service/schemas) of each hook's request, by hook.
REQUEST_SCHEMAS = {
    "patient-view": "hook-request",
    "order-sign": "order-sign-request",
    "order-select": "order-select-request",
}
ROUTES = "routes"  # the route files, cards/*.yaml: advice from the chart alone
ORDERS = "orders"  # order checks (``rule_files``): the draft orders against that advice
USAGE = (
    "Send the prefetch keys listed here or give `fhirServer` with a `fhirAuthorization` "
    "token that can read Patient, Condition, Observation, Procedure, MedicationRequest, "
    "MedicationStatement, Medication and ServiceRequest for the patient. The patient must "
    "have an active leg-cramp Condition (SNOMED CT or ICD-10-CM) for any card to appear."
)


@dataclass(frozen=True)
class Service:
    """One CDS service: what discovery shows, what its requests must hold, what it runs."""

    id: str
    hook: str
    title: str
    description: str  # "{routes}" is replaced by the titles of the loaded route files
    context: tuple[str, ...]  # the context fields it reads (the schema requires them)
    rules: str  # ROUTES or ORDERS
    # For ORDERS: its order-check files, a glob under cards/ (rules-orders.json); services
    # naming the same files share them, each running the checks that list its hook.
    rule_files: str = "orders/*.yaml"
    prefetch: tuple[tuple[str, bool], ...] = tuple(CHART.items())  # key, required
    usage: str = USAGE
    # Its cards are recorded and suppressed under their route alone, as the patient-view
    # cards were before services were declared (stored rows keep their meaning); any other
    # service's under "service-id:route", so feedback and suppression stay per service.
    bare_routes: bool = False

    @property
    def schema(self) -> str:
        return REQUEST_SCHEMAS[self.hook]

    @property
    def required_keys(self) -> frozenset[str]:
        return frozenset(name for name, required in self.prefetch if required)


ORDER_DESCRIPTION = (
    "For a patient with **leg cramps** on the problem list, checks the {what} against the "
    "advice the chart supports: a referral to a specialty the evidence does not support, a "
    "routine referral while an urgent red flag is on record, a duplicate of an open "
    "referral, a cramp-linked medicine prescribed while the patient's own results make it "
    "matter. Silent when the orders already fit."
)

SERVICES: tuple[Service, ...] = (
    Service(
        id=SERVICE_ID,
        hook="patient-view",
        title="Leg cramp referral guidance",
        description=(
            "For a patient with **leg cramps** on the problem list, suggests who should see "
            "them next: {routes}. Each card shows the evidence (value, unit, date, code) and "
            "offers a one-click referral or lab order."
        ),
        context=("userId", "patientId"),
        rules=ROUTES,
        bare_routes=True,
    ),
    Service(
        id="leg-cramp-order-sign",
        hook="order-sign",
        title="Leg cramp order check (signing)",
        description=ORDER_DESCRIPTION.format(what="orders being signed"),
        context=("userId", "patientId", "draftOrders"),
        rules=ORDERS,
    ),
    Service(
        id="leg-cramp-order-select",
        hook="order-select",
        title="Leg cramp order check (selecting)",
        description=ORDER_DESCRIPTION.format(what="orders just selected"),
        context=("userId", "patientId", "selections", "draftOrders"),
        rules=ORDERS,
    ),
)


def find(service_id: str, services: tuple[Service, ...]) -> Service:
    """The declaration of ``service_id``; NotFound (404) for an id not served."""
    for service in services:
        if service.id == service_id:
            return service
    raise NotFound("Unknown CDS service id.")


def for_hook(hook: object, services: tuple[Service, ...]) -> Service:
    """The first service answering ``hook`` (the command line's choice for a request file);
    for a request naming no hook, the first declared, whose schema then says what is wrong."""
    if not isinstance(hook, str):
        return services[0]
    for service in services:
        if service.hook == hook:
            return service
    answered = ", ".join(sorted({s.hook for s in services}))
    raise InvalidRequest(f"Invalid hook request: $.hook: no service answers it ({answered})")


def check_hook(service: Service, request: object) -> None:
    """A request for another hook is refused, naming the field: 400 before any other check."""
    if isinstance(request, dict) and "hook" in request and request["hook"] != service.hook:
        raise InvalidRequest(
            f"Invalid hook request: $.hook: service {service.id} answers '{service.hook}'"
        )
