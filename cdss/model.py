"""The loaded, checked form of a rule set: immutable records the compiler and reports read."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .conditions import Condition

PLACEHOLDER = re.compile(r"\{\{\s*params\.([A-Za-z0-9_]+)\s*\}\}")
"""`{{ params.NAME }}` in a rule's text: the value of a parameter."""

GATED_CATEGORIES = ("exercise", "progression")
"""Categories whose cards and plan outputs are shown only when red-flag screening is negative;
the loader allows `exercise` and `plan` outputs in these categories only."""

def resolve_bound(value: Any, params: Mapping[str, Any]) -> Any:
    """An exercise dose bound as written (a number or `{param: NAME}`) under the parameters in force."""
    return params[value["param"]] if isinstance(value, dict) else value


URGENCY_ORDER = ("none", "self-care", "see-professional", "emergency")
INDICATOR_ORDER = ("critical", "warning", "info")


@dataclass(frozen=True)
class Origin:
    """Where a rule, parameter or pack was written."""

    file: str
    line: int | None


@dataclass(frozen=True)
class Parameter:
    """A named value rules reference; `origin` says whether the source states it or local policy chose it."""

    name: str
    type: str
    default: Any
    description: str
    origin: str  # "source" | "policy"
    unit: str | None
    minimum: float | None
    maximum: float | None
    enum: tuple[Any, ...] | None
    guidance: tuple[str, ...]
    pack: str
    where: Origin
    at_most: str | None = None  # name of a parameter this one may not exceed

    @property
    def overridable(self) -> bool:
        """Only local policy may be changed by a user; what the source states is fixed."""
        return self.origin == "policy"


@dataclass(frozen=True)
class Rationale:
    guidance: str
    text: str


@dataclass(frozen=True)
class Question:
    """A field a rule declares it needs: when unknown and some answer would make the rule fire, it is asked."""

    field: str  # dotted patient path
    reason: str  # why the answer matters, in plain words for the person or clinician


@dataclass(frozen=True)
class Conflict:
    """A rule-set-level contradiction between answers: when `when` holds, `fields` are read as unknown."""

    id: str
    fields: tuple[str, ...]
    message: str
    when: Condition
    when_data: Any
    where: Origin


@dataclass(frozen=True)
class Scope:
    """What the screen covers and, above all, what it does not: stated in every result."""

    statement: str
    not_covered: tuple[str, ...]


NO_SCOPE = Scope("This rule set declares no scope statement: do not read its result as a full assessment.", ())


@dataclass(frozen=True)
class Rule:
    """One rule: metadata, provenance, condition and outputs (outputs stay as plain data)."""

    id: str
    title: str
    status: str
    category: str
    indicator: str
    urgency: str
    priority: int
    guidance: tuple[str, ...]
    section: str
    quote: str
    rationale: tuple[Rationale, ...]
    when: Condition
    when_data: Any  # the `when` tree as written, for reports
    then: dict[str, Any]
    pack: str
    where: Origin
    # clinical coherence (issue 17): how this rule relates to others, and what to ask when it cannot tell
    supersedes: tuple[str, ...] = ()  # rule ids whose cards, referrals and plan outputs give way when this one fires
    questions: tuple[Question, ...] = ()  # fields whose unknown answer could make this rule fire

    @property
    def parameters(self) -> tuple[str, ...]:
        """Every parameter the rule uses (condition, texts, exercise dose), in order of first use."""
        from .conditions import ParamRef, leaves

        names = [leaf.operand.name for leaf in leaves(self.when) if isinstance(leaf.operand, ParamRef)]

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if set(node) == {"param"} and isinstance(node["param"], str):
                    names.append(node["param"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)
            elif isinstance(node, str):
                names.extend(PLACEHOLDER.findall(node))

        walk(self.then)
        return tuple(dict.fromkeys(names))

    @property
    def gated_by_screening(self) -> bool:
        """Exercise advice is only shown when red-flag screening is negative."""
        return self.category in GATED_CATEGORIES


@dataclass(frozen=True)
class Pack:
    id: str
    title: str
    version: str
    status: str
    metadata: dict[str, Any]
    where: Origin


@dataclass(frozen=True)
class GuidanceItem:
    id: str
    kind: str  # "rule" | "context"
    text: str
    theme: str


@dataclass(frozen=True)
class RuleSetInfo:
    """What a result is stamped with, so any result can be traced to the exact rules."""

    id: str
    title: str
    version: str
    digest: str
    source_title: str
