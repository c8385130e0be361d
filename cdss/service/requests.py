"""Reading CDS Hooks requests strictly: JSON without NaN or duplicate keys, each field checked, every
problem a `RequestProblem` (status, code, message, and the JSON path / expected / found of the CLI)."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi.responses import JSONResponse

from ..errors import PatientDataError, describe_value


class RequestProblem(Exception):
    """An HTTP error answer: status, a machine code, a message for a person, and optional fields."""

    def __init__(self, status: int, code: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = {k: v for k, v in fields.items() if v is not None}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if self.status == 401 else None
        return JSONResponse({"error": self.code, "message": self.message, **self.fields}, status_code=self.status,
                            headers=headers)


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(f"duplicate key '{key[:40]}' in one object (the second would silently replace the first)")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise _Duplicate(f"{name} is not allowed (use null for an unknown value)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Duplicate("a number too large to represent")
    return value


def parse_json(raw: bytes) -> Any:
    """Strict JSON (no NaN, no duplicate keys), like the CLI; RequestProblem 400 with line and column."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestProblem(400, "invalid-json", "the request body is not UTF-8 text", path="$",
                             expected="UTF-8 JSON", found="bytes that are not UTF-8") from None
    if not text.strip():
        raise RequestProblem(400, "invalid-json", "empty request body: expected a JSON object", path="$",
                             expected="a JSON object", found="empty input")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as error:
        found = f"{error.msg} at line {error.lineno}, column {error.colno}"
        raise RequestProblem(400, "invalid-json", f"not valid JSON: {found}", path="$", expected="valid JSON",
                             found=found) from None
    except (_Duplicate, ValueError, RecursionError) as error:
        found = str(error)[:200] if not isinstance(error, RecursionError) else "JSON nested too deeply"
        raise RequestProblem(400, "invalid-json", f"not valid JSON: {found}", path="$", expected="valid JSON",
                             found=found) from None


def kind(value: Any) -> str:
    """A short, type-revealing rendering of a value (the CLI's), never a whole document."""
    return describe_value(value)


def field(document: Any, path: str, key: str, expected: str, check: Callable[[Any], bool], *,
           required: bool = True) -> Any:
    where = f"{path}.{key}"
    if key not in document:
        if required:
            raise RequestProblem(400, "invalid-request", f"{where}: expected {expected}, found nothing (it is required)",
                                 path=where, expected=expected, found="missing")
        return None
    value = document[key]
    if not check(value):
        found = kind(value)
        raise RequestProblem(400, "invalid-request", f"{where}: expected {expected}, found {found}", path=where,
                             expected=expected, found=found)
    return value


def is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def patient_problem(error: PatientDataError, key: str) -> RequestProblem:
    """The CLI's path / expected / found, for the document under prefetch.<key>."""
    return RequestProblem(400, "invalid-patient", f"prefetch.{key}: {error}", document=f"$.prefetch.{key}",
                          path=error.path, expected=error.expected, found=error.found, hint=error.hint)


def is_timestamp(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        datetime.fromisoformat(value)  # Python 3.11 reads a trailing Z
    except ValueError:
        return False
    return True


def feedback_items(body: Any, keep_comments: bool) -> list[dict[str, Any]]:
    """Check a feedback body (CDS Hooks 2.0 "Feedback") and keep only what the store may hold."""
    if not isinstance(body, dict):
        raise RequestProblem(400, "invalid-request", f"$: expected an object with a feedback array, found {kind(body)}",
                             path="$", expected="an object", found=kind(body))
    entries = field(body, "$", "feedback", "a non-empty array", lambda v: isinstance(v, list) and bool(v))
    items = []
    for index, entry in enumerate(entries):
        path = f"$.feedback[{index}]"
        if not isinstance(entry, dict):
            raise RequestProblem(400, "invalid-request", f"{path}: expected an object, found {kind(entry)}", path=path,
                                 expected="an object", found=kind(entry))
        item: dict[str, Any] = {
            "card": field(entry, path, "card", "the card's uuid", is_uuid),
            "outcome": field(entry, path, "outcome", "'accepted' or 'overridden'", lambda v: v in ("accepted", "overridden")),
            "outcomeTimestamp": field(entry, path, "outcomeTimestamp", "an ISO 8601 timestamp", is_timestamp),
        }
        override = field(entry, path, "overrideReason", "an object", lambda v: isinstance(v, dict), required=False)
        if override is not None:
            if item["outcome"] != "overridden":
                raise RequestProblem(400, "invalid-request", f"{path}.overrideReason: only an overridden card has one",
                                     path=f"{path}.overrideReason", expected="no overrideReason", found="an object")
            reason = field(override, f"{path}.overrideReason", "reason", "a Coding object",
                            lambda v: isinstance(v, dict), required=False)
            if reason is not None:
                where = f"{path}.overrideReason.reason"
                item["reason_code"] = field(reason, where, "code", "a non-empty string", nonempty_str)
                item["reason_system"] = field(reason, where, "system", "a non-empty string", nonempty_str, required=False)
                display = field(reason, where, "display", "a string", lambda v: isinstance(v, str), required=False)
                item["reason_display"] = display[:200] if display else None
            comment = field(override, f"{path}.overrideReason", "userComment", "a string", lambda v: isinstance(v, str),
                             required=False)
            if comment and keep_comments:
                item["user_comment"] = comment[:2000]
        items.append(item)
    return items
