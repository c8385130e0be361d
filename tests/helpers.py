"""Small builders shared by tests: rule packs written to a temporary directory, patients."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

ALL_NO = {"numbness_or_tingling_radiating_down_leg": False, "significant_leg_weakness": False,
          "sudden_bladder_or_bowel_control_loss": False}

PACK_HEADER = """\
pack:
  id: test-pack
  title: Test pack
  version: 0.1.0
  status: active
  authors: [cdss tests]
  clinical_reviewer: {name: Not for clinical use}
  dates: {created: "2026-11-26"}
  source: {title: "Do Weak Glutes Cause Back Pain?"}
"""

RULE_TEMPLATE = """\
  - id: {id}
    title: {id}
    category: sign
    indicator: info
    urgency: self-care
    priority: 10
    guidance: [G-SIGN-1]
    source: {{section: Signs That Glute Weakness Is Contributing to Pain, quote: pain that intensifies}}
    when: {when}
    then:
      card: {{summary: "{id} fired", detail: detail}}
"""


def write_rule_set(tmp: Path, body: str, *, manifest: bool = True, name: str = "pack.yaml") -> Path:
    """Write a one-pack rule set; `body` is YAML placed after the pack header."""
    tmp.mkdir(parents=True, exist_ok=True)
    if manifest:
        (tmp / "ruleset.yaml").write_text("rule_set:\n  id: test-set\n  title: Test set\n  version: 0.0.1\n", encoding="utf-8")
    (tmp / name).write_text(PACK_HEADER + textwrap.dedent(body), encoding="utf-8")
    return tmp


def rules_body(rules: dict[str, str], parameters: str = "") -> str:
    """A `rules:` section with one card rule per (id, flow-style `when`)."""
    out = parameters + "rules:\n"
    for rule_id, when in rules.items():
        out += RULE_TEMPLATE.format(id=rule_id, when=when)
    return out


def patient(**sections: Any) -> dict[str, Any]:
    """A patient with every red flag answered no, plus the given sections."""
    doc: dict[str, Any] = {"red_flags": dict(ALL_NO)}
    doc.update(sections)
    return doc


def documented_answers(fact: dict[str, Any]) -> str:
    """docs/SERVICE.md "Card UUIDs": every field's flat value in schema order, an integer's known flag
    after it, joined by | (written here from the docs and the field catalogue, not from the code)."""
    from cdss.fields import patient_fields

    values = []
    for fld in patient_fields().values():
        values.append(str(fact[fld.key]))
        if fld.kind == "integer":
            values.append(fact[fld.key + "__known"])
    return "|".join(values)
