"""The one error hierarchy of cdss: every failure a caller can act on derives from CdssError."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


class CdssError(Exception):
    """Base of every error cdss raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One problem in a rule file, located well enough for an author to fix it."""

    file: str
    line: int | None
    column: int | None
    rule_id: str | None
    message: str
    severity: Literal["error", "warning"] = "error"

    def format(self) -> str:
        """`file:line:col: rule-id: message`, the form editors and CI logs understand."""
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        rule = self.rule_id or "-"
        prefix = "" if self.severity == "error" else "warning: "
        return f"{where}: {rule}: {prefix}{self.message}"


class RuleFileError(CdssError):
    """A rule file (or rule set) is invalid; carries every problem found, errors first."""

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("RuleFileError needs at least one problem")
        self.problems = list(problems)
        first = self.problems[0]
        self.file = first.file
        self.line = first.line
        self.column = first.column
        self.rule_id = first.rule_id
        more = len(self.problems) - 1
        text = first.format() + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")
        super().__init__(text)


class PatientDataError(CdssError):
    """A patient document does not match schemas/patient.schema.json."""

    def __init__(self, path: str, expected: str, found: str, hint: str | None = None) -> None:
        self.path = path
        self.expected = expected
        self.found = found
        self.hint = hint
        text = f"{path}: expected {expected}, found {found}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class ParameterError(CdssError):
    """A parameter override names an undeclared or non-overridable parameter, or a bad value."""


class EngineError(CdssError):
    """The rule engine failed; this is a bug in cdss or durable-rules, not in the caller's input."""


def describe_value(value: Any) -> str:
    """A short, type-revealing rendering of a value for error messages (never a whole document)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value.bit_length() > 64:
        return f"a number of about {int(value.bit_length() * 0.30103) + 1:,} digits"  # repr() may refuse it
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        # a short word (a misspelled enum value, "yes") helps; anything longer may be patient text: length only
        if len(value) <= 20 and value.replace("-", "").replace("_", "").isalnum():
            return f"string {value!r}"
        return f"a string of {len(value):,} characters"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__


def printable(text: str) -> str:
    """Text safe to show anywhere: control characters (terminal escapes, NUL) and lone surrogates
    become backslash escapes, so a hostile value can neither drive a terminal nor break UTF-8 output."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for ch in text)
