"""The audit: the rulebook a clinician reviews and signs off, and the static findings behind it.

`build` gathers everything a reviewer needs as data (`build_audit`, `audit_findings`);
`render` turns that data into Markdown or one self-contained HTML page. Data flows one way,
build → render, so neither imports the other's caller.

    import cdss, cdss.audit
    text = cdss.audit.rulebook(cdss.load_rules(), source=None, fmt="html")
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .build import (FORMATS, QUOTE_FOUND, QUOTE_NOT_CHECKED, QUOTE_NOT_FOUND, SEVERITIES, Audit, Clause, Finding,
                    Output, RuleEntry, ScenarioRef, anchor, audit_findings, build_audit, default_scenarios_dir,
                    describe_condition, describe_outputs, field_phrase, headings, parameter_usage, section_of)
from ..scenarios import load_scenarios
from .render import to_html, to_markdown

if TYPE_CHECKING:
    from ..ruleset import RuleSet

__all__ = [
    "FORMATS", "QUOTE_FOUND", "QUOTE_NOT_CHECKED", "QUOTE_NOT_FOUND", "SEVERITIES", "Audit", "Clause", "Finding",
    "Output", "RuleEntry", "ScenarioRef", "anchor", "audit_findings", "build_audit", "default_scenarios_dir",
    "declared_source", "describe_condition", "describe_outputs", "field_phrase", "headings", "parameter_usage", "prepare", "rulebook",
    "section_of", "to_html", "to_markdown",
]


def declared_source(rules: RuleSet) -> tuple[str | None, str | None]:
    """(text, name) of the sources the rule set declares, joined; (None, None) when it declares none."""
    from ..loader import _display

    sources = rules.loaded.sources
    if not sources:
        return None, None
    return "\n\n".join(s.text for s in sources), ", ".join(_display(s.path) for s in sources)


def prepare(rules: RuleSet, *, source: Path | None = None, scenarios: Path | None = None) -> Audit:
    """The audit data of a rule set: quotes checked against `source` (default: the declared sources),
    scenarios from `scenarios` (default: `examples/scenarios` beside the rule set, if any)."""
    source_text, source_name = declared_source(rules)
    if source is not None:
        source_text, source_name = Path(source).read_text(encoding="utf-8"), str(source)
    directory = Path(scenarios) if scenarios is not None else default_scenarios_dir(rules)
    scenario_list = load_scenarios(directory) if directory is not None else None
    return build_audit(rules, source_text, scenario_list, source_name=source_name, scenarios_dir=directory)


def rulebook(rules: RuleSet, *, source: Path | None, fmt: str = "markdown", scenarios: Path | None = None) -> str:
    """The rulebook of a rule set as Markdown or one self-contained HTML page.

    `source`: the source document; quotes are checked verbatim and sections against its
    headings. None: the sources the rule set declares in ruleset.yaml (none declared: quotes
    are marked "not checked"). `scenarios`: a directory of scenario files; by default the
    `examples/scenarios` beside the rule set directory, if any; a scenario the rules do not
    meet is a problem. Raises ValueError for an unknown format, OSError for an unreadable
    source and RuleFileError for invalid scenario files.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown rulebook format {fmt!r}; choose one of {', '.join(FORMATS)}")
    audit = prepare(rules, source=source, scenarios=scenarios)
    return to_html(audit) if fmt == "html" else to_markdown(audit)
