"""Optional validation of cdss's FHIR resources with `fhir.resources` (R4B models, extra `cdss[fhir]`).

Used at the edges only (tests, `cdss fhir questionnaire --validate`), never on the evaluation path.
"""

from __future__ import annotations

import importlib
from typing import Any

MODULES = {
    "Bundle": "bundle", "CarePlan": "careplan", "GuidanceResponse": "guidanceresponse",
    "Questionnaire": "questionnaire", "QuestionnaireResponse": "questionnaireresponse",
    "RequestGroup": "requestgroup", "ServiceRequest": "servicerequest",
}


class FhirLibraryMissing(RuntimeError):
    """fhir.resources is not installed."""


def validate_resource(resource: dict[str, Any]) -> None:
    """Parse `resource` with its fhir.resources R4B model (a Bundle's entries too); raise ValueError
    (pydantic's ValidationError) naming the element if it is not valid FHIR."""
    kind = resource.get("resourceType")
    if kind not in MODULES:
        raise ValueError(f"cdss does not validate resourceType {kind!r}")
    try:
        module = importlib.import_module(f"fhir.resources.R4B.{MODULES[kind]}")
    except ImportError as error:
        raise FhirLibraryMissing("validation needs fhir.resources: pip install 'cdss[fhir]'") from error
    getattr(module, kind).model_validate(resource)
    for entry in resource.get("entry", []) if kind == "Bundle" else []:
        validate_resource(entry["resource"])
