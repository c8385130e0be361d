"""The one-pass validator+flattener on the hot path accepts exactly what the schema accepts.

`cdss.patient.prepare` runs code generated from the patient schema; anything it rejects is
re-checked by the full path, so the dangerous direction is accepting a document that
JSON Schema rejects. These properties compare it with jsonschema itself.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cdss.errors import PatientDataError
from cdss.fields import patient_fields
from cdss.patient import answers_text, compile_checked_flattener, flatten, prepare, validate_patient
from cdss.resources import schema
from tests.helpers import documented_answers

# the generated one-pass function itself (prepare() would hide a failure to compile or a
# wrong rejection behind its fallback to the two-pass path)
CHECKED = compile_checked_flattener(schema("patient"), patient_fields())
from tests.strategies import NearValid, invalid_values, is_valid_patient, near_valid_patients, valid_patients


def _accepted(doc: Any) -> bool:
    try:
        prepare(doc)
    except PatientDataError:
        return False
    return True


@given(near_valid_patients())
def test_one_pass_accepts_a_near_valid_document_only_if_json_schema_does(case: NearValid) -> None:
    assert isinstance(case.doc, dict) or case.mutation == "top-level-array"
    assert _accepted(case.doc) == is_valid_patient(case.doc)
    if isinstance(case.doc, dict):
        assert (CHECKED(case.doc) is not None) == is_valid_patient(case.doc)


@given(st.one_of(invalid_values(), invalid_values(json_only=False)))
def test_one_pass_never_accepts_an_invalid_value(value: Any) -> None:
    assert _accepted(value) == is_valid_patient(value)


@given(valid_patients())
def test_one_pass_flattens_exactly_like_the_two_pass_path(doc: dict) -> None:
    assert CHECKED(doc) is not None, "the generated validator rejects a valid document"
    _, fact, unknown, encoded, answers = prepare(doc)
    assert (fact, unknown) == flatten(validate_patient(doc))
    import json

    assert json.loads(encoded + "}") == dict(fact, id="patient", kind="patient")
    # the answers the card UUIDs hash: every value in field order (an integer's flag after it), as text
    assert answers == documented_answers(fact) == answers_text(fact)
