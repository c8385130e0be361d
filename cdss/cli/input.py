"""Reading patient documents for the command line: strict JSON, hostile input, one-line errors.

Everything here turns bad bytes into an `InputProblem` (JSON path, expected, found, message)
instead of a crash: malformed JSON (with line and column), NaN / Infinity / numbers that
overflow to infinity, duplicate keys, non-UTF-8 bytes, empty input, absurd nesting, oversized
documents. Messages name where the problem is and, at most, a short rendering of the value
found; they never echo the document itself (it is patient data).
"""

from __future__ import annotations

import json
import math
from typing import Any, BinaryIO

MAX_DOCUMENT_BYTES = 1024 * 1024
"""A patient document is a few hundred bytes; anything over 1 MiB is the wrong file (or an attack)."""


class InputProblem(Exception):
    """One input that cannot be evaluated, described for a person and for a script."""

    def __init__(self, path: str, expected: str, found: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.expected = expected
        self.found = found
        self.message = message
        self.hint = hint

    def record(self) -> dict[str, Any]:
        """The `error` object of an error record (JSON Lines output)."""
        out = {"path": self.path, "expected": self.expected, "found": self.found, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        return out


def _problem(path: str, expected: str, found: str, hint: str | None = None, message: str | None = None) -> InputProblem:
    if message is None:
        message = f"{path}: expected {expected}, found {found}" + (f" ({hint})" if hint else "")
    return InputProblem(path, expected, found, message, hint)


def _not_json(found: str) -> InputProblem:
    return _problem("$", "valid JSON", found, message=f"not valid JSON: {found}")


class _Rejected(ValueError):
    """Raised from inside json.loads hooks."""


def _reject_constant(name: str) -> Any:
    raise _Rejected(f"{name} is not allowed (use null for an unknown value)")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Rejected(f"the number {text[:20]}{'...' if len(text) > 20 else ''} is too large")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            shown = key if len(key) <= 40 else key[:37] + "..."
            raise _Rejected(f"duplicate key '{shown}' in one object (the second would silently replace the first)")
        out[key] = value
    return out


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def decode(raw: bytes, *, where: str = "") -> str:
    """UTF-8 text of a document (a leading byte-order mark is dropped), or InputProblem."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        at = f"line {line}, column {column}" if not where else f"column {column}"
        found = f"byte 0x{raw[error.start]:02x} at {at}"
        raise _problem("$", "UTF-8 text", found, "save the document as UTF-8",
                       f"not UTF-8 text: {found}; save the document as UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text


def parse_document(raw: bytes, *, single_line: bool = False) -> Any:
    """Parse one JSON document strictly; raise InputProblem for anything a person must fix.

    `single_line`: the document is one JSON Lines record, so positions are columns only.
    """
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise _problem("$", f"a patient document (at most {MAX_DOCUMENT_BYTES // 1024} KiB)",
                       f"more than {MAX_DOCUMENT_BYTES:,} bytes", "is this the right file?",
                       f"input is larger than {MAX_DOCUMENT_BYTES // 1024} KiB; a patient document is far smaller: "
                       "is this the right file?")
    text = decode(raw, where="line" if single_line else "")
    if not text.strip():
        raise _problem("$", "a JSON object (one patient document)", "empty input",
                       message="empty input: expected a JSON object (one patient document)")
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_parse_float,
                          object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as error:
        line, column = error.lineno, error.colno
        at = f"column {column}" if single_line else f"line {line}, column {column}"
        raise _not_json(f"{error.msg} at {at}") from None
    except _Rejected as error:
        raise _not_json(str(error)) from None
    except RecursionError:
        raise _problem("$", "a patient document (at most 4 levels deep)", "JSON nested too deeply to read",
                       message="JSON nested too deeply to read: a patient document is at most 4 levels deep") from None
    except ValueError as error:  # an integer with more than sys.get_int_max_str_digits() digits
        found = "a number with too many digits" if "digits" in str(error) else str(error)[:100]
        raise _not_json(found) from None


def patient_problem(error: Any, document: Any) -> InputProblem:
    """A PatientDataError as an InputProblem (with a hint when a list of patients was given)."""
    hint = error.hint
    if error.path == "$" and isinstance(document, list):
        hint = "one patient per document: give one FILE per patient, or use --jsonl"
    return _problem(error.path, error.expected, error.found, hint)


def check_patient(document: Any) -> dict[str, Any]:
    """Validate against the patient schema (no engine); PatientDataError becomes InputProblem."""
    from ..errors import PatientDataError
    from ..patient import validate_patient

    try:
        return validate_patient(document)
    except PatientDataError as error:
        raise patient_problem(error, document) from None


def read_limited(stream: BinaryIO) -> bytes:
    """Read a whole document, refusing (without reading it all) one over the size cap."""
    data = stream.read(MAX_DOCUMENT_BYTES + 1)
    return data if data is not None else b""


def iter_lines(stream: BinaryIO) -> Any:
    """(line number, bytes) for every line of a JSON Lines stream, one line in memory at a time.

    A line longer than the document cap is reported as such (its content is skipped
    chunk by chunk, never held whole).
    """
    number = 0
    while True:
        line = stream.readline(MAX_DOCUMENT_BYTES + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_DOCUMENT_BYTES and not line.endswith(b"\n"):
            while True:  # skip the rest of the oversized line
                rest = stream.readline(MAX_DOCUMENT_BYTES)
                if not rest or rest.endswith(b"\n"):
                    break
            yield number, None
            continue
        yield number, line


def oversized_line() -> InputProblem:
    return _problem("$", f"a patient document (at most {MAX_DOCUMENT_BYTES // 1024} KiB per line)",
                    "a longer line", "is this JSON Lines, one patient per line?")


def with_fhir_options(document: Any, rules: Any, allow_in_progress: bool) -> Any:
    """The document to evaluate. Only with --allow-in-progress is a FHIR resource converted here
    (RuleSet.evaluate recognises a QuestionnaireResponse itself, refusing unfinished ones); a
    plain document is returned as is, without importing cdss.fhir."""
    if allow_in_progress and isinstance(document, dict) and "resourceType" in document:
        from ..fhir.response import as_patient_document

        return as_patient_document(document, rules, allow_in_progress=True)
    return document
