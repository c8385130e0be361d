"""The audit: a rulebook a clinician can review and sign off, and the static findings behind it.

`build_audit` gathers everything a reviewer needs as plain data (the `Audit` dataclass):
each rule in file order with its condition in plain English, its outputs, parameters,
guidance, rationale, source quote (checked verbatim against the source text when given),
location and the scenarios that exercise it; coverage of the guidance catalogue, of the
source's sections, of scenarios and of parameters; and `audit_findings`, the problems a
reviewer must see before signing. `rulebook` renders it as Markdown or as one
self-contained HTML page (see `cdss.audit.render`).

The rulebook carries the rule set's digest: a result's `rule_set.digest` equal to the
digest on a signed rulebook means the result came from exactly the rules signed off.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..coherence import review_status
from ..conditions import All, AnyOf, Condition, Leaf, Not, ParamRef, leaves, outcomes
from ..evidence import headings, section_of
from ..fields import Field, patient_fields
from ..loader import GUIDANCE, MANIFEST
from ..model import GuidanceItem, Origin, Pack, Parameter, Rule, resolve_bound
from ..resources import rules_dir, schemas_dir
from ..result import render
from ..scenarios import Scenario, mismatches
from ..yaml_source import YamlDocument, YamlProblem, load_yaml

if TYPE_CHECKING:
    from ..ruleset import RuleSet

FORMATS = ("markdown", "html")
SEVERITIES = ("problem", "warning", "note")
"""problem: must be fixed before sign-off; warning: fix or accept knowingly; note: confirm it is intended."""

QUOTE_FOUND, QUOTE_NOT_FOUND, QUOTE_NOT_CHECKED = "found", "not-found", "not-checked"


# ================================================================ data model


@dataclass(frozen=True)
class Finding:
    """One static finding, located so an author can go straight to it."""

    kind: str  # e.g. "quote-not-found", "unused-parameter", "exclusive-pair"
    severity: str  # problem | warning | note
    message: str
    file: str | None
    line: int | None
    rules: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        if self.file is None:
            return "-"
        return f"{self.file}:{self.line}" if self.line is not None else self.file


@dataclass(frozen=True)
class Clause:
    """A condition in plain English: `text` for people, `field` + `formal` for the exact test.

    `plain` joins them: "sudden loss of bladder or bowel control is reported
    (red_flags.sudden_bladder_or_bowel_control_loss is yes)". Composite clauses ("all of:",
    "any of:", "it is not the case that") have children instead of a field.
    """

    text: str
    field: str | None = None
    formal: str = ""
    children: tuple[Clause, ...] = ()

    @property
    def plain(self) -> str:
        return f"{self.text} ({self.field} {self.formal})" if self.field else self.text

    def lines(self, indent: int = 0) -> list[str]:
        """The clause tree as indented plain-text lines."""
        out = ["  " * indent + self.plain]
        for child in self.children:
            out.extend(child.lines(indent + 1))
        return out


@dataclass(frozen=True)
class Output:
    """One thing a rule produces (card, finding, referral, exercise, plan) as labelled texts."""

    kind: str
    items: tuple[tuple[str, str], ...]  # (label, text); the card "detail" is Markdown


@dataclass(frozen=True)
class ParamUse:
    name: str
    value: Any
    unit: str | None
    origin: str  # source | policy


@dataclass(frozen=True)
class ScenarioRef:
    name: str
    where: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class RuleEntry:
    """Everything the rulebook says about one rule."""

    rule: Rule
    where: str  # file:line of the rule
    condition: Clause
    outputs: tuple[Output, ...]
    parameters: tuple[ParamUse, ...]
    guidance: tuple[GuidanceItem, ...]
    quote_status: str  # found | not-found | not-checked
    quote_where: str  # file:line of the quote in the rule file
    quote_section: str | None  # the source section the quote was found under
    positive: tuple[ScenarioRef, ...]  # scenarios where it must fire
    negative: tuple[ScenarioRef, ...]  # scenarios where it must not fire

    @property
    def id(self) -> str:
        return self.rule.id

    @property
    def anchor(self) -> str:
        return anchor(self.rule.id)


@dataclass(frozen=True)
class PackEntry:
    pack: Pack
    where: str
    rules: tuple[RuleEntry, ...]


@dataclass(frozen=True)
class GuidanceRow:
    item: GuidanceItem
    where: str
    encoded_by: tuple[str, ...]  # rules naming it in `guidance`
    explained_by: tuple[str, ...]  # rules naming it in `rationale`
    parameters: tuple[str, ...]  # parameters naming it

    @property
    def covered(self) -> bool:
        """A rule row is covered when a rule encodes it; a context row when a rationale explains it."""
        return bool(self.encoded_by) if self.item.kind == "rule" else bool(self.explained_by or self.encoded_by)


@dataclass(frozen=True)
class SectionRow:
    heading: str
    in_source: bool | None  # None: no source given
    rules: tuple[str, ...]


@dataclass(frozen=True)
class ParameterRow:
    parameter: Parameter
    value: Any  # in force
    where: str
    used_by: tuple[str, ...]


@dataclass(frozen=True)
class ScenarioGap:
    rule: str
    positive: int
    negative: int


@dataclass(frozen=True)
class Audit:
    """The whole rulebook as data; `cdss.audit.render` turns it into Markdown or HTML."""

    rule_set_id: str
    title: str
    version: str
    digest: str
    description: str
    cdss_version: str
    source_title: str
    source_cited_files: tuple[str, ...]  # the source file names the packs cite
    source_file: str | None  # the source file given to the audit, or None
    source_headings: tuple[str, ...]
    scenarios_dir: str | None
    scenario_count: int
    parameter_values: dict[str, Any]
    packs: tuple[PackEntry, ...]
    guidance: tuple[GuidanceRow, ...]
    sections: tuple[SectionRow, ...]
    scenario_gaps: tuple[ScenarioGap, ...]
    parameters: tuple[ParameterRow, ...]
    findings: tuple[Finding, ...]
    # clinical coherence (issue 17): rule-set data every result carries
    scope: Any = None  # cdss.model.Scope
    conflicts: tuple[Any, ...] = ()  # cdss.model.Conflict
    review: dict[str, Any] | None = None  # {status, pending_packs}

    @property
    def source_given(self) -> bool:
        return self.source_file is not None

    @property
    def rules(self) -> tuple[RuleEntry, ...]:
        return tuple(entry for pack in self.packs for entry in pack.rules)

    def rule(self, rule_id: str) -> RuleEntry:
        for entry in self.rules:
            if entry.id == rule_id:
                return entry
        raise KeyError(rule_id)

    @property
    def counts(self) -> dict[str, int]:
        rules = self.rules
        return {
            "packs": len(self.packs),
            "rules": len(rules),
            "parameters": len(self.parameters),
            "guidance": len(self.guidance),
            "guidance_covered": sum(row.covered for row in self.guidance),
            "guidance_rule_rows": sum(row.item.kind == "rule" for row in self.guidance),
            "guidance_rule_rows_covered": sum(row.item.kind == "rule" and row.covered for row in self.guidance),
            "quotes_found": sum(e.quote_status == QUOTE_FOUND for e in rules),
            "quotes_not_found": sum(e.quote_status == QUOTE_NOT_FOUND for e in rules),
            "quotes_not_checked": sum(e.quote_status == QUOTE_NOT_CHECKED for e in rules),
            "scenarios": self.scenario_count,
            "rules_with_both_scenarios": sum(bool(e.positive and e.negative) for e in rules),
            "findings": len(self.findings),
            **{f"findings_{s}": sum(f.severity == s for f in self.findings) for s in SEVERITIES},
        }


def anchor(rule_id: str) -> str:
    """The HTML anchor of a rule in the rulebook: a result card's `rule` → `#rule-<id>`."""
    return f"rule-{rule_id}"


# ================================================================ entry points


def default_scenarios_dir(rules: RuleSet) -> Path | None:
    """`examples/scenarios` beside the rule set directory (as for the bundled rules), if it exists."""
    root = rules.loaded.root
    base = root.parent if root.is_dir() else root.parent.parent
    candidate = base / "examples" / "scenarios"
    return candidate if candidate.is_dir() else None


def build_audit(rules: RuleSet, source_text: str | None, scenarios: Sequence[Scenario] | None, *,
                source_name: str | None = None, scenarios_dir: Path | None = None) -> Audit:
    """Everything the rulebook shows, as data. `source_text` None: quotes are not checked;
    `scenarios` None: no scenario files were given (scenario coverage is not reported)."""
    loaded = rules.loaded
    ctx = _Context(rules)
    params = dict(rules.parameter_values)
    heads = headings(source_text) if source_text is not None else ()
    scen = list(scenarios or ())

    packs: list[PackEntry] = []
    for pack in loaded.packs:
        entries = []
        for rule in (r for r in loaded.rules if r.pack == pack.id):
            entries.append(RuleEntry(
                rule=rule,
                where=ctx.where(rule.where),
                condition=describe_condition(rule.when, params, ctx.units),
                outputs=describe_outputs(rule, params, tuple(r.id for r in rules.rules if rule.id in r.supersedes),
                                         rule.urgency in loaded.stands_alone),
                parameters=tuple(ParamUse(n, params[n], rules.parameters[n].unit, rules.parameters[n].origin)
                                 for n in rule.parameters),
                guidance=tuple(loaded.guidance[g] for g in rule.guidance if g in loaded.guidance),
                quote_status=(QUOTE_NOT_CHECKED if source_text is None
                              else QUOTE_FOUND if rule.quote in source_text else QUOTE_NOT_FOUND),
                quote_where=ctx.rule_key_where(rule, ("source", "quote")),
                quote_section=section_of(source_text, heads, rule.quote) if source_text is not None else None,
                positive=tuple(ctx.scenario_ref(s) for s in scen if rule.id in s.fired),
                negative=tuple(ctx.scenario_ref(s) for s in scen if rule.id in s.not_fired),
            ))
        packs.append(PackEntry(pack, ctx.where(pack.where), tuple(entries)))

    guidance_rows = tuple(GuidanceRow(
        item=item, where=ctx.guidance_where(item.id),
        encoded_by=tuple(r.id for r in loaded.rules if item.id in r.guidance),
        explained_by=tuple(r.id for r in loaded.rules if any(x.guidance == item.id for x in r.rationale)),
        parameters=tuple(p.name for p in loaded.parameters.values() if item.id in p.guidance),
    ) for item in loaded.guidance.values())

    cited = list(dict.fromkeys(r.section for r in loaded.rules))
    if source_text is not None:
        sections = [SectionRow(h, True, tuple(r.id for r in loaded.rules if r.section == h)) for h in heads]
        sections += [SectionRow(s, False, tuple(r.id for r in loaded.rules if r.section == s))
                     for s in cited if s not in heads]
    else:
        sections = [SectionRow(s, None, tuple(r.id for r in loaded.rules if r.section == s)) for s in cited]

    gaps = ()
    if scenarios is not None:
        gaps = tuple(ScenarioGap(e.id, len(e.positive), len(e.negative))
                     for p in packs for e in p.rules if not e.positive or not e.negative)

    usage = parameter_usage(loaded.rules)
    parameter_rows = tuple(ParameterRow(p, params[p.name], ctx.where(p.where), usage.get(p.name, ()))
                           for p in loaded.parameters.values())

    return Audit(
        rule_set_id=loaded.info.id, title=loaded.info.title, version=loaded.info.version,
        digest=loaded.info.digest, description=ctx.description, cdss_version=__version__,
        source_title=loaded.info.source_title,
        source_cited_files=tuple(dict.fromkeys(str(p.metadata.get("source", {}).get("file", ""))
                                               for p in loaded.packs if p.metadata.get("source", {}).get("file"))),
        source_file=source_name if source_name is not None else ("(text)" if source_text is not None else None),
        source_headings=tuple(heads),
        scenarios_dir=ctx.display(scenarios_dir) if scenarios_dir is not None else None,
        scenario_count=len(scen),
        parameter_values=params,
        packs=tuple(packs), guidance=guidance_rows, sections=tuple(sections), scenario_gaps=gaps,
        parameters=parameter_rows,
        findings=tuple(_findings(rules, scenarios, source_text, ctx)),
        scope=loaded.scope, conflicts=loaded.conflicts, review=review_status(loaded.packs),
    )


def audit_findings(rules: RuleSet, scenarios_list: Sequence[Scenario] | None, *,
                   source_text: str | None = None) -> list[Finding]:
    """The static findings of a rule set, each located at file:line; most serious first.

    Quote and section checks need `source_text`; scenario checks need `scenarios_list`
    (None: not checked; an empty list: every rule lacks scenarios).
    """
    return _findings(rules, scenarios_list, source_text, _Context(rules))


# ================================================================ the source document


# headings() and section_of() live in cdss.evidence (the loader checks quotes with them too).


# ================================================================ conditions in plain English

_OPS = {"gte": "≥", "gt": ">", "lte": "≤", "lt": "<", "equals": "="}
_NUMBER_WORDS = {"gte": "at least", "gt": "more than", "lte": "at most", "lt": "less than", "equals": "exactly"}
_GUIDANCE_REF = re.compile(r"\s*\((?:G-[A-Z]+-\d+(?:,\s*)?)+\)")


def field_phrase(fld: Field) -> str:
    """What a field means, from the patient schema: "sudden loss of bladder or bowel control"."""
    text = _GUIDANCE_REF.sub("", fld.description or "").strip().rstrip(".").split(":")[0].strip()
    if not text:
        return fld.path.rsplit(".", 1)[-1].replace("_", " ")
    return text[0].lower() + text[1:] if len(text) < 2 or not text[1].isupper() else text


def _value(value: Any, unit: str | None = None) -> str:
    """A value for people: yes/no for booleans, with its unit ("1 week", "4 weeks")."""
    shown = ("yes" if value else "no") if isinstance(value, bool) else str(value)
    if unit and value == 1 and not isinstance(value, bool) and unit.endswith("s"):
        unit = unit[:-1]
    return f"{shown} {unit}" if unit else shown


def _or_list(values: Iterable[Any]) -> str:
    items = [str(v) for v in values]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def describe_condition(condition: Condition, params: Mapping[str, Any],
                       units: Mapping[str, str | None] | None = None) -> Clause:
    """A condition tree as plain English (see `Clause`), with the parameter values in `params`
    and their `units` (parameter name → unit)."""
    units = units or {}
    if isinstance(condition, All):
        return Clause("all of:", children=tuple(describe_condition(c, params, units) for c in condition.children))
    if isinstance(condition, AnyOf):
        return Clause("any of:", children=tuple(describe_condition(c, params, units) for c in condition.children))
    if isinstance(condition, Not):
        child = describe_condition(condition.child, params, units)
        if child.field is not None:
            return Clause(f"it is not the case that {child.text}", child.field, child.formal)
        return Clause("it is not the case that", children=(child,))
    return _describe_leaf(condition, params, units)


def _describe_leaf(leaf: Leaf, params: Mapping[str, Any], units: Mapping[str, str | None]) -> Clause:
    fld = leaf.field
    what = field_phrase(fld)
    op, operand = leaf.op, leaf.operand
    if op == "is":
        if operand == "unknown":
            return Clause(f"{what} is not answered" if fld.kind == "tristate" else f"{what} is not recorded",
                          fld.path, "is unknown (not answered)")
        if operand == "known":
            return Clause(f"{what} is answered" if fld.kind == "tristate" else f"{what} is recorded",
                          fld.path, "is answered")
        return Clause(f"{what} is reported" if operand else f"{what} is answered no",
                      fld.path, "is yes" if operand else "is no")
    if op == "in":
        values = list(operand)
        return Clause(f"{what}: {_or_list(values)}", fld.path, "is one of " + ", ".join(map(str, values)))
    if isinstance(operand, ParamRef):
        p = operand.name
        unit = units.get(p)
        value = _value(params.get(p), unit)
        formal = f"{_OPS[op]} {p} (currently {value})"
    else:
        unit, value = None, _value(operand)
        formal = f"{_OPS[op]} {value}"
    if fld.kind == "integer":
        return Clause(f"{what} is {_NUMBER_WORDS[op]} {value}", fld.path, formal)
    return Clause(f"{what}: {value}", fld.path, formal)


# ================================================================ what a rule produces and uses


def _bound(value: Any, params: dict[str, Any]) -> tuple[Any, str | None]:
    return resolve_bound(value, params), value["param"] if isinstance(value, dict) else None


def _range(spec: dict[str, Any], params: dict[str, Any], noun: str) -> str:
    (lo, lo_p), (hi, hi_p) = _bound(spec["min"], params), _bound(spec["max"], params)
    text = f"{lo} to {hi} {noun}" if lo != hi else f"{lo} {noun}"
    names = [n for n in (lo_p, hi_p) if n]
    return f"{text} ({', '.join(names)})" if names else text


def describe_outputs(rule: Rule, params: dict[str, Any], superseded_by: tuple[str, ...] = (),
                     stands_alone: bool = False) -> tuple[Output, ...]:
    """The rule's outputs with parameter placeholders filled with the values in force, then its relations
    (supersedes / superseded by) and the questions it asks while a field it needs is unknown (issue 17)."""
    then = rule.then
    out: list[Output] = []
    if "card" in then:
        out.append(Output("card", (("indicator", rule.indicator), ("summary", render(then["card"]["summary"], params)),
                                   ("detail", render(then["card"]["detail"], params).strip()))))
    if "finding" in then:
        f = then["finding"]
        items = [("code", f["code"])] + ([("side", f["side"])] if "side" in f else []) + [("text", render(f["text"], params))]
        out.append(Output("finding", tuple(items)))
    if "referral" in then:
        r = then["referral"]
        timeframe = r.get("timeframe", "routine") + (f" ({render(r['within'], params)})" if "within" in r else "")
        out.append(Output("referral", (("to", ", ".join(r["to"])), ("timeframe", timeframe),
                                       ("reason", render(r["reason"], params)))))
    if "exercise" in then:
        e = then["exercise"]
        out.append(Output("exercise", (("id", e["id"]), ("name", e["name"]), ("targets", ", ".join(e["targets"])),
                                       ("sets", _range(e["sets"], params, "sets")),
                                       ("reps", _range(e["reps"], params, "repetitions")),
                                       ("instructions", render(e["instructions"], params).strip()))))
    if "plan" in then:
        p = then["plan"]
        items = ([("phase", p["phase"])] if "phase" in p else []) + ([("note", render(p["note"], params))] if "note" in p else [])
        out.append(Output("plan", tuple(items)))
    relations = ([("supersedes", ", ".join(rule.supersedes))] if rule.supersedes else []) + (
        [("superseded by", ", ".join(superseded_by))] if superseded_by else []) + (
        [("stands alone", (f"when this fires the result is {rule.urgency}: the cards of lower-urgency rules give way"
                           " (their findings stay) and no questions are asked"))] if stands_alone else [])
    if relations:
        out.append(Output("relations", tuple(relations)))
    if rule.questions:
        out.append(Output("questions", tuple((q.field, render(q.reason, params)) for q in rule.questions)))
    return tuple(out)


def parameter_usage(rules: Iterable[Rule]) -> dict[str, tuple[str, ...]]:
    """parameter name → the rules that use it."""
    usage: dict[str, list[str]] = {}
    for rule in rules:
        for name in rule.parameters:
            usage.setdefault(name, []).append(rule.id)
    return {k: tuple(v) for k, v in usage.items()}


# ================================================================ locations


class _Context:
    """Resolves where things are written (file:line), relative to the rule set's directory."""

    def __init__(self, rules: RuleSet) -> None:
        loaded = rules.loaded
        self.root = loaded.root
        self.base = (self.root.parent if self.root.is_dir() else self.root.parent.parent).resolve()
        self.units = {name: p.unit for name, p in loaded.parameters.items()}
        self._docs: dict[Path, YamlDocument | None] = {}
        manifest = self._document(self.root / MANIFEST) if self.root.is_dir() else None
        self.description = str(manifest.data["rule_set"].get("description", "")).strip() if manifest is not None else ""
        folder = self.root if self.root.is_dir() else self.root.parent
        self.guidance_path = folder / GUIDANCE if (folder / GUIDANCE).is_file() else rules_dir() / GUIDANCE

    def display(self, path: str | Path) -> str:
        p = Path(path)
        absolute = (p if p.is_absolute() else Path.cwd() / p).resolve()
        for base in (self.base, Path.cwd().resolve(), schemas_dir().resolve().parent):
            try:
                return absolute.relative_to(base).as_posix()
            except ValueError:
                continue
        return absolute.as_posix()

    def where(self, origin: Origin) -> str:
        shown = self.display(origin.file)
        return f"{shown}:{origin.line}" if origin.line is not None else shown

    def _file(self, origin_file: str) -> Path:
        p = Path(origin_file)
        if not p.is_absolute():
            p = Path.cwd() / p
        if not p.is_file():
            folder = self.root if self.root.is_dir() else self.root.parent
            p = folder / Path(origin_file).name
        return p

    def _document(self, path: Path) -> YamlDocument | None:
        """A rule file read again for the lines of its keys (read once per audit)."""
        if path not in self._docs:
            try:
                self._docs[path] = load_yaml(path)
            except (YamlProblem, OSError):
                self._docs[path] = None
        return self._docs[path]

    def rule_key_line(self, rule: Rule, key: tuple[str, ...]) -> int | None:
        """The line of a key inside a rule (e.g. its quote), falling back to the rule's line."""
        doc = self._document(self._file(rule.where.file))
        for i, raw in enumerate((doc.data.get("rules") or []) if doc is not None else []):
            if isinstance(raw, dict) and raw.get("id") == rule.id:
                found = doc.locate(("rules", i, *key))  # type: ignore[union-attr]
                if found:
                    return found[0]
        return rule.where.line

    def rule_key_where(self, rule: Rule, key: tuple[str, ...]) -> str:
        return self.where(Origin(rule.where.file, self.rule_key_line(rule, key)))

    def pack_key_line(self, pack: Pack, key: tuple[str, ...]) -> int | None:
        doc = self._document(self._file(pack.where.file))
        found = doc.locate(("pack", *key)) if doc is not None else None
        return found[0] if found else pack.where.line

    def guidance_where(self, gid: str) -> str:
        doc = self._document(self.guidance_path)
        line = None
        if doc is not None:
            for i, item in enumerate(doc.data.get("guidance", [])):
                if isinstance(item, dict) and item.get("id") == gid:
                    found = doc.locate(("guidance", i))
                    line = found[0] if found else None
        return self.where(Origin(str(self.guidance_path), line))

    def scenario_ref(self, scenario: Scenario) -> ScenarioRef:
        return ScenarioRef(scenario.name, self.where(Origin(scenario.file, scenario.line)), dict(scenario.parameters))

    def field_where(self, path: str) -> str:
        schema_file = schemas_dir() / "patient.schema.json"
        doc = self._document(schema_file)
        line = None
        if doc is not None:
            key: tuple[str, ...] = ()
            for part in path.split("."):
                key = (*key, "properties", part)
            found = doc.locate(key)
            line = found[0] if found else None
        return self.where(Origin(str(schema_file), line))


def _split(where: str) -> tuple[str, int | None]:
    file, _, line = where.rpartition(":")
    return (file, int(line)) if file and line.isdigit() else (where, None)


# ================================================================ static findings


def _finding(kind: str, severity: str, message: str, where: str, rules: Iterable[str] = ()) -> Finding:
    file, line = _split(where)
    return Finding(kind, severity, message, file, line, tuple(rules))


def _findings(rules: RuleSet, scenarios: Sequence[Scenario] | None, source_text: str | None,
              ctx: _Context) -> list[Finding]:
    loaded = rules.loaded
    params = dict(rules.parameter_values)
    out: list[Finding] = []

    # drafts
    for pack in loaded.packs:
        if pack.status == "draft":
            out.append(_finding("draft-pack", "warning",
                                f"pack '{pack.id}' is still a draft: its rules run but are not signed off",
                                ctx.where(Origin(pack.where.file, ctx.pack_key_line(pack, ("status",))))))
    for rule in loaded.rules:
        if rule.status == "draft":
            out.append(_finding("draft-rule", "warning",
                                f"rule '{rule.id}' is still a draft: it runs but has not been signed off",
                                ctx.where(Origin(rule.where.file, ctx.rule_key_line(rule, ("status",)))), [rule.id]))

    # source: quotes and sections
    if source_text is not None:
        heads = headings(source_text)
        for rule in loaded.rules:
            if rule.quote not in source_text:
                hint = ""
                for straight, curly in (("'", "’"), ('"', "“")):
                    if straight in rule.quote and rule.quote.replace(straight, curly) in source_text:
                        hint = f" (the source writes {curly} where the quote has {straight})"
                out.append(_finding("quote-not-found", "problem",
                                    f"rule '{rule.id}': the quote is not found verbatim in the source{hint}: {_clip(rule.quote)}",
                                    ctx.rule_key_where(rule, ("source", "quote")), [rule.id]))
            if rule.section not in heads:
                out.append(_finding("section-not-in-source", "problem",
                                    f"rule '{rule.id}': section '{rule.section}' is not a heading of the source",
                                    ctx.rule_key_where(rule, ("source", "section")), [rule.id]))
            else:
                under = section_of(source_text, heads, rule.quote)
                if under is not None and under != rule.section:
                    out.append(_finding("quote-outside-section", "problem",
                                        f"rule '{rule.id}': the quote stands under '{under}', the rule names '{rule.section}'",
                                        ctx.rule_key_where(rule, ("source", "section")), [rule.id]))

    # guidance catalogue coverage
    encoded = {g for r in loaded.rules for g in r.guidance}
    explained = {x.guidance for r in loaded.rules for x in r.rationale}
    for item in loaded.guidance.values():
        if item.kind == "rule" and item.id not in encoded:
            out.append(_finding("guidance-not-covered", "problem",
                                f"guidance {item.id} (rule row) is encoded by no rule: {_clip(item.text)}",
                                ctx.guidance_where(item.id)))
        elif item.kind == "context" and item.id not in explained | encoded:
            out.append(_finding("guidance-not-covered", "warning",
                                f"guidance {item.id} (context row) is the rationale of no rule: {_clip(item.text)}",
                                ctx.guidance_where(item.id)))

    # parameters and fields
    usage = parameter_usage(loaded.rules)
    for name, param in loaded.parameters.items():
        if name not in usage:
            out.append(_finding("unused-parameter", "warning", f"parameter '{name}' is declared but no rule uses it",
                                ctx.where(param.where)))
    read = {leaf.field.path for r in loaded.rules for leaf in leaves(r.when)}
    for path in patient_fields():
        if path not in read:
            extra = " (the red-flag screening verdict still reads it)" if path.startswith("red_flags.") else ""
            out.append(_finding("unread-field", "warning", f"patient field '{path}' is read by no rule{extra}",
                                ctx.field_where(path)))

    # conditions that never or always hold
    for rule in loaded.rules:
        possible = outcomes(rule.when, params)
        if possible == {False}:
            out.append(_finding("never-fires", "problem", f"rule '{rule.id}' can never fire (with the parameter values in force)",
                                ctx.rule_key_where(rule, ("when",)), [rule.id]))
        elif possible == {True}:
            out.append(_finding("always-fires", "warning", f"rule '{rule.id}' fires for every patient",
                                ctx.rule_key_where(rule, ("when",)), [rule.id]))

    # pairs: exclusive (meaningful ones) and overlapping outputs
    for a, b in itertools.combinations(loaded.rules, 2):
        exclusive_kind = _meaningful_pair(a, b)
        same_output = _same_output(a, b)
        if not exclusive_kind and not same_output:
            continue
        together = outcomes(All((a.when, b.when)), params)
        if together is None:
            continue
        if exclusive_kind and together == {False}:
            out.append(_finding("exclusive-pair", "note",
                                f"'{a.id}' and '{b.id}' can never fire together ({exclusive_kind}): "
                                "confirm that one excludes the other on purpose", ctx.where(a.where), [a.id, b.id]))
        if same_output and True in together:
            out.append(_finding("same-output", "warning",
                                f"'{a.id}' and '{b.id}' can fire together and both produce {same_output}: "
                                "a patient would get it twice", ctx.where(a.where), [a.id, b.id]))

    # scenarios
    if scenarios is not None:
        positive = {r for s in scenarios for r in s.fired}
        negative = {r for s in scenarios for r in s.not_fired}
        for rule in loaded.rules:
            if rule.id not in positive:
                out.append(_finding("no-positive-scenario", "warning", f"rule '{rule.id}' has no scenario in which it must fire",
                                    ctx.where(rule.where), [rule.id]))
            if rule.id not in negative:
                out.append(_finding("no-negative-scenario", "warning",
                                    f"rule '{rule.id}' has no scenario in which it must not fire",
                                    ctx.where(rule.where), [rule.id]))
        known = {r.id for r in loaded.rules}
        for s in scenarios:
            for rule_id in dict.fromkeys((*s.fired, *s.not_fired)):
                if rule_id not in known:
                    out.append(_finding("scenario-unknown-rule", "problem",
                                        f"scenario '{s.name}' names rule '{rule_id}', which is not in the rule set",
                                        ctx.where(Origin(s.file, s.line))))
        for s in scenarios:  # a scenario the rules do not meet is a failing test, not coverage
            for m in mismatches(s, rules):
                if not m.found.startswith("no such rule"):  # reported above as scenario-unknown-rule
                    out.append(_finding("scenario-fails", "problem", f"scenario '{s.name}' fails: {m}",
                                        ctx.where(Origin(s.file, s.line_of(m.key))), [r for r in known if f"'{r}'" in m.what]))

    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(out, key=lambda f: (order[f.severity], f.file or "", f.line or 0, f.kind))


def _meaningful_pair(a: Rule, b: Rule) -> str:
    """Why a pair of rules that exclude each other is worth a reviewer's look ('' if it is not)."""
    if a.category == b.category:
        return f"both {a.category}"
    shared = [g for g in a.guidance if g in b.guidance]
    if shared:
        return "both encode " + ", ".join(shared)
    if {a.category, b.category} == {"escalation", "progression"}:
        return "escalation vs progression"
    return ""


def _same_output(a: Rule, b: Rule) -> str:
    fa, fb = a.then.get("finding"), b.then.get("finding")
    if fa and fb and (fa["code"], fa.get("side")) == (fb["code"], fb.get("side")):
        side = f" (side {fa['side']})" if fa.get("side") else ""
        return f"finding '{fa['code']}'{side}"
    ea, eb = a.then.get("exercise"), b.then.get("exercise")
    if ea and eb and ea["id"] == eb["id"]:
        return f"exercise '{ea['id']}'"
    ca, cb = a.then.get("card"), b.then.get("card")
    if ca and cb and ca["summary"] == cb["summary"]:
        return "card summary"
    return ""


def _clip(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    return f"“{text}”" if len(text) <= limit else f"“{text[:limit - 1]}…”"


__all__ = [
    "Audit", "Clause", "Finding", "GuidanceRow", "Output", "PackEntry", "ParamUse", "ParameterRow", "RuleEntry",
    "ScenarioGap", "ScenarioRef", "SectionRow", "anchor", "audit_findings", "build_audit", "default_scenarios_dir",
    "describe_condition", "describe_outputs", "field_phrase", "headings", "parameter_usage",
    "rulebook", "section_of",
]
