"""FHIR R4 in and out: a Questionnaire generated from the patient schema, QuestionnaireResponse
as input, and the result as GuidanceResponse + RequestGroup / CarePlan / ServiceRequest.

Plain dicts in and out (the FHIR JSON form); no FHIR library is needed at run time.
`fhir.resources` (extra `cdss[fhir]`) is used only to validate at the edges (`validate.py`).

    from cdss.fhir import patient_from_questionnaire_response
    patient = patient_from_questionnaire_response(qr)           # strict; PatientDataError names the linkId
    rules.evaluate(qr)                                           # the same, recognised by resourceType
"""

from __future__ import annotations

from .guidance import guidance_bundle
from .questionnaire import questionnaire
from .response import (
    as_patient_document, patient_from_questionnaire_response, questionnaire_response_from_patient,
)

__all__ = [
    "as_patient_document", "guidance_bundle", "patient_from_questionnaire_response", "questionnaire",
    "questionnaire_response_from_patient",
]
