"""Render an `Audit` as GitHub-flavoured Markdown or as one self-contained HTML page.

The HTML page has no external resources (inline CSS, no scripts, fonts or images), reads on
a phone (viewport, fluid width, tables that scroll sideways inside their box) and prints
well (no navigation, rules kept on one page where they fit; every in-page link outside the
navigation reads as the id it points to, so a printed copy still shows it). Every text is
escaped; every rule has the anchor `#rule-<id>`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from typing import Any

from .build import (QUOTE_FOUND, QUOTE_NOT_CHECKED, QUOTE_NOT_FOUND, SEVERITIES, Audit, Clause, Finding, Output,
                    RuleEntry, ScenarioRef, anchor)

QUOTE_MARK = {QUOTE_FOUND: "✓ found verbatim in the source", QUOTE_NOT_FOUND: "✗ NOT FOUND in the source",
              QUOTE_NOT_CHECKED: "not checked (no source declared or given)"}
SEVERITY_TITLE = {"problem": "Problems (fix before sign-off)", "warning": "Warnings (fix or accept knowingly)",
                  "note": "Notes (confirm they are intended)"}
HOW_TO_READ = (
    "Each rule reads **IF** condition **THEN** outputs. A yes/no question that was not asked is *unknown*: "
    "unknown is never read as no. A comparison of a number that was not recorded is false; "
    "“it is not the case that …” is true when the answer is unknown.",
    "Parameter values are those in force when the rulebook was made. Origin *source*: stated by the source "
    "document, cannot be changed; origin *policy*: a local decision of this rule set, may be overridden.",
    "Quotes are checked character for character against the source file: ✓ found verbatim, ✗ NOT FOUND, "
    "or not checked when the rule set declares no source and none was given.",
    "From a result to its rule: a result card's `rule` field is the rule id; its section here is `#rule-<id>`. "
    "The result's `rule_set.digest` must equal the digest of this rulebook.",
)


PROSE_RELATIONS = frozenset({"stands alone"})
"""Relations stated in words (a rule-set tier), not as a list of rule ids to link."""

def _counts_line(audit: Audit) -> list[tuple[str, str]]:
    c = audit.counts
    quotes = "not checked (no source declared or given)"
    if audit.source_given:
        quotes = f"{c['quotes_found']} of {c['rules']} found verbatim"
        quotes += f", {c['quotes_not_found']} NOT FOUND" if c["quotes_not_found"] else ""
    scen = (f"{c['scenarios']} scenarios; {c['rules_with_both_scenarios']} of {c['rules']} rules have "
            "a positive and a negative one" if audit.scenarios_dir is not None else "no scenario files given")
    return [
        ("Packs / rules / parameters", f"{c['packs']} / {c['rules']} / {c['parameters']}"),
        ("Guidance rows covered", f"{c['guidance_covered']} of {c['guidance']} "
                                  f"(rule rows {c['guidance_rule_rows_covered']} of {c['guidance_rule_rows']})"),
        ("Quotes", quotes),
        ("Scenarios", scen),
        ("Findings", ", ".join(f"{c['findings_' + s]} {s}{'s' if c['findings_' + s] != 1 else ''}" for s in SEVERITIES)),
    ]


def _source_line(audit: Audit) -> str:
    cited = ", ".join(audit.source_cited_files)
    return f"{audit.source_title}" + (f" ({cited})" if cited else "")


def _pack_meta(meta: dict[str, Any]) -> list[tuple[str, str]]:
    reviewer = meta.get("clinical_reviewer") or {}
    dates = meta.get("dates") or {}
    rows = [("Status", str(meta.get("status", ""))), ("Version", str(meta.get("version", ""))),
            ("Authors", ", ".join(map(str, meta.get("authors", [])))),
            ("Clinical reviewer", "; ".join(str(reviewer[k]) for k in ("name", "role") if reviewer.get(k))
             + (f" (reviewed {reviewer['reviewed']})" if reviewer.get("reviewed") else " (not yet reviewed)")),
            ("Dates", ", ".join(f"{k} {v}" for k, v in dates.items()))]
    source = meta.get("source") or {}
    if source:
        rows.append(("Source", " ".join(str(source[k]) for k in ("title", "file") if source.get(k))))
    return rows


# ================================================================ Markdown


def _md_cell(text: Any) -> str:
    return md_inline(text)


def md_inline(text: Any) -> str:
    """Text from a rule file on one Markdown line or table cell: whitespace (newlines too) collapsed,
    HTML and table syntax escaped as entities, so a title cannot add a heading, a raw HTML tag or a cell."""
    flat = " ".join(str(text).split())
    return flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "&#124;")


def md_block(text: Any) -> str:
    """Multi-line Markdown text from a rule file (card detail, quotes): lines kept, HTML and table
    syntax escaped as entities, so emphasis and lists still work but no tag or table gets through."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "&#124;")


def _md_table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    head = list(header)
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return out + [""]


def _md_clause(clause: Clause, depth: int) -> list[str]:
    pad = "  " * depth
    text = f"{md_inline(clause.text)} (`{clause.field}` {md_inline(clause.formal)})" if clause.field else md_inline(clause.text)
    lines = [f"{pad}- {text}"]
    for child in clause.children:
        lines += _md_clause(child, depth + 1)
    return lines


def _md_quote(text: str, pad: str = "  ") -> list[str]:
    return [f"{pad}> {line}".rstrip() for line in md_block(text).splitlines()]


def _md_output(out: Output) -> list[str]:
    d = dict(out.items)
    if out.kind == "card":
        return [f"- **card** ({d['indicator']}): {md_inline(d['summary'])}", *_md_quote(d["detail"])]
    if out.kind == "finding":
        side = f", side **{md_inline(d['side'])}**" if "side" in d else ""
        return [f"- **finding** `{md_inline(d['code'])}`{side}: {md_inline(d['text'])}"]
    if out.kind == "referral":
        return [f"- **referral** to {md_inline(d['to'])} ({md_inline(d['timeframe'])}): {md_inline(d['reason'])}"]
    if out.kind == "exercise":
        return [f"- **exercise** `{md_inline(d['id'])}` {md_inline(d['name'])}: targets {md_inline(d['targets'])}; "
                f"{md_inline(d['sets'])}; {md_inline(d['reps'])}",
                *_md_quote(d["instructions"])]
    if out.kind == "relations":
        return [f"- **{label}**: " + (md_inline(text) if label in PROSE_RELATIONS else
                                      ", ".join(f"[`{r}`](#{anchor(r)})" for r in text.split(", ")))
                for label, text in out.items]
    if out.kind == "questions":
        return ["- **asks, while unknown**:"] + [f"  - `{name}`: {md_inline(reason)}" for name, reason in out.items]
    phase = f" phase **{md_inline(d['phase'])}**" if "phase" in d else ""
    note = f": {md_inline(d['note'])}" if "note" in d else ""
    return [f"- **plan**{phase}{note}"]


def _md_coherence(audit: Audit) -> list[str]:
    """Issue 17: what every result says besides the rules: scope, contradictions, review status."""
    L = ['<a id="coherence"></a>', "", "## What every result also says", ""]
    review = audit.review or {}
    pending = ", ".join(review.get("pending_packs", []))
    L += [f"**Review status:** {review.get('status', 'unknown')}" + (f" (pending: {pending})" if pending else ""), ""]
    if audit.scope is not None:
        L += [f"**Scope:** {audit.scope.statement}", "", "Not covered:", ""]
        L += [f"- {item}" for item in audit.scope.not_covered] + [""]
    L += ["**Contradictory answers** (listed in `conflicts`; the rules read these fields as unknown):", ""]
    L += [f"- `{c.id}` ({', '.join(f'`{f}`' for f in c.fields)}): {c.message}" for c in audit.conflicts] or ["- none declared"]
    return L + [""]


def _md_scenarios(title: str, refs: tuple[ScenarioRef, ...]) -> list[str]:
    if not refs:
        return [f"- {title}: **none**"]
    lines = [f"- {title} ({len(refs)}):"]
    for ref in refs:
        params = f" with {', '.join(f'{k}={v}' for k, v in ref.parameters.items())}" if ref.parameters else ""
        lines.append(f"  - {ref.name}{params} (`{ref.where}`)")
    return lines


def _md_rule(e: RuleEntry, scenarios_given: bool) -> list[str]:
    r = e.rule
    lines = [f'<a id="{anchor(r.id)}"></a>', "", f"### `{r.id}`: {md_inline(r.title)}", ""]
    lines += _md_table(["status", "category", "indicator", "urgency", "priority", "defined at"],
                       [[r.status, r.category, r.indicator, r.urgency, r.priority, f"`{e.where}`"]])
    cond = e.condition
    if cond.field:
        lines += [f"**IF** {md_inline(cond.text)} (`{cond.field}` {md_inline(cond.formal)})", ""]
    else:
        lines += [f"**IF** {md_inline(cond.text)}", ""]
        for child in cond.children:
            lines += _md_clause(child, 0)
        lines.append("")
    lines += ["**THEN**", ""]
    for out in e.outputs:
        lines += _md_output(out)
    lines.append("")
    if e.parameters:
        lines += ["**Parameters**", ""]
        lines += _md_table(["name", "value", "unit", "origin"],
                           [[f"`{p.name}`", p.value, p.unit or "", p.origin] for p in e.parameters])
    lines += ["**Guidance**", ""] + [f"- {g.id} ({md_inline(g.kind)}): {md_inline(g.text)}" for g in e.guidance] + [""]
    if r.rationale:
        lines += ["**Rationale**", ""] + [f"- {x.guidance}: {md_inline(x.text)}" for x in r.rationale] + [""]
    lines += [f"**Source**: {md_inline(r.section)}: {QUOTE_MARK[e.quote_status]} (quote at `{e.quote_where}`)", "",
              *_md_quote(r.quote, ""), ""]
    if scenarios_given:
        lines += ["**Scenarios**", "", *_md_scenarios("must fire", e.positive),
                  *_md_scenarios("must not fire", e.negative), ""]
    return lines


def _md_finding(f: Finding) -> str:
    return f"- **{f.kind}** at `{f.where}`: {md_inline(f.message)}"


def to_markdown(audit: Audit) -> str:
    """The rulebook as GitHub-flavoured Markdown."""
    c = audit.counts
    L: list[str] = [f"# Rulebook: {md_inline(audit.title)}", ""]
    if audit.description:
        L += [md_inline(audit.description), ""]
    L += [f"> A result belongs to this rulebook only if its `rule_set.digest` is `{audit.digest}`.", ""]
    rows = [("Rule set", f"`{audit.rule_set_id}`"), ("Title", audit.title), ("Version", audit.version),
            ("Digest", f"`{audit.digest}`"), ("cdss version", audit.cdss_version), ("Source", _source_line(audit)),
            ("Quotes checked against", f"`{audit.source_file}`" if audit.source_given else "nothing: no source declared in ruleset.yaml or given; quotes and sections not checked"),
            ("Scenario files", f"`{audit.scenarios_dir}` ({audit.scenario_count} scenarios)"
             if audit.scenarios_dir else "none given")]
    L += _md_table(["", ""], rows + _counts_line(audit))
    L += ["## Sign-off", "",
          f"I have reviewed every rule of rule set `{audit.rule_set_id}` version {audit.version}, digest `{audit.digest}`.", ""]
    L += _md_table(["", ""], [("Reviewer name", ""), ("Role / registration", ""), ("Date", ""),
                              ("Decision", "☐ approved for clinical use ☐ changes requested"), ("Signature", "")])
    L += ["## Contents", ""]
    L += ["- [How to read this rulebook](#how-to-read)", "- [Findings](#findings)"]
    for p in audit.packs:
        L.append(f"- [{md_inline(p.pack.title)}](#pack-{p.pack.id}) ({len(p.rules)} rules)")
        L += [f"  - [`{e.id}`](#{e.anchor}): {md_inline(e.rule.title)}" for e in p.rules]
    L += ["- [Coverage](#coverage)", ""]
    L += ['<a id="how-to-read"></a>', "", "## How to read this rulebook", ""] + [f"- {t}" for t in HOW_TO_READ] + [""]

    L += _md_coherence(audit)
    L += ['<a id="findings"></a>', "", f"## Findings ({c['findings']})", ""]
    if not audit.findings:
        L += ["No findings.", ""]
    for sev in SEVERITIES:
        items = [f for f in audit.findings if f.severity == sev]
        if items:
            L += [f"### {SEVERITY_TITLE[sev]}: {len(items)}", ""] + [_md_finding(f) for f in items] + [""]

    for p in audit.packs:
        L += [f'<a id="pack-{p.pack.id}"></a>', "", f"## Pack: {md_inline(p.pack.title)} (`{p.pack.id}`)", ""]
        if p.pack.metadata.get("description"):
            L += [md_inline(p.pack.metadata["description"]), ""]
        L += _md_table(["", ""], _pack_meta(p.pack.metadata) + [("Defined at", f"`{p.where}`")])
        for e in p.rules:
            L += _md_rule(e, audit.scenarios_dir is not None)

    L += ['<a id="coverage"></a>', "", "## Coverage", "", "### Guidance catalogue", ""]
    L += _md_table(["id", "kind", "statement", "encoded by (rules)", "explained by (rationale)", "covered"],
                   [[g.item.id, g.item.kind, g.item.text, _md_links(g.encoded_by), _md_links(g.explained_by),
                     "✓" if g.covered else "✗ NOT COVERED"] for g in audit.guidance])
    L += ["### Source sections", ""]
    if not audit.source_given:
        L += ["No source declared or given: the sections below are those the rules cite, not checked against the source.", ""]
    L += _md_table(["section", "heading of the source", "rules citing it"],
                   [[s.heading, {True: "✓", False: "✗ NOT A HEADING", None: "not checked"}[s.in_source],
                     _md_links(s.rules) or "none"] for s in audit.sections])
    L += ["### Scenario coverage", ""]
    if audit.scenarios_dir is None:
        L += ["No scenario files given.", ""]
    elif not audit.scenario_gaps:
        L += ["Every rule has at least one scenario where it must fire and one where it must not "
              f"({audit.scenario_count} scenarios).", ""]
    else:
        L += _md_table(["rule", "must fire", "must not fire"],
                       [[_md_links((g.rule,)), g.positive or "✗ none", g.negative or "✗ none"] for g in audit.scenario_gaps])
    L += ["### Parameters", ""]
    L += _md_table(["name", "origin", "default", "in force", "unit", "bounds", "guidance", "used by", "defined at"],
                   [[f"`{p.parameter.name}`", p.parameter.origin, p.parameter.default, p.value, p.parameter.unit or "",
                     _bounds(p.parameter), ", ".join(p.parameter.guidance), _md_links(p.used_by) or "✗ unused",
                     f"`{p.where}`"] for p in audit.parameters])
    L += [f"_Rulebook of `{audit.rule_set_id}` {audit.version}, digest `{audit.digest}`, made by cdss {audit.cdss_version}._", ""]
    return "\n".join(L)


def _md_links(ids: Iterable[str]) -> str:
    return ", ".join(f"[{i}](#{anchor(i)})" for i in ids)


def _bounds(p: Any) -> str:
    parts = []
    if p.minimum is not None:
        parts.append(f"≥ {p.minimum}")
    if p.maximum is not None:
        parts.append(f"≤ {p.maximum}")
    if getattr(p, "at_most", None):
        parts.append(f"≤ {p.at_most}")
    if p.enum:
        parts.append("one of " + ", ".join(map(str, p.enum)))
    return ", ".join(parts) or "none"


# ================================================================ HTML

CSS = """
:root{--fg:#1c2128;--muted:#59636e;--bg:#eef1f4;--paper:#fff;--line:#d1d9e0;--soft:#f6f8fa;--accent:#0b57a4;
--crit:#b42318;--crit-bg:#fdecea;--warn:#8a5a00;--warn-bg:#fff4d6;--info:#0b57a4;--info-bg:#e8f1fb;--ok:#1a7f37;--ok-bg:#e6f4ea}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);
font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",Arial,sans-serif}
main{max-width:62rem;margin:0 auto;background:var(--paper);padding:1rem 1rem 2rem}
@media (min-width:48rem){main{padding:2rem 2.5rem 3rem;margin:1.5rem auto;border-radius:10px;
box-shadow:0 1px 4px rgba(0,0,0,.08)}}
h1,h2,h3,h4{line-height:1.25;margin:1.6em 0 .5em}
h1{font-size:1.45rem;margin-top:.2em}
@media (min-width:48rem){h1{font-size:1.8rem}}
h2{font-size:1.3rem;border-bottom:2px solid var(--line);padding-bottom:.25em}
h3{font-size:1.1rem;margin:.2em 0 .4em}
h4{font-size:.8rem;text-transform:uppercase;letter-spacing:.06em;color:var(--muted);margin:1.1em 0 .35em}
p{margin:.4em 0 .7em}
a{color:var(--accent)}
code{font:.86em/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;background:var(--soft);
border:1px solid var(--line);border-radius:4px;padding:0 .25em;overflow-wrap:anywhere;word-break:break-word}
.kicker{margin:0;color:var(--muted);font-size:.8rem;text-transform:uppercase;letter-spacing:.08em}
.lede{color:var(--muted);font-size:.95rem}
.digest{background:var(--info-bg);border:1px solid #b6d3f2;border-radius:8px;padding:.6rem .8rem;margin:.8rem 0}
.digest span{display:block;font-size:.8rem;font-weight:600;color:var(--accent)}
.digest code{background:none;border:0;padding:0;font-size:.85rem}
dl.kv{display:grid;grid-template-columns:minmax(7rem,12rem) 1fr;gap:.25rem 1rem;margin:.5rem 0 1rem}
dl.kv dt{color:var(--muted);font-size:.9rem}
dl.kv dd{margin:0;overflow-wrap:anywhere}
@media (max-width:34rem){dl.kv{grid-template-columns:6.5rem 1fr;gap:.3rem .7rem}
dl.kv dt{font-size:.8rem;line-height:1.3;padding-top:.15rem}}
.stats{display:grid;grid-template-columns:repeat(auto-fit,minmax(8.5rem,1fr));gap:.5rem;padding:0;margin:1rem 0;list-style:none}
.stats li{background:var(--soft);border:1px solid var(--line);border-radius:8px;padding:.4rem .65rem}
.stats b{display:block;font-size:1.25rem;line-height:1.2}
.stats span{font-size:.8rem;color:var(--muted)}
.stats .bad{background:var(--crit-bg);border-color:#f4b8b2}
.stats .good{background:var(--ok-bg);border-color:#b5dfc0}
.signoff{border:2px solid var(--fg);border-radius:8px;padding:.4rem 1rem 1rem;margin:1.5rem 0}
.signoff h2{border:0;margin-top:.6em}
.signoff table td{height:2.4rem;min-width:10rem}
.signoff table td:first-child{width:11rem;min-width:7rem}
nav details{background:var(--soft);border:1px solid var(--line);border-radius:8px;padding:.5rem .9rem}
nav summary{cursor:pointer;font-weight:600}
nav ol{padding-left:1.2rem;margin:.4rem 0}
nav li{margin:.15rem 0}
nav ol ol{font-size:.9rem}
.table-wrap{overflow-x:auto;-webkit-overflow-scrolling:touch;margin:.4rem 0 1rem;border:1px solid var(--line);border-radius:6px}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border-bottom:1px solid var(--line);padding:.4rem .55rem;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600}
tr:last-child td{border-bottom:0}
td.wide{min-width:15rem}
td.idlist{min-width:17rem;font-size:.85rem}
td.idlist a{display:block;margin:.1rem 0}
td.nowrap,th.nowrap{white-space:nowrap}
.ok{color:var(--ok);font-weight:600}
.bad{color:var(--crit);font-weight:700}
.muted{color:var(--muted)}
.pack-head{background:var(--soft);border:1px solid var(--line);border-radius:8px;padding:.2rem 1rem .6rem;margin:2rem 0 1rem}
.pack-head h2{border:0}
.rule{border:1px solid var(--line);border-left:6px solid var(--info);border-radius:8px;padding:.8rem 1rem;margin:1.2rem 0;
break-inside:avoid;page-break-inside:avoid}
.rule.critical{border-left-color:var(--crit)}
.rule.warning{border-left-color:#d4a72c}
.rule:target{box-shadow:0 0 0 3px #9cc3ee}
.rid{margin:0 0 .2rem;font-size:.9rem}
.rid code{font-weight:600}
.badges{display:flex;flex-wrap:wrap;gap:.3rem;list-style:none;padding:0;margin:.3rem 0 .6rem}
.badges li{font-size:.75rem;border-radius:999px;padding:.1rem .55rem;background:var(--soft);border:1px solid var(--line)}
.badges .critical{background:var(--crit-bg);color:var(--crit);border-color:#f4b8b2;font-weight:600}
.badges .warning{background:var(--warn-bg);color:var(--warn);border-color:#f0d48a;font-weight:600}
.badges .info{background:var(--info-bg);color:var(--info);border-color:#b6d3f2}
.badges .draft{background:var(--warn-bg);color:var(--warn);font-weight:700}
.logic{background:var(--soft);border-radius:6px;padding:.5rem .75rem;margin:.4rem 0}
.kw{font-weight:800;letter-spacing:.04em;margin:.2rem 0}
ul.tree{margin:.2rem 0 .2rem;padding-left:1.1rem}
ul.tree ul{padding-left:1.1rem;border-left:2px solid var(--line);margin:.2rem 0}
ul.tree li{margin:.25rem 0}
.formal{display:block;font-size:.8rem;color:var(--muted)}
.formal code{font-size:.95em}
ul.outputs{list-style:none;padding:0;margin:.2rem 0}
ul.outputs>li{margin:.45rem 0;padding-left:.1rem}
.otype{display:inline-block;font-size:.72rem;font-weight:700;text-transform:uppercase;letter-spacing:.05em;
background:var(--fg);color:#fff;border-radius:4px;padding:0 .4rem;margin-right:.35rem}
.detail{border-left:3px solid var(--line);margin:.35rem 0 .2rem;padding:.1rem .75rem;color:#2f363d;font-size:.93rem}
.detail ul{padding-left:1.2rem;margin:.3rem 0}
blockquote.quote{margin:.4rem 0;padding:.5rem .8rem;border-left:4px solid var(--accent);background:var(--info-bg);
border-radius:0 6px 6px 0;font-style:italic}
.mark{display:inline-block;font-size:.8rem;font-weight:700;border-radius:4px;padding:0 .4rem}
.mark.found{background:var(--ok-bg);color:var(--ok)}
.mark.not-found{background:var(--crit-bg);color:var(--crit)}
.mark.not-checked{background:var(--soft);color:var(--muted)}
.loc{font-size:.82rem;color:var(--muted)}
ul.plain{padding-left:1.2rem;margin:.2rem 0}
ul.scen{padding-left:1.2rem;margin:.2rem 0;font-size:.86rem}
ul.scen li{margin:.15rem 0}
ul.scen .loc code{background:none;border:0;padding:0}
.scen-h{font-size:.88rem;font-weight:600;margin:.4rem 0 .1rem}
ul.findings{list-style:none;padding:0}
ul.findings li{border:1px solid var(--line);border-left:5px solid var(--muted);border-radius:6px;
padding:.45rem .7rem;margin:.45rem 0;
break-inside:avoid;page-break-inside:avoid}
ul.findings li.problem{border-left-color:var(--crit);background:#fffafa}
ul.findings li.warning{border-left-color:#d4a72c}
ul.findings li.note{border-left-color:var(--info)}
.fkind{font-weight:700;margin-right:.4rem}
ul.findings p{margin:.15rem 0}
.fhead code{font-size:.75rem}
.fsee{font-size:.82rem}
.fsee a{display:inline-block;margin-right:.8rem;overflow-wrap:anywhere}
footer{margin-top:2rem;font-size:.85rem;color:var(--muted);border-top:1px solid var(--line);padding-top:.6rem}
@media print{
  @page{margin:14mm}
  body{background:#fff;font-size:11pt}
  main{max-width:none;margin:0;padding:0;box-shadow:none}
  nav,.noprint{display:none!important}
  a{color:inherit;text-decoration:none}
  .table-wrap{overflow:visible;border:0}
  table{font-size:9pt}
  .rule,.pack-head,.signoff,ul.findings li,tr{break-inside:avoid;page-break-inside:avoid}
  h2,h3,h4{break-after:avoid;page-break-after:avoid}
  .rule:target{box-shadow:none}
}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_EM = re.compile(r"(?<![\w*])[_*](?![\s_*])(.+?)(?<![\s_*])[_*](?![\w*])")


def _inline(text: str) -> str:
    """Escape, then the inline Markdown card texts use: `code`, **bold**, _emphasis_."""
    codes: list[str] = []

    def keep(m: re.Match[str]) -> str:
        codes.append(f"<code>{_e(m.group(1))}</code>")
        return f"\x00{len(codes) - 1}\x00"

    out = _e(_CODE.sub(keep, text))
    out = _BOLD.sub(r"<strong>\1</strong>", out)
    out = _EM.sub(r"<em>\1</em>", out)
    return re.sub(r"\x00(\d+)\x00", lambda m: codes[int(m.group(1))], out)


def _markdown_block(text: str) -> str:
    """The small Markdown of card details (paragraphs, `- ` lists, inline marks) as safe HTML."""
    parts: list[str] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.splitlines()
        if lines and lines[0].lstrip().startswith("- "):
            items: list[str] = []
            for line in lines:
                if line.lstrip().startswith("- "):
                    items.append(line.lstrip()[2:].strip())
                elif items:
                    items[-1] += " " + line.strip()
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
        else:
            parts.append(f"<p>{_inline(' '.join(line.strip() for line in lines))}</p>")
    return "".join(parts)


def _guidance_rules(encoded: tuple[str, ...], explained: tuple[str, ...]) -> str:
    parts = []
    for label, ids in (("encoded by", encoded), ("explained (rationale) by", explained)):
        if ids:
            parts.append(f'<span class="muted">{label}</span>'
                         + "".join(f'<a href="#{_e(anchor(i))}">{_e(i)}</a>' for i in ids))
    return f'<td class="idlist">{"".join(parts) or "<span class=bad>none</span>"}</td>'


def _link(rule_id: str) -> str:
    return f'<a href="#{_e(anchor(rule_id))}"><code>{_e(rule_id)}</code></a>'


def _links(ids: Iterable[str], empty: str = '<span class="muted">none</span>') -> str:
    """A table cell listing rules, one link per line."""
    ids = list(ids)
    body = "".join(f'<a href="#{_e(anchor(i))}">{_e(i)}</a>' for i in ids) if ids else empty
    return f'<td class="idlist">{body}</td>'


def _table(header: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "") -> str:
    """A table inside a horizontally scrolling box; cells are already HTML."""
    head = "".join(f'<th scope="col">{h}</th>' for h in header)
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    body = "".join("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="table-wrap"><table class="{cls}">{thead}<tbody>{body}</tbody></table></div>'


def _kv(rows: Iterable[tuple[str, str]]) -> str:
    return '<dl class="kv">' + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _h_clause(clause: Clause) -> str:
    if clause.field:
        body = (f'{_e(clause.text)}<span class="formal">(<code>{_e(clause.field)}</code> {_e(clause.formal)})</span>')
    else:
        body = _e(clause.text)
    if clause.children:
        body += '<ul>' + "".join(f"<li>{_h_clause(c)}</li>" for c in clause.children) + "</ul>"
    return body


def _h_output(out: Output) -> str:
    d = dict(out.items)
    tag = f'<span class="otype">{_e(out.kind)}</span>'
    if out.kind == "card":
        return (f'{tag}<strong>{_e(d["summary"])}</strong> <span class="muted">({_e(d["indicator"])})</span>'
                f'<div class="detail">{_markdown_block(d["detail"])}</div>')
    if out.kind == "finding":
        side = f', side <strong>{_e(d["side"])}</strong>' if "side" in d else ""
        return f'{tag}<code>{_e(d["code"])}</code>{side}: {_e(d["text"])}'
    if out.kind == "referral":
        return f'{tag}to <strong>{_e(d["to"])}</strong> ({_e(d["timeframe"])}): {_e(d["reason"])}'
    if out.kind == "exercise":
        return (f'{tag}<strong>{_e(d["name"])}</strong> <code>{_e(d["id"])}</code>: targets {_e(d["targets"])}; '
                f'{_e(d["sets"])}; {_e(d["reps"])}<div class="detail"><p>{_e(d["instructions"])}</p></div>')
    if out.kind == "relations":
        return tag + "; ".join(f"{_e(label)}: {_e(text)}" if label in PROSE_RELATIONS else
                               f"{_e(label)} {_links(text.split(', '))}" for label, text in out.items)
    if out.kind == "questions":
        return tag + "while unknown:<ul>" + "".join(f"<li><code>{_e(name)}</code>: {_e(reason)}</li>"
                                                    for name, reason in out.items) + "</ul>"
    phase = f'phase <strong>{_e(d["phase"])}</strong>' if "phase" in d else ""
    note = _e(d["note"]) if "note" in d else ""
    return f'{tag}{phase}{": " if phase and note else ""}{note}'


def _h_scenarios(title: str, refs: tuple[ScenarioRef, ...]) -> str:
    if not refs:
        return f'<p class="scen-h">{_e(title)}: <span class="bad">none</span></p>'
    def item(ref: ScenarioRef) -> str:
        params = ", ".join(f"{k}={v}" for k, v in ref.parameters.items())
        extra = f' <span class="muted">with {_e(params)}</span>' if params else ""
        return f'<li>{_e(ref.name)}{extra} <span class="loc"><code>{_e(ref.where)}</code></span></li>'

    items = "".join(item(r) for r in refs)
    return f'<p class="scen-h">{_e(title)} ({len(refs)})</p><ul class="scen">{items}</ul>'


def _h_rule(e: RuleEntry, scenarios_given: bool) -> str:
    r = e.rule
    badges = [(r.status, "draft" if r.status == "draft" else ""), (r.category, ""), (r.indicator, r.indicator),
              (f"urgency: {r.urgency}", ""), (f"priority {r.priority}", "")]
    parts = [f'<article class="rule {_e(r.indicator)}" id="{_e(e.anchor)}">',
             f'<p class="rid"><code>{_e(r.id)}</code></p><h3>{_e(r.title)}</h3>',
             '<ul class="badges">' + "".join(f'<li class="{_e(c)}">{_e(t)}</li>' for t, c in badges) + "</ul>"]
    cond = e.condition
    parts.append('<div class="logic"><p class="kw">IF</p><ul class="tree"><li>' + _h_clause(cond) + "</li></ul>"
                 '<p class="kw">THEN</p><ul class="outputs">'
                 + "".join(f"<li>{_h_output(o)}</li>" for o in e.outputs) + "</ul></div>")
    if e.parameters:
        parts.append("<h4>Parameters</h4>" + _table(
            ["name", "value", "unit", "origin"],
            [[f'<a href="#param-{_e(p.name)}"><code>{_e(p.name)}</code></a>', _e(p.value), _e(p.unit or ""),
              _e(p.origin)] for p in e.parameters]))
    parts.append("<h4>Guidance</h4><ul class=\"plain\">" + "".join(
        f'<li><a href="#guidance-{_e(g.id)}">{_e(g.id)}</a> <span class="muted">({_e(g.kind)})</span>: {_e(g.text)}</li>'
        for g in e.guidance) + "</ul>")
    if r.rationale:
        parts.append("<h4>Rationale</h4><ul class=\"plain\">" + "".join(
            f'<li><a href="#guidance-{_e(x.guidance)}">{_e(x.guidance)}</a>: {_e(" ".join(x.text.split()))}</li>'
            for x in r.rationale) + "</ul>")
    mark = f'<span class="mark {_e(e.quote_status)}">{_e(QUOTE_MARK[e.quote_status])}</span>'
    parts.append(f"<h4>Source</h4><p>Section: <strong>{_e(r.section)}</strong> {mark}</p>"
                 f'<blockquote class="quote">{_e(r.quote)}</blockquote>'
                 f'<p class="loc">quote at <code>{_e(e.quote_where)}</code></p>')
    if scenarios_given:
        parts.append("<h4>Scenarios</h4>" + _h_scenarios("Must fire in", e.positive)
                     + _h_scenarios("Must not fire in", e.negative))
    parts.append(f'<p class="loc">Rule defined at <code>{_e(e.where)}</code> · pack <code>{_e(r.pack)}</code></p></article>')
    return "".join(parts)


def _h_finding(f: Finding) -> str:
    rules = " ".join(f'<a href="#{_e(anchor(r))}">{_e(r)}</a>' for r in f.rules)
    return (f'<li class="{_e(f.severity)}"><p class="fhead"><span class="fkind">{_e(f.kind)}</span> '
            f'<code class="loc">{_e(f.where)}</code></p><p>{_e(f.message)}</p>'
            + (f'<p class="fsee">Go to: {rules}</p>' if rules else "") + "</li>")


def _stat(value: Any, label: str, cls: str = "") -> str:
    return f'<li class="{cls}"><b>{_e(value)}</b><span>{_e(label)}</span></li>'


def to_html(audit: Audit) -> str:
    """The rulebook as one self-contained HTML page (no external resources, no scripts)."""
    c = audit.counts
    title = f"Rulebook: {audit.title}"
    out: list[str] = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="cdss-rule-set-digest" content="{_e(audit.digest)}">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        '<header id="top">',
        f'<p class="kicker">Rulebook for clinical review · cdss {_e(audit.cdss_version)}</p>',
        f"<h1>{_e(audit.title)}</h1>",
    ]
    if audit.description:
        out.append(f'<p class="lede">{_e(" ".join(audit.description.split()))}</p>')
    out.append(f'<div class="digest"><span>Rule set digest: a result belongs to this rulebook only if its '
               f'<code>rule_set.digest</code> is</span><code id="digest">{_e(audit.digest)}</code></div>')
    cited = f"<em>{_e(audit.source_title)}</em>"
    if audit.source_cited_files:
        cited += f" (<code>{_e(', '.join(audit.source_cited_files))}</code>)"
    source_given = (f'<code>{_e(audit.source_file)}</code>' if audit.source_given
                    else '<span class="bad">nothing</span>: no source declared in ruleset.yaml or given; '
                         'quotes and sections not checked')
    quotes_cls = "good" if audit.source_given and not c["quotes_not_found"] else ("bad" if c["quotes_not_found"] else "")
    out.append('<ul class="stats">'
               + _stat(c["rules"], f"rules in {c['packs']} packs")
               + _stat(f"{c['guidance_covered']}/{c['guidance']}", "guidance rows covered",
                       "good" if c["guidance_covered"] == c["guidance"] else "bad")
               + _stat(f"{c['quotes_found']}/{c['rules']}" if audit.source_given else "—",
                       "quotes found verbatim" if audit.source_given else "quotes not checked", quotes_cls)
               + (_stat(f"{c['rules_with_both_scenarios']}/{c['rules']}", "rules tested both ways",
                        "good" if c["rules_with_both_scenarios"] == c["rules"] else "bad") if audit.scenarios_dir else "")
               + _stat(c["parameters"], "parameters")
               + _stat(c["findings_problem"], "problems", "bad" if c["findings_problem"] else "good")
               + _stat(c["findings_warning"], "warnings", "bad" if c["findings_warning"] else "good")
               + _stat(c["findings_note"], "notes to confirm")
               + "</ul>")
    out.append(_kv([
        ("Rule set", f"<code>{_e(audit.rule_set_id)}</code>"), ("Version", _e(audit.version)),
        ("cdss version", _e(audit.cdss_version)), ("Source", cited),
        ("Quotes checked against", source_given),
        ("Scenario files", f"<code>{_e(audit.scenarios_dir)}</code> ({audit.scenario_count} scenarios)"
         if audit.scenarios_dir else "none given"),
    ]))
    out.append("</header>")

    out.append('<section class="signoff" id="sign-off"><h2>Sign-off</h2>'
               f"<p>I have reviewed every rule of rule set <code>{_e(audit.rule_set_id)}</code> version "
               f"{_e(audit.version)}, digest <code>{_e(audit.digest)}</code>.</p>"
               + _table([], [[f"<strong>{k}</strong>", v] for k, v in (
                   ("Reviewer name", ""), ("Role / registration", ""), ("Date", ""),
                   ("Decision", "☐ approved for clinical use<br>☐ changes requested"), ("Signature", ""))])
               + "</section>")

    toc = ['<nav id="contents" aria-label="Contents"><details><summary>Contents: '
           f'{c["rules"]} rules in {c["packs"]} packs, findings, coverage</summary><ol>',
           '<li><a href="#how-to-read">How to read this rulebook</a></li>',
           f'<li><a href="#findings">Findings ({c["findings"]})</a></li>']
    for p in audit.packs:
        toc.append(f'<li><a href="#pack-{_e(p.pack.id)}">{_e(p.pack.title)}</a> <span class="muted">({len(p.rules)})</span><ol>'
                   + "".join(f'<li><a href="#{_e(e.anchor)}">{_e(e.rule.title)}</a></li>' for e in p.rules) + "</ol></li>")
    toc.append('<li><a href="#coverage">Coverage</a></li></ol></details></nav>')
    out.append("".join(toc))

    out.append('<section id="how-to-read"><h2>How to read this rulebook</h2><ul class="plain">'
               + "".join(f"<li>{_inline(t)}</li>" for t in HOW_TO_READ) + "</ul></section>")

    review = audit.review or {}
    pending = ", ".join(review.get("pending_packs", []))
    coherence = ['<section id="coherence" style="overflow-wrap:anywhere"><h2>What every result also says</h2>',
                 f'<p><strong>Review status:</strong> {_e(review.get("status", "unknown"))}'
                 + (f" (pending: {_e(pending)})" if pending else "") + "</p>"]
    if audit.scope is not None:
        coherence.append(f"<p><strong>Scope:</strong> {_e(audit.scope.statement)}</p><p>Not covered:</p><ul>"
                         + "".join(f"<li>{_e(item)}</li>" for item in audit.scope.not_covered) + "</ul>")
    coherence.append("<p><strong>Contradictory answers</strong> (listed in <code>conflicts</code>; the rules read "
                     "these fields as unknown):</p><ul>" + ("".join(
                         f"<li><code>{_e(c.id)}</code> ({_e(', '.join(c.fields))}): {_e(c.message)}</li>"
                         for c in audit.conflicts) or "<li>none declared</li>") + "</ul></section>")
    out.append("".join(coherence))
    out.append(f'<section id="findings"><h2>Findings ({c["findings"]})</h2>')
    if not audit.findings:
        out.append("<p>No findings.</p>")
    for sev in SEVERITIES:
        items = [f for f in audit.findings if f.severity == sev]
        if items:
            out.append(f"<h3>{_e(SEVERITY_TITLE[sev])}: {len(items)}</h3><ul class=\"findings\">"
                       + "".join(_h_finding(f) for f in items) + "</ul>")
    out.append("</section>")

    out.append('<section id="rules">')
    for p in audit.packs:
        meta = p.pack.metadata
        rows = [(k, _e(v)) for k, v in _pack_meta(meta)] + [("Defined at", f"<code>{_e(p.where)}</code>")]
        out.append(f'<section class="pack" id="pack-{_e(p.pack.id)}"><div class="pack-head">'
                   f'<h2>Pack: {_e(p.pack.title)}</h2><p class="rid"><code>{_e(p.pack.id)}</code></p>'
                   + (f'<p>{_e(" ".join(str(meta["description"]).split()))}</p>' if meta.get("description") else "")
                   + _kv(rows) + "</div>")
        out.extend(_h_rule(e, audit.scenarios_dir is not None) for e in p.rules)
        out.append("</section>")
    out.append("</section>")

    out.append('<section id="coverage"><h2>Coverage</h2><h3>Guidance catalogue</h3>')
    out.append('<p class="muted">A <em>rule</em> row is covered when a rule encodes it; a <em>context</em> row when a '
               "rule gives it as rationale.</p>")
    out.append(_table(["id", "covered", "kind", "statement", "rules"], [
        [f'<td id="guidance-{_e(g.item.id)}" class="nowrap"><strong>{_e(g.item.id)}</strong></td>',
         '<span class="ok">✓</span>' if g.covered else '<span class="bad">✗&nbsp;NOT COVERED</span>', _e(g.item.kind),
         f'<td class="wide">{_e(g.item.text)}</td>',
         _guidance_rules(g.encoded_by, g.explained_by)]
        for g in audit.guidance]))
    out.append("<h3>Source sections</h3>")
    if not audit.source_given:
        out.append('<p class="muted">No source file given: these are the sections the rules cite, '
                   "not checked against the source.</p>")
    in_source = {True: '<span class="ok">✓</span>', False: '<span class="bad">✗ NOT A HEADING</span>', None: "not checked"}
    out.append(_table(["section", "in the source", "rules citing it"], [
        [f'<td class="wide">{_e(s.heading)}</td>', in_source[s.in_source],
         _links(s.rules)] for s in audit.sections]))
    out.append("<h3>Scenario coverage</h3>")
    if audit.scenarios_dir is None:
        out.append("<p>No scenario files given.</p>")
    elif not audit.scenario_gaps:
        out.append(f'<p><span class="ok">✓</span> Every rule has at least one scenario where it must fire and one where it '
                   f"must not ({audit.scenario_count} scenarios).</p>")
    else:
        out.append(_table(["rule", "must fire", "must not fire"], [
            [_link(g.rule), _e(g.positive) if g.positive else '<span class="bad">✗ none</span>',
             _e(g.negative) if g.negative else '<span class="bad">✗ none</span>'] for g in audit.scenario_gaps]))
    out.append("<h3>Parameters</h3>")
    out.append(_table(["name", "origin", "default", "in force", "unit", "bounds", "guidance", "used by", "defined at"], [
        [f'<td id="param-{_e(p.parameter.name)}"><code>{_e(p.parameter.name)}</code><br>'
         f'<span class="muted">{_e(" ".join(p.parameter.description.split()))}</span></td>',
         _e(p.parameter.origin), _e(p.parameter.default), _e(p.value), _e(p.parameter.unit or ""), _e(_bounds(p.parameter)),
         _e(", ".join(p.parameter.guidance)), _links(p.used_by, '<span class="bad">✗ unused</span>'),
         f"<code>{_e(p.where)}</code>"] for p in audit.parameters]))
    out.append("</section>")
    out.append(f'<footer>Rulebook of <code>{_e(audit.rule_set_id)}</code> {_e(audit.version)}, digest '
               f'<code>{_e(audit.digest)}</code>, made by cdss {_e(audit.cdss_version)}. '
               '<a class="noprint" href="#top">Back to top</a></footer>')
    out.append("\n</main>\n</body>\n</html>\n")
    return "".join(out)
