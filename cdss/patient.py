"""Validate a patient document and flatten it into the one fact the engine sees.

Validation runs a compiled validator (fastjsonschema) on every document; only a document
that fails is re-checked with jsonschema, whose error tree gives the JSON path, what was
expected and what was found. Flattening gives every field an explicit value ("unknown"
for absent or null), because durable-rules misbehaves on missing nested fields.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Mapping
from typing import Any, Callable

from .errors import PatientDataError, describe_value
from .fields import UNKNOWN, Field, patient_fields
from .resources import schema

TRISTATE_VALUES = {True: "true", False: "false", None: UNKNOWN}

_lock = threading.Lock()
_fast_validator: Callable[[Any], Any] | None = None


def _fast() -> Callable[[Any], Any]:
    global _fast_validator
    if _fast_validator is None:
        with _lock:
            if _fast_validator is None:
                import fastjsonschema

                _fast_validator = fastjsonschema.compile(schema("patient"))
    return _fast_validator


def json_path(parts: Any) -> str:
    """Render a jsonschema path deque as `$.a.b[0]`."""
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validate_patient(patient: Any) -> dict[str, Any]:
    """Return the document as a plain dict, or raise PatientDataError naming the first problem."""
    if isinstance(patient, Mapping) and not isinstance(patient, dict):
        patient = dict(patient)
    try:
        _fast()(patient)
        return patient  # type: ignore[no-any-return]
    except RecursionError:
        raise PatientDataError("$", "a patient document (at most 4 levels deep)", "nesting too deep") from None
    except Exception:  # fastjsonschema.JsonSchemaException: explain it precisely below
        pass
    raise explain_invalid(patient)


def explain_invalid(patient: Any) -> PatientDataError:
    """The most useful PatientDataError for a document known to be invalid."""
    if not isinstance(patient, dict):
        return PatientDataError("$", "a JSON object (one patient)", describe_value(patient))
    unknown = _first_unknown_key(patient, schema("patient"), "$")
    if unknown is not None:
        return unknown
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema("patient"))
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(patient))
    except RecursionError:
        return PatientDataError("$", "a patient document (at most 4 levels deep)", "nesting too deep")
    if error is None:  # the fast validator and jsonschema disagree: report rather than pass it on
        return PatientDataError("$", "a valid patient document", "a document the validators disagree on")
    path = json_path(error.absolute_path)
    return PatientDataError(path, _expected(error), describe_value(error.instance))


def _first_unknown_key(node: Any, node_schema: dict[str, Any], path: str) -> PatientDataError | None:
    """Find a misspelled or unknown key first: it is the most common mistake and the most dangerous."""
    if not isinstance(node, dict):
        return None
    defs = schema("patient").get("$defs", {})
    properties = node_schema.get("properties", {})
    for key, value in node.items():
        if not isinstance(key, str) or key not in properties:
            near = difflib.get_close_matches(str(key), list(properties), n=1, cutoff=0.6)
            hint = f"did you mean '{near[0]}'?" if near else None
            known = ", ".join(properties) if properties else "none"
            return PatientDataError(f"{path}.{key}", f"one of the known keys ({known})", "an unknown key", hint)
        sub = properties[key]
        if "$ref" in sub:
            sub = defs[sub["$ref"].rsplit("/", 1)[-1]]
        found = _first_unknown_key(value, sub, f"{path}.{key}")
        if found is not None:
            return found
    return None


def _expected(error: Any) -> str:
    keyword = error.validator
    value = error.validator_value
    if keyword == "type":
        types = [value] if isinstance(value, str) else list(value)
        words = {"boolean": "true or false", "null": "null (unknown)", "integer": "a whole number",
                 "object": "an object", "string": "a string"}
        return " or ".join(words.get(t, t) for t in types)
    if keyword == "enum":
        return "one of " + ", ".join("null" if v is None else repr(v) for v in value)
    if keyword == "maximum":
        return f"a number at most {value}"
    if keyword == "minimum":
        return f"a number at least {value}"
    if keyword == "maxLength":
        return f"a string of at most {value} characters"
    return error.message


def flatten(patient: Mapping[str, Any], fields: Mapping[str, Field] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The flat fact for a *validated* document, and the dotted paths of its unknown fields.

    Tri-state answers become "true"/"false"/"unknown"; enums their value or "unknown";
    integers their value plus a `<key>__known` flag, so comparisons on an unknown number
    are false by construction.
    """
    fact: dict[str, Any] = {}
    unknown: list[str] = []
    for field in (fields or patient_fields()).values():
        value: Any = patient
        for part in field.path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if field.kind == "tristate":
            fact[field.key] = TRISTATE_VALUES[value]
        elif field.kind == "enum":
            fact[field.key] = UNKNOWN if value is None else value
        else:
            fact[field.key] = 0 if value is None else int(value)
            fact[field.key + "__known"] = "false" if value is None else "true"
        if value is None:
            unknown.append(field.path)
    return fact, unknown
