"""The catalogue of patient fields rules may read, derived from schemas/patient.schema.json.

Deriving it from the schema keeps one source of truth: a field added to the contract is
readable by rules, a field removed makes every rule that reads it fail to load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from .resources import schema

FieldKind = Literal["tristate", "enum", "integer"]

UNKNOWN = "unknown"
"""The value the engine sees for an absent or null answer: a value of its own, never "no"."""


@dataclass(frozen=True)
class Field:
    """One readable leaf of the patient document."""

    path: str  # dotted, e.g. "red_flags.significant_leg_weakness"
    kind: FieldKind
    values: tuple[str, ...] = ()  # allowed values of an enum field (without null)
    minimum: int | None = None
    maximum: int | None = None
    description: str = ""

    @property
    def key(self) -> str:
        """The name of this field in the flat fact the engine sees."""
        return self.path.replace(".", "__")

    @property
    def label(self) -> str:
        """The field in plain words for people (its schema description without guidance ids), never its path."""
        text = _GUIDANCE_REFS.sub("", self.description).strip().rstrip(".").strip()
        return text or self.path.rsplit(".", 1)[-1].replace("_", " ").capitalize()

    @property
    def domain(self) -> tuple[Any, ...]:
        """Every value the field can take in the flat fact (finite kinds only)."""
        if self.kind == "tristate":
            return ("true", "false", UNKNOWN)
        if self.kind == "enum":
            return (*self.values, UNKNOWN)
        raise ValueError(f"{self.path} has no finite domain")


_GUIDANCE_REFS = re.compile(r"\s*\((?:G-[A-Z]+-\d+(?:,\s*)?)+\)")


def field_label(path: str) -> str:
    """The plain words for a field path (as `Field.label`); an unknown path is shown as its last part."""
    fld = patient_fields().get(path)
    return fld.label if fld is not None else path.rsplit(".", 1)[-1].replace("_", " ").capitalize()


def _walk(node: dict[str, Any], defs: dict[str, Any], prefix: str, out: dict[str, Field]) -> None:
    for name, prop in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        description = prop.get("description", "")
        if "$ref" in prop:
            target = defs[prop["$ref"].rsplit("/", 1)[-1]]
            prop = {**target, **{k: v for k, v in prop.items() if k != "$ref"}}
        types = prop.get("type")
        types = [types] if isinstance(types, str) else (types or [])
        if "properties" in prop:
            _walk(prop, defs, path + ".", out)
        elif "enum" in prop:
            values = tuple(v for v in prop["enum"] if v is not None)
            out[path] = Field(path, "enum", values=values, description=description)
        elif "boolean" in types:
            out[path] = Field(path, "tristate", description=description)
        elif "integer" in types:
            out[path] = Field(path, "integer", minimum=prop.get("minimum"), maximum=prop.get("maximum"),
                              description=description)
        # strings (patient_id) are opaque: no rule may read them


@cache
def patient_fields() -> dict[str, Field]:
    """Every field a rule may read, by dotted path, in schema order."""
    root = schema("patient")
    out: dict[str, Field] = {}
    _walk(root, root.get("$defs", {}), "", out)
    return out
