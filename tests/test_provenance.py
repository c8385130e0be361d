"""Every rule cites its source verbatim, and every statement of the guidance inventory is covered.

The source and the inventory ship with the rule set (rules/sources/, declared in
rules/ruleset.yaml), so these checks, like every load, need nothing outside the repository.
"""

from __future__ import annotations

import re

import pytest

import cdss
from cdss.audit import headings, section_of
from tests.conftest import inventory_path



@pytest.fixture(scope="module")
def inventory() -> dict[str, str]:
    path = inventory_path()
    if not path.is_file():
        pytest.fail(f"guidance inventory not found at {path}: the rule set ships it in rules/sources/")
    rows = re.findall(r"^\| (G-[A-Z]+-\d+) \| (rule|context)\b", path.read_text(encoding="utf-8"), re.M)
    assert rows, "no inventory rows parsed"
    return dict(rows)


def test_every_quote_occurs_verbatim_in_the_source(bundled: cdss.RuleSet, source_text: str) -> None:
    missing = [f"{r.id}: {r.quote!r}" for r in bundled.rules if r.quote not in source_text]
    assert missing == []


def test_quotes_keep_the_sources_typography(bundled: cdss.RuleSet, source_text: str) -> None:
    """A straight apostrophe where the source has a curly one is not a verbatim quote."""
    for rule in bundled.rules:
        for straight, curly in (("'", "’"), ('"', "“")):
            if straight in rule.quote:
                assert rule.quote.replace(straight, curly) not in source_text, rule.id


def test_every_section_is_a_heading_of_the_source(bundled: cdss.RuleSet, source_text: str) -> None:
    titles = set(headings(source_text))
    assert "When Glute Strengthening Isn’t Enough" in titles
    wrong = [f"{r.id}: {r.section!r}" for r in bundled.rules if r.section not in titles]
    assert wrong == []


def test_every_quote_lies_in_the_section_it_names(bundled: cdss.RuleSet, source_text: str) -> None:
    titles = headings(source_text)
    for rule in bundled.rules:
        assert section_of(source_text, titles, rule.quote) == rule.section, rule.id


def test_catalogue_matches_the_inventory(bundled: cdss.RuleSet, inventory: dict[str, str]) -> None:
    catalogue = {g.id: g.kind for g in bundled.loaded.guidance.values()}
    assert catalogue == inventory


def test_every_rule_row_is_encoded_by_a_rule(bundled: cdss.RuleSet, inventory: dict[str, str]) -> None:
    encoded = {gid for rule in bundled.rules for gid in rule.guidance}
    uncovered = sorted(gid for gid, kind in inventory.items() if kind == "rule" and gid not in encoded)
    assert uncovered == []


def test_every_context_row_is_rationale_on_some_rule(bundled: cdss.RuleSet, inventory: dict[str, str]) -> None:
    explained = {r.guidance for rule in bundled.rules for r in rule.rationale}
    uncovered = sorted(gid for gid, kind in inventory.items() if kind == "context" and gid not in explained)
    assert uncovered == []


def test_rules_cite_rule_rows_and_rationale_cites_context_rows(bundled: cdss.RuleSet, inventory: dict[str, str]) -> None:
    for rule in bundled.rules:
        for gid in rule.guidance:
            assert inventory[gid] == "rule", f"{rule.id} encodes {gid}, a context row: put it under rationale"


def test_summaries_fit_cds_hooks(bundled: cdss.RuleSet) -> None:
    for rule in bundled.rules:
        card = rule.then.get("card")
        if card:
            assert 0 < len(card["summary"]) < 140, rule.id
