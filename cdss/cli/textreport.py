"""Human-readable renderings for the command line: a result, its trace, a rule, the rule table.

Plain text with optional ANSI styling (click.style); `click.echo` strips the styling when
the output is not a terminal, so the same text is safe to pipe or paste.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import click

from ..fields import field_label

if TYPE_CHECKING:
    from ..model import Rule
    from ..ruleset import RuleSet

BANNERS = {
    "emergency": ("EMERGENCY: seek immediate medical attention", {"fg": "red", "bold": True, "reverse": True}),
    "see-professional": ("SEE A PROFESSIONAL: arrange an assessment (physical therapist or physician)",
                         {"fg": "yellow", "bold": True}),
    "self-care": ("SELF-CARE: follow the advice below, within the limits of this screen (listed at the end)",
                  {"fg": "green", "bold": True}),
    "none": ("NOTHING TO ADVISE on these answers, within the limits of this screen (listed at the end)", {"bold": True}),
}
# issue 17: while a question is open or screening is incomplete, no banner may read as reassurance
BANNER_SCREENING_INCOMPLETE = ("ANSWER THE RED-FLAG QUESTIONS FIRST: until then, treat this as needing a professional "
                               "assessment", {"fg": "yellow", "bold": True})
NONE_YET = "  none yet: the answers to the questions above could change this"
"""An empty section while questions are open is not an all-clear."""
BANNER_SELF_CARE_OPEN = ("SELF-CARE FOR NOW: answer the open questions below; they could make this more urgent",
                         {"fg": "yellow", "bold": True})
PLAN_WORDS = {"withheld": ("WITHHELD", "red"), "pending-screening": ("PENDING red-flag screening", "yellow"),
              "pending-answers": ("PENDING answers to the questions above", "yellow"),
              "not-indicated": ("none needed on these answers", "green")}
SCREENING = {
    "positive": ("POSITIVE", "a red flag is present", "red"),
    "negative": ("negative", "all three red-flag questions answered no", "green"),
    "incomplete": ("INCOMPLETE", "no red flag answered yes, but at least one is unanswered", "yellow"),
}
INDICATOR_STYLE = {"critical": "red", "warning": "yellow", "info": "cyan"}
OP_SYMBOL = {"is": "is", "equals": "=", "in": "in", "gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}
_BOLD = re.compile(r"\*\*(.+?)\*\*", re.DOTALL)
_ITALIC = re.compile(r"(?<!\w)_(\S(?:.*?\S)?)_(?!\w)")
_BULLET = re.compile(r"^(\s*(?:[-*]|\d+\.)\s+)")


def _printable(text: str) -> str:
    """Caller-supplied text with control characters (terminal escape sequences) shown as escapes."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def width() -> int:
    """Wrap width: the terminal's, within 60..100 columns."""
    return max(60, min(100, shutil.get_terminal_size((88, 24)).columns))


def _wrap(text: str, indent: str, first: str | None = None) -> list[str]:
    """Wrap each paragraph of `text` (blank lines and list items kept)."""
    # Markdown-ish: a single newline continues the paragraph; a blank line or a list item starts a new block
    blocks: list[str | None] = []  # None: blank line
    for raw in text.strip("\n").splitlines():
        if not raw.strip():
            if blocks and blocks[-1] is not None:
                blocks.append(None)
        elif _BULLET.match(raw) or not blocks or blocks[-1] is None:
            blocks.append(raw.rstrip())
        else:
            blocks[-1] = f"{blocks[-1]} {raw.strip()}"
    out: list[str] = []
    lead = indent if first is None else first
    blocks = [None if b is None else _ITALIC.sub(r"\1", _BOLD.sub(r"\1", b)) for b in blocks]
    for block in blocks:
        if block is None:
            out.append("")
            continue
        bullet = _BULLET.match(block)
        sub = " " * len(bullet.group(1)) if bullet else ""
        lines = textwrap.wrap(block if bullet else block.strip(), width=width(),
                              initial_indent=lead, subsequent_indent=indent + sub,
                              break_on_hyphens=False, break_long_words=False) or [lead]
        out.extend(lines)
        lead = indent
    return out


def _heading(text: str) -> str:
    return click.style(text, bold=True, underline=True)


def _show(value: Any) -> str:
    if value is None:
        return "unknown"
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


# ---------------------------------------------------------------- a result


def render_result(result: Mapping[str, Any], *, overrides: Mapping[str, Any] | None = None,
                  label: str | None = None) -> str:
    """The readable summary of one result document (and its trace, when it has one)."""
    lines: list[str] = []
    rule_set = result["rule_set"]
    who = f"patient {_printable(result['patient_id'])}" if result.get("patient_id") else "patient (no id)"
    head = f"{who} · rules {rule_set['id']} {rule_set['version']}"
    if label:
        head = f"{label} · {head}"
    lines.append(click.style(head, dim=True))
    text, style = banner(result)
    lines.append(click.style(f" {text} ", **style))
    review = result.get("review") or {}
    if review.get("status", "signed-off") != "signed-off":
        pending = ", ".join(review.get("pending_packs", [])) or "unknown"
        lines.append(click.style(f"NOT CLINICALLY REVIEWED: rule packs awaiting sign-off: {pending}", fg="yellow", bold=True))
    word, meaning, colour = SCREENING[result["red_flag_screening"]]
    lines.append(f"Red-flag screening: {click.style(word, fg=colour, bold=True)} ({meaning})")

    conflicts = result.get("conflicts", [])
    if conflicts:
        lines.append("")
        lines.append(_heading(f"Contradictory answers ({len(conflicts)}): check them; they were read as not answered"))
        for conflict in conflicts:
            lines.extend(_wrap(f"{', '.join(conflict['fields'])}: {conflict['message']}", "    ", "  ! "))
    questions = result.get("questions", [])
    if questions:
        lines.append("")
        lines.append(_heading(f"Questions to answer ({len(questions)}), most important first"))
        for question in questions:
            tag = "could make this more urgent" if question["could_change"] == "urgency" else "could change the plan"
            lines.extend(_wrap(f"{field_label(question['field'])} ({tag}): {question['reason']}", "    ", "  ? "))

    findings = result["findings"]
    lines.append("")
    lines.append(_heading(f"Findings ({len(findings)})"))
    if not findings:
        lines.append(NONE_YET if questions else "  none")
    for finding in findings:
        side = f"[{finding['side']}] " if finding.get("side") else ""
        lines.extend(_wrap(side + finding["text"], "    ", "  * "))

    plan = result["plan"]
    lines.append("")
    status = plan["status"]
    if status == "recommended":
        phase = f", {plan['phase']} phase" if plan.get("phase") else ""
        lines.append(_heading(f"Plan: recommended{phase}"))
        for i, exercise in enumerate(plan["exercises"], 1):
            sets, reps = exercise["sets"], exercise["reps"]
            dose = f"{_range(sets)} sets of {_range(reps)} repetitions"
            lines.append(f"  {i}. {click.style(exercise['name'], bold=True)} ({', '.join(exercise['targets'])}): {dose}")
            lines.extend(_wrap(exercise["instructions"], "     "))
        if not plan["exercises"] and not plan["notes"]:
            lines.append("  no exercises")
    else:
        word, colour = PLAN_WORDS.get(status, (status, "yellow"))
        lines.append(_heading("Plan: ") + click.style(word, fg=colour, bold=True))
    for note in plan["notes"]:
        lines.extend(_wrap(note, "    ", "  - "))

    referrals = [card for card in result["cards"] if card.get("referral")]
    if referrals:
        lines.append("")
        lines.append(_heading(f"Referrals ({len(referrals)})"))
        for card in referrals:
            ref = card["referral"]
            when = ref.get("within") or ref["timeframe"]
            lines.append(f"  * to {' or '.join(ref['to'])}: {click.style(when, bold=True)}")
            lines.extend(_wrap(ref["reason"], "    "))

    cards = result["cards"]
    lines.append("")
    lines.append(_heading(f"Cards ({len(cards)})"))
    if not cards:
        lines.append(NONE_YET if questions else "  none")
    for card in cards:
        tag = click.style(f"[{card['indicator'].upper()}]", fg=INDICATOR_STYLE[card["indicator"]], bold=True)
        lines.append(f"  {tag} {card['summary']}")
        lines.extend(_wrap(card["detail"], "      "))
        source = card["source"]
        lines.append(click.style(f"      Source: {source['label']} > {source['section']}", dim=True))
        lines.extend(click.style(line, dim=True) for line in _wrap(f"\u201c{source['quote']}\u201d", "        "))
        lines.append(click.style(f"      rule {card['rule']}", dim=True))

    missing = result["missing"]
    lines.append("")
    lines.append(_heading(f"Missing answers ({len(missing)})"))
    if not missing:
        lines.append("  none: every question the rules needed was answered")
    for path in missing:
        lines.append(f"  * {path}")

    scope = result.get("scope")
    if scope:
        lines.append("")
        lines.append(_heading("What this screen does not check"))
        lines.extend(_wrap(scope["statement"], "  "))
        for item in scope.get("not_covered", []):
            lines.extend(_wrap(item, "    ", "  - "))

    if overrides:
        lines.append("")
        shown = ", ".join(f"{name}={_show(result['parameters'].get(name))}" for name in sorted(overrides))
        lines.append(f"Parameters overridden: {shown}")
    if "trace" in result:
        lines.append("")
        lines.extend(render_trace(result["trace"]))
    return "\n".join(lines)


def banner(result: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The one-line verdict: never reassuring while red-flag screening is incomplete or a question could raise urgency."""
    urgency = result["urgency"]
    if urgency == "see-professional" and result["red_flag_screening"] == "incomplete":
        return BANNER_SCREENING_INCOMPLETE
    if urgency in ("self-care", "none") and any(q.get("could_change") == "urgency" for q in result.get("questions", [])):
        return BANNER_SELF_CARE_OPEN
    return BANNERS[urgency]


def _range(bounds: Mapping[str, Any]) -> str:
    return str(bounds["min"]) if bounds["min"] == bounds["max"] else f"{bounds['min']} to {bounds['max']}"


def render_trace(trace: Iterable[Mapping[str, Any]]) -> list[str]:
    """The --explain trace: each rule, fired or not, each condition with the value it saw."""
    steps = list(trace)
    fired = [s for s in steps if s["fired"]]
    lines = [_heading(f"Trace: {len(steps)} rules evaluated, {len(fired)} fired"),
             click.style("  (each condition with its own result, before all / any / not combine them)", dim=True)]
    for group, title in ((fired, "Fired"), ([s for s in steps if not s["fired"]], "Not fired")):
        if not group:
            continue
        lines.append(f"  {title}:")
        for step in group:
            mark = click.style("FIRED", fg="green", bold=True) if step["fired"] else click.style("  -  ", dim=True)
            relation = ""
            if step.get("stands_alone"):
                relation += (f"  (card, referral and plan give way: an {step['stands_alone']} result stands alone,"
                             f" led by {step['suppressed_by']})")
            elif step.get("suppressed_by"):
                relation += f"  (card, referral and plan give way: superseded by {step['suppressed_by']})"
            if step.get("referral_merged_into"):
                relation += f"  (referral merged into {step['referral_merged_into']}: one referral per destination)"
            lines.append(f"    {mark} {step['rule']}{click.style(relation, dim=True) if relation else ''}")
            for cond in step["conditions"]:
                ok = click.style("yes", fg="green") if cond["result"] else click.style("no ", fg="red")
                param = f" [{cond['param']}]" if cond.get("param") else ""
                lines.append(f"            {ok}  {cond['field']} {OP_SYMBOL.get(cond['op'], cond['op'])} "
                             f"{_show(cond['value'])}{param}   (saw {_show(cond['saw'])})")
    return lines


# ---------------------------------------------------------------- rules


def render_rule_table(rules: RuleSet) -> str:
    """`cdss rules list`: one row per active or draft rule."""
    header = ("ID", "CATEGORY", "INDICATOR", "STATUS", "GUIDANCE")
    rows = [(r.id, r.category, r.indicator, r.status, ", ".join(r.guidance)) for r in rules.rules]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    out = []
    for row in [header, *rows]:
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    return "\n".join(line.rstrip() for line in out)


def render_rule(rules: RuleSet, rule: Rule) -> str:
    """`cdss rules show ID`: everything a reviewer needs to judge one rule."""
    from ..model import resolve_bound
    from ..result import render

    params = rules.parameter_values
    lines = [click.style(f"{rule.id}: {rule.title}", bold=True)]
    where = f"{rule.where.file}:{rule.where.line}" if rule.where.line else rule.where.file
    for key, value in (("category", rule.category), ("indicator", rule.indicator), ("urgency", rule.urgency),
                       ("priority", str(rule.priority)), ("status", rule.status), ("pack", f"{rule.pack} ({where})"),
                       ("guidance", ", ".join(rule.guidance))):
        lines.append(f"  {key:<10} {value}")

    lines.append("")
    lines.append(_heading("When"))
    from ..audit import describe_condition  # one plain-English renderer for the CLI and the rulebook

    units = {name: p.unit for name, p in rules.parameters.items()}
    lines.extend(describe_condition(rule.when, params, units).lines(indent=1))

    then = rule.then
    lines.append("")
    lines.append(_heading("Then"))
    if "card" in then:
        lines.append(f"  Card ({rule.indicator}): {render(then['card']['summary'], params)}")
        lines.extend(_wrap(render(then["card"]["detail"], params), "      "))
    if "finding" in then:
        finding = then["finding"]
        side = f" [{finding['side']}]" if finding.get("side") else ""
        lines.append(f"  Finding {finding['code']}{side}:")
        lines.extend(_wrap(render(finding["text"], params), "      "))
    if "referral" in then:
        ref = then["referral"]
        when = render(ref["within"], params) if ref.get("within") else ref.get("timeframe", "routine")
        lines.append(f"  Referral to {' or '.join(ref['to'])}, {when}:")
        lines.extend(_wrap(render(ref["reason"], params), "      "))
    if "exercise" in then:
        ex = then["exercise"]
        sets = {k: resolve_bound(v, params) for k, v in ex["sets"].items()}
        reps = {k: resolve_bound(v, params) for k, v in ex["reps"].items()}
        lines.append(f"  Exercise {ex['name']} ({', '.join(ex['targets'])}): {_range(sets)} sets of {_range(reps)} repetitions")
        lines.extend(_wrap(render(ex["instructions"], params), "      "))
    if "plan" in then:
        plan = then["plan"]
        phase = f" phase {plan['phase']}" if plan.get("phase") else ""
        lines.append(f"  Plan{phase}:")
        if plan.get("note"):
            lines.extend(_wrap(render(plan["note"], params), "      "))
    if rule.gated_by_screening:
        lines.append(click.style("  (exercise advice: shown only when red-flag screening is negative)", dim=True))
    if rule.supersedes:
        lines.append(f"  Supersedes: {', '.join(rule.supersedes)} (their cards, referrals and plan give way when this fires)")
    superseded_by = [r.id for r in rules.rules if rule.id in r.supersedes]
    if superseded_by:
        lines.append(f"  Superseded by: {', '.join(superseded_by)}")
    if rule.urgency in rules.loaded.stands_alone:
        lines.append(f"  Stands alone: a {rule.urgency} result shows only {rule.urgency} cards, and asks no questions")
    if rule.questions:
        lines.append("")
        lines.append(_heading("Questions (asked while unknown, when an answer could make this rule fire)"))
        for question in rule.questions:
            lines.extend(_wrap(render(question.reason, params), " " * 6, f"  {question.field}: "))

    names = rule.parameters
    if names:
        lines.append("")
        lines.append(_heading("Parameters"))
        for name in names:
            p = rules.parameters[name]
            unit = f" {p.unit}" if p.unit else ""
            bounds = ""
            if p.minimum is not None or p.maximum is not None:
                bounds = f", {p.minimum if p.minimum is not None else '…'}..{p.maximum if p.maximum is not None else '…'}"
            kind = "policy, overridable with --param" if p.overridable else "stated by the source, fixed"
            lines.append(f"  {name} = {_show(params[name])}{unit} ({kind}{bounds}; default {_show(p.default)})")
            lines.extend(_wrap(p.description, "      "))

    lines.append("")
    lines.append(_heading("Guidance"))
    catalogue = rules.loaded.guidance
    for gid in rule.guidance:
        item = catalogue.get(gid)
        lines.extend(_wrap(item.text if item else "(not in the catalogue)", " " * (4 + len(gid)), f"  {gid}: "))
    if rule.rationale:
        lines.append("")
        lines.append(_heading("Rationale"))
        for r in rule.rationale:
            lines.extend(_wrap(r.text, " " * (4 + len(r.guidance)), f"  {r.guidance}: "))

    lines.append("")
    lines.append(_heading("Source"))
    lines.append(f"  {rules.info.source_title} > {rule.section}")
    lines.extend(_wrap(f"\u201c{rule.quote}\u201d", "    "))
    return "\n".join(lines)
