"""The JSON shapes the engine reads, named once for the type checker.

A FHIR resource stays as decoded: a plain dict, or a ``fhir_json.FhirNode`` struct that
answers ``get``, ``[]``, ``in`` and ``items`` the same way (the engine never imports the
serving layer, so both are typed as the dict they read like). A rule file entry is the YAML
mapping as written, already valid against its JSON Schema.
"""

from typing import Any

Resource = dict[str, Any]  # a FHIR resource (or a FhirNode, read the same way)
Spec = dict[str, Any]  # a rule file entry, as written
