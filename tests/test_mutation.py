"""The safety net catches broken rules: mutate a copy of the bundled rules, expect an invariant to fail.

Each mutation weakens one safety rule the way a careless edit would: delete a red-flag rule,
lower its indicator or its urgency, delete a screening rule, or flip `is: true` to
`is: false` in a red-flag condition. The broken copy is loaded (it is still a valid rule
set: the loader cannot know clinical intent) and hypothesis searches the generated
documents for one that breaks an invariant, running exactly the check functions of
tests/invariants.py that tests/test_safety_properties.py runs on the bundled rules. The
minimal document found must pass the same checks under the unmutated rules.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, Phase, find, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

import cdss
from cdss.resources import examples_dir, rules_dir
from tests.invariants import PER_DOCUMENT_CHECKS, violations
from tests.strategies import ABSENT, coherence_patients, patients_with_screening, put, red_flag_paths, valid_patients

RULES = cdss.load_rules()  # loaded once per module

RED_FLAG_RULES = sorted(r.id for r in RULES.rules if r.category == "emergency")
SCREENING_RULES = sorted(r.id for r in RULES.rules if r.category == "screening")

SEARCH = st.one_of(valid_patients(), patients_with_screening("positive"), patients_with_screening("incomplete"),
                   patients_with_screening("negative"))
# No shrinking: any document that breaks an invariant proves the net bites, and shrinking it to a
# minimal one cost most of this file's time (26 s for one mutant). The witness is still checked
# against the unmutated rules below.
SEARCH_SETTINGS = settings(max_examples=5000, derandomize=True, database=None, deadline=None,
                           suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])


# ------------------------------------------------------------------ editing a copy of the rules


def rule_block(text: str, rule_id: str) -> tuple[int, int]:
    start = text.index(f"  - id: {rule_id}\n")
    nxt = text.find("\n  - id: ", start + 1)
    return start, len(text) if nxt < 0 else nxt + 1


def edit_rule(root: Path, rule_id: str, change: Callable[[str], str]) -> None:
    """Apply `change` to the text of one rule (its `- id:` line up to the next rule) in its pack."""
    pack = root / Path(RULES.rule(rule_id).where.file).name
    text = pack.read_text(encoding="utf-8")
    start, end = rule_block(text, rule_id)
    block = text[start:end]
    changed = change(block)
    assert changed != block, f"the mutation did not change rule {rule_id}"
    pack.write_text(text[:start] + changed + text[end:], encoding="utf-8")


def replace_once(old: str, new: str) -> Callable[[str], str]:
    def change(block: str) -> str:
        assert block.count(old) == 1, f"{old!r} occurs {block.count(old)} times"
        return block.replace(old, new)
    return change


def when_is_true_to_false(block: str) -> str:
    head, sep, tail = block.partition("    when:")
    then_at = tail.index("    then:")
    condition = tail[:then_at]
    assert "is: true" in condition
    return head + sep + condition.replace("is: true", "is: false") + tail[then_at:]


MUTATIONS: dict[str, Callable[[str], str]] = {
    "delete the red-flag rule": lambda block: "",
    "lower its indicator to warning": replace_once("indicator: critical", "indicator: warning"),
    "lower its urgency to see-professional": replace_once("urgency: emergency", "urgency: see-professional"),
    "lower its urgency to self-care": replace_once("urgency: emergency", "urgency: self-care"),
    "flip is: true to is: false in its condition": when_is_true_to_false,
}

CASES = [pytest.param(rule_id, name, MUTATIONS[name], id=f"{rule_id}: {name}")
         for rule_id, name in itertools.product(RED_FLAG_RULES, MUTATIONS)]
CASES += [pytest.param(rule_id, "delete the screening rule", lambda block: "", id=f"{rule_id}: delete")
          for rule_id in SCREENING_RULES]
SIDED_RULES = sorted((r.id, r.then["finding"]["side"]) for r in RULES.rules if "side" in r.then.get("finding", {}))
CASES += [pytest.param(rule_id, "name the wrong side",
                       replace_once(f"side: {side}", "side: " + ("right" if side == "left" else "left")),
                       id=f"{rule_id}: wrong side") for rule_id, side in SIDED_RULES]


def mutated(tmp_path: Path, rule_id: str, change: Callable[[str], str]) -> cdss.RuleSet:
    root = tmp_path / "rules"
    shutil.copytree(rules_dir(), root)
    edit_rule(root, rule_id, change)
    broken = cdss.load_rules(root)  # still a valid rule set: only the invariants can tell
    assert broken.info.digest != RULES.info.digest
    return broken


def mutated_past_the_loader(tmp_path: Path, rule_id: str, change: Callable[[str], str],
                            monkeypatch: pytest.MonkeyPatch) -> cdss.RuleSet:
    """The broken rule set, even where the loader refuses it.

    First line of defence: the loader refuses an emergency rule that is not critical or does
    not ask for emergency, naming the rule and the line. The invariants are the second line:
    with that check switched off, they must catch the mutation too.
    """
    try:
        return mutated(tmp_path, rule_id, change)
    except cdss.RuleFileError as error:
        assert error.rule_id == rule_id and error.line is not None, str(error)
        assert "an emergency rule must" in str(error)
    from cdss import loader

    monkeypatch.setattr(loader, "_check_safety_shape", lambda *args: None)
    shutil.rmtree(tmp_path / "rules")
    return mutated(tmp_path, rule_id, change)


# ------------------------------------------------------------------ the tests


def test_there_are_red_flag_screening_and_sided_rules_to_mutate() -> None:
    assert len(RED_FLAG_RULES) == len(red_flag_paths()) == len(SCREENING_RULES) == 3
    assert {side for _, side in SIDED_RULES} == {"left", "right"}


@pytest.mark.parametrize(("rule_id", "name", "change"), CASES)
def test_the_invariants_catch_a_broken_safety_rule(tmp_path: Path, rule_id: str, name: str,
                                                   change: Callable[[str], str], source_text: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    broken = mutated_past_the_loader(tmp_path, rule_id, change, monkeypatch)
    try:
        witness = find(SEARCH, lambda doc: bool(violations(broken, doc, source_text, first_only=True)),
                       settings=SEARCH_SETTINGS)
    except NoSuchExample:
        pytest.fail(f"no generated document breaks an invariant after '{name}' on {rule_id}: the safety net has a hole")
    caught = violations(broken, witness, source_text)
    print(f"\n{rule_id} / {name}\n  witness: {json.dumps(witness, sort_keys=True)}\n  caught by: {caught[0]}")
    assert caught
    assert violations(RULES, witness, source_text) == [], "the witness also fails on the unmutated rules"


def corpus() -> list[dict[str, Any]]:
    """The example patients plus every way to answer the three red flags (yes/no/null/absent)."""
    docs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((examples_dir() / "patients").glob("*.json"))]
    for values in itertools.product([True, False, None, ABSENT], repeat=3):
        for context in ({}, {"back_pain": {"present": True, "trend": "unchanged"}, "exercise": {"weeks_consistent": 6}}):
            doc: dict[str, Any] = dict(context)
            for path, value in zip(red_flag_paths(), values):
                doc = put(doc, path, value)
            docs.append(doc)
    return docs


def test_the_unmutated_rules_pass_the_same_checks_on_examples_and_every_red_flag_combination(source_text: str) -> None:
    broken = {json.dumps(doc, sort_keys=True): v for doc in corpus() if (v := violations(RULES, doc, source_text))}
    assert broken == {}


@pytest.mark.parametrize(("rule_id", "name", "change"), CASES)
def test_the_same_corpus_catches_every_mutation(tmp_path: Path, rule_id: str, name: str,
                                                 change: Callable[[str], str], source_text: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A second, deterministic net: the example patients and red-flag combinations alone catch it too."""
    broken = mutated_past_the_loader(tmp_path, rule_id, change, monkeypatch)
    assert any(violations(broken, doc, source_text, first_only=True) for doc in corpus()), (
        f"'{name}' on {rule_id} breaks no invariant on the corpus")


# ------------------------------------------------------------------ issue 17: relations, questions, conflicts, words

COHERENCE_SEARCH = st.one_of(coherence_patients(), patients_with_screening("positive"), SEARCH)


def breaks(check: Callable[..., None], rules: cdss.RuleSet, doc: dict[str, Any]) -> bool:
    """Does this one invariant fail for the document under these rules?"""
    try:
        check(rules, doc)
    except AssertionError:
        return True
    return False


def drop_line(prefix: str) -> Callable[[str], str]:
    """Remove the one line of a rule block that starts with `prefix` (after indentation)."""
    def change(block: str) -> str:
        lines = block.splitlines(keepends=True)
        hits = [i for i, line in enumerate(lines) if line.strip().startswith(prefix)]
        assert len(hits) == 1, f"{prefix!r} occurs {len(hits)} times"
        return "".join(lines[:hits[0]] + lines[hits[0] + 1:])
    return change


def drop_questions(block: str) -> str:
    """Remove a rule's whole `questions:` list."""
    start = block.index("    questions:\n")
    end = block.index("    when:\n", start)
    return block[:start] + block[end:]


def drop_gate_pain_condition(block: str) -> str:
    """`back_pain.present is false` weakened to `is known` (removing it outright the loader refuses: the rule
    declares a question on back_pain.present, which it would no longer read)."""
    old = "        - field: back_pain.present\n          is: false\n"
    assert block.count(old) == 1
    return block.replace(old, "        - field: back_pain.present\n          is: known\n")


def say_fires(block: str) -> str:
    old = "        detail: |\n"
    assert block.count(old) == 1
    at = block.index(old) + len(old)
    indent = block[at:].split("\n", 1)[0]
    indent = indent[:len(indent) - len(indent.lstrip())]
    return block[:at] + f"{indent}This rule fires on the answers given.\n\n" + block[at:]


COHERENCE_CASES = [
    pytest.param("escalation-pain-constant-or-worsening", drop_line("supersedes:"), "one referral per destination",
                 id="constant-or-worsening: drop supersedes"),
    pytest.param("progression-already-compound", drop_gate_pain_condition, "compound plan only when the gate is met",
                 id="already-compound: weaken 'back pain is false' in the gate"),
    pytest.param("escalation-pain-constant-or-worsening", drop_questions, "urgency-raising questions are asked",
                 id="constant-or-worsening: drop its questions"),
    pytest.param("escalation-persisting-pain-refer", drop_questions, "urgency-raising questions are asked",
                 id="refer: drop its questions"),
    pytest.param(RED_FLAG_RULES[0], drop_questions, "urgency-raising questions are asked",
                 id=f"{RED_FLAG_RULES[0]}: drop its question"),
    pytest.param("plan-activation-phase", say_fires, "card texts speak plainly", id="activation card says 'fires'"),
]


@pytest.mark.parametrize(("rule_id", "change", "invariant"), COHERENCE_CASES)
def test_the_coherence_invariants_catch_a_removed_relation_question_or_plain_word(
        tmp_path: Path, rule_id: str, change: Callable[[str], str], invariant: str, source_text: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    broken = mutated(tmp_path, rule_id, change)
    try:
        witness = find(COHERENCE_SEARCH, lambda doc: breaks(PER_DOCUMENT_CHECKS[invariant], broken, doc),
                       settings=SEARCH_SETTINGS)
    except NoSuchExample:
        pytest.fail(f"no generated document breaks '{invariant}' after the mutation of {rule_id}")
    print(f"\n{rule_id}\n  witness: {json.dumps(witness, sort_keys=True)}")
    assert violations(RULES, witness, source_text) == [], "the witness also fails on the unmutated rules"


@pytest.mark.parametrize("conflict_id", ["pain-absent-with-trend", "pain-absent-but-worse-when-standing",
                                         "no-exercise-with-weeks-consistent"])
def test_removing_a_documented_conflict_is_caught(tmp_path: Path, conflict_id: str, source_text: str) -> None:
    root = tmp_path / "rules"
    shutil.copytree(rules_dir(), root)
    manifest = root / "ruleset.yaml"
    text = manifest.read_text(encoding="utf-8")
    start = text.index(f"  - id: {conflict_id}\n")
    nxt = text.find("\n  - id: ", start + 1)
    end = len(text) if nxt < 0 else nxt + 1
    # comment lines just above the next entry belong to it; cut the entry only
    manifest.write_text(text[:start] + text[end:], encoding="utf-8")
    broken = cdss.load_rules(root)
    assert conflict_id not in {c.id for c in broken.loaded.conflicts}
    try:
        witness = find(COHERENCE_SEARCH, lambda doc: breaks(PER_DOCUMENT_CHECKS["conflicts exactly when documented"],
                                                            broken, doc), settings=SEARCH_SETTINGS)
    except NoSuchExample:
        pytest.fail(f"removing conflict {conflict_id} breaks no invariant")
    assert violations(RULES, witness, source_text) == []


@pytest.mark.parametrize("invariant", ["emergency stands alone", "emergency carries one referral"])
def test_removing_the_emergency_tier_is_caught(tmp_path: Path, invariant: str, source_text: str) -> None:
    """Without `stands_alone: [emergency]` an emergency shows lower cards (and escalation referrals) again."""
    root = tmp_path / "rules"
    shutil.copytree(rules_dir(), root)
    manifest = root / "ruleset.yaml"
    text = manifest.read_text(encoding="utf-8")
    assert text.count("stands_alone: [emergency]\n") == 1
    manifest.write_text(text.replace("stands_alone: [emergency]\n", ""), encoding="utf-8")
    broken = cdss.load_rules(root)
    assert broken.loaded.stands_alone == ()
    try:
        witness = find(COHERENCE_SEARCH, lambda doc: breaks(PER_DOCUMENT_CHECKS[invariant], broken, doc),
                       settings=SEARCH_SETTINGS)
    except NoSuchExample:
        pytest.fail(f"removing the emergency tier breaks no '{invariant}'")
    assert violations(RULES, witness, source_text) == []


def test_the_loader_warns_about_internal_words_on_cards(tmp_path: Path) -> None:
    """First line of defence for plain words: a loader warning naming file:line and the rule
    (`cdss validate --strict` fails on it; a warning, so older rule sets still load for `cdss diff`)."""
    root = tmp_path / "rules"
    shutil.copytree(rules_dir(), root)
    edit_rule(root, "plan-activation-phase", say_fires)
    from cdss.loader import collect

    loaded, problems = collect(root)
    words = [p for p in problems if "speak plainly" in p.message]
    assert loaded is not None and words and all(p.severity == "warning" for p in words)
    assert words[0].rule_id == "plan-activation-phase" and words[0].line is not None
