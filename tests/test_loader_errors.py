"""A rule author gets file:line:col, the rule id, what is wrong and the nearest valid name."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import cdss
from cdss.loader import collect
from tests.helpers import PACK_HEADER, rules_body, write_rule_set

GOOD_WHEN = "{field: back_pain.present, is: true}"


def load_error(tmp_path: Path, body: str) -> cdss.RuleFileError:
    write_rule_set(tmp_path, body)
    with pytest.raises(cdss.RuleFileError) as info:
        cdss.load_rules(tmp_path)
    return info.value


def line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def test_a_valid_fixture_loads_without_problems(tmp_path: Path) -> None:
    write_rule_set(tmp_path, rules_body({"ok-rule": GOOD_WHEN}))
    loaded, problems = collect(tmp_path)
    assert loaded is not None and problems == []


def test_misspelled_field_names_file_line_rule_and_nearest_field(tmp_path: Path) -> None:
    error = load_error(tmp_path, rules_body({"typo-rule": "{field: back_pain.presnt, is: true}"}))
    pack = tmp_path / "pack.yaml"
    assert error.file.endswith("pack.yaml")
    assert error.line == line_of(pack, "back_pain.presnt")
    assert error.rule_id == "typo-rule"
    assert "did you mean 'back_pain.present'" in str(error)
    assert str(error).startswith(f"{error.file}:{error.line}:")


def test_unknown_operator_suggests_the_right_one(tmp_path: Path) -> None:
    error = load_error(tmp_path, rules_body({"op-rule": "{field: back_pain.present, iss: true}"}))
    assert "unknown operator 'iss'" in str(error) and "did you mean 'is'" in str(error)
    assert error.rule_id == "op-rule"


def test_unknown_rule_key_is_reported_at_its_line(tmp_path: Path) -> None:
    body = rules_body({"key-rule": GOOD_WHEN}).replace("    priority: 10\n", "    priority: 10\n    urgencyy: emergency\n")
    error = load_error(tmp_path, body)
    assert error.line == line_of(tmp_path / "pack.yaml", "urgencyy")
    assert "unknown key 'urgencyy'" in str(error) and "did you mean 'urgency'" in str(error)
    assert error.rule_id == "key-rule"


def test_duplicate_rule_id(tmp_path: Path) -> None:
    body = rules_body({"same": GOOD_WHEN}) + rules_body({"same": GOOD_WHEN}).replace("rules:\n", "")
    error = load_error(tmp_path, body)
    assert "rule id 'same' is already used" in str(error)
    assert error.line == [n for n, line in enumerate((tmp_path / "pack.yaml").read_text().splitlines(), 1)
                          if "- id: same" in line][1]


def test_undeclared_parameter(tmp_path: Path) -> None:
    error = load_error(tmp_path, rules_body({"p-rule": "{field: exercise.weeks_consistent, gte: {param: refer_weeks}}"}))
    assert "parameter 'refer_weeks' is not declared" in str(error) and error.rule_id == "p-rule"


def test_parameter_near_miss_is_suggested(tmp_path: Path) -> None:
    params = ("parameters:\n  refer_weeks:\n    type: integer\n    default: 6\n    origin: policy\n"
              "    description: weeks\n")
    error = load_error(tmp_path, rules_body({"p-rule": "{field: exercise.weeks_consistent, gte: {param: refer_week}}"}, params))
    assert "did you mean 'refer_weeks'" in str(error)


def test_unknown_guidance_id(tmp_path: Path) -> None:
    body = rules_body({"g-rule": GOOD_WHEN}).replace("[G-SIGN-1]", "[G-SIGN-9]")
    error = load_error(tmp_path, body)
    assert "guidance id 'G-SIGN-9' is not in the catalogue" in str(error)


def test_operator_must_suit_the_field_type(tmp_path: Path) -> None:
    error = load_error(tmp_path, rules_body({"t-rule": "{field: back_pain.present, gte: 3}"}))
    assert "yes/no question" in str(error)
    error = load_error(tmp_path, rules_body({"t-rule": "{field: back_pain.trend, equals: worse}"}))
    assert "'worse' is not a value of back_pain.trend" in str(error)
    error = load_error(tmp_path, rules_body({"t-rule": "{field: exercise.weeks_consistent, gte: six}"}))
    assert "compare it with a number" in str(error)


def test_summary_over_139_characters(tmp_path: Path) -> None:
    body = rules_body({"long-rule": GOOD_WHEN}).replace('"long-rule fired"', '"' + "x" * 150 + '"')
    error = load_error(tmp_path, body)
    assert "fewer than 140" in str(error) and error.rule_id == "long-rule"


def test_placeholder_for_undeclared_parameter(tmp_path: Path) -> None:
    body = rules_body({"ph-rule": GOOD_WHEN}).replace('"ph-rule fired"', '"after {{ params.nope }} weeks"')
    error = load_error(tmp_path, body)
    assert "undeclared parameter 'nope'" in str(error)


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    body = rules_body({"a-rule": "{field: back_pain.presnt, is: true}", "b-rule": "{field: symptoms.deep_ache, is: true}"})
    error = load_error(tmp_path, body)
    assert len(error.problems) == 2
    assert {p.rule_id for p in error.problems} == {"a-rule", "b-rule"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: &x [1, 2]\nb: *x\n", "aliases"),
        ("pack: !!python/object/apply:os.system ['echo pwned']\n", "tag"),
        ("rules: 1\nrules: 2\n", "duplicate key 'rules'"),
        ("rules: [1, 2\n", "invalid YAML"),
        ("", "empty"),
    ],
)
def test_hostile_or_broken_yaml_is_a_rule_file_error_with_a_line(tmp_path: Path, text: str, expected: str) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "ruleset.yaml").write_text("rule_set: {id: t, title: t, version: 0.0.1}\n")
    (tmp_path / "pack.yaml").write_text(text)
    with pytest.raises(cdss.RuleFileError) as info:
        cdss.load_rules(tmp_path)
    assert expected in str(info.value)
    assert info.value.file.endswith("pack.yaml")


def test_python_tag_never_executes(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "ruleset.yaml").write_text("rule_set: {id: t, title: t, version: 0.0.1}\n")
    (tmp_path / "pack.yaml").write_text(f"pack: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(cdss.RuleFileError):
        cdss.load_rules(tmp_path)
    assert not marker.exists()


def test_alias_bomb_is_rejected_quickly(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i-1}"] * 9) + "]" for i in range(1, 10)]
    (tmp_path / "ruleset.yaml").write_text("rule_set: {id: t, title: t, version: 0.0.1}\n")
    (tmp_path / "pack.yaml").write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    with pytest.raises(cdss.RuleFileError) as info:
        cdss.load_rules(tmp_path)
    assert "aliases" in str(info.value) and info.value.line == 2
    assert time.perf_counter() - started < 5  # a generous bound: expansion would take minutes and gigabytes


def test_ten_megabyte_file_is_refused_before_parsing(tmp_path: Path) -> None:
    (tmp_path / "ruleset.yaml").write_text("rule_set: {id: t, title: t, version: 0.0.1}\n")
    (tmp_path / "pack.yaml").write_text(PACK_HEADER + "# " + "x" * (10 * 1024 * 1024) + "\n")
    with pytest.raises(cdss.RuleFileError) as info:
        cdss.load_rules(tmp_path)
    assert "at most" in str(info.value) and info.value.line == 1


def test_non_utf8_rule_file(tmp_path: Path) -> None:
    (tmp_path / "ruleset.yaml").write_text("rule_set: {id: t, title: t, version: 0.0.1}\n")
    (tmp_path / "pack.yaml").write_bytes(PACK_HEADER.encode() + b"rules: \xff\n")
    with pytest.raises(cdss.RuleFileError) as info:
        cdss.load_rules(tmp_path)
    assert "UTF-8" in str(info.value) and info.value.line == PACK_HEADER.count("\n") + 1


def test_wrong_types_are_reported(tmp_path: Path) -> None:
    body = rules_body({"w-rule": GOOD_WHEN}).replace("priority: 10", "priority: high")
    error = load_error(tmp_path, body)
    assert "priority" in str(error) and "integer" in str(error) and error.rule_id == "w-rule"


def test_missing_manifest_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(cdss.RuleFileError, match="no ruleset.yaml"):
        cdss.load_rules(tmp_path)
    with pytest.raises(cdss.RuleFileError, match="no such file"):
        cdss.load_rules(tmp_path / "absent")


def test_draft_rule_and_unused_parameter_are_warnings_not_errors(tmp_path: Path) -> None:
    params = "parameters:\n  spare:\n    type: integer\n    default: 1\n    origin: policy\n    description: unused\n"
    body = rules_body({"d-rule": GOOD_WHEN}, params).replace("    category: sign", "    status: draft\n    category: sign")
    write_rule_set(tmp_path, body)
    loaded, problems = collect(tmp_path)
    assert loaded is not None
    messages = [p.message for p in problems]
    assert all(p.severity == "warning" for p in problems)
    assert any("draft" in m for m in messages) and any("'spare' is declared but no rule uses it" in m for m in messages)


def test_contradictory_condition_is_flagged_as_never_firing(tmp_path: Path) -> None:
    when = "{all: [{field: back_pain.present, is: true}, {field: back_pain.present, is: false}]}"
    write_rule_set(tmp_path, rules_body({"never": when}))
    _, problems = collect(tmp_path)
    assert any("can never hold" in p.message and p.rule_id == "never" for p in problems)


def test_parameter_default_out_of_bounds(tmp_path: Path) -> None:
    params = ("parameters:\n  refer_weeks:\n    type: integer\n    default: 9\n    minimum: 4\n    maximum: 6\n"
              "    origin: policy\n    description: weeks\n")
    error = load_error(tmp_path, rules_body({"p-rule": "{field: exercise.weeks_consistent, gte: {param: refer_weeks}}"}, params))
    assert "above the maximum 6" in str(error)
    assert error.line == line_of(tmp_path / "pack.yaml", "default: 9")


def test_at_most_constraint_is_checked_for_defaults(tmp_path: Path) -> None:
    params = ("parameters:\n"
              "  review_weeks:\n    type: integer\n    default: 6\n    at_most: {param: refer_weeks}\n    origin: policy\n    description: r\n"
              "  refer_weeks:\n    type: integer\n    default: 4\n    origin: policy\n    description: f\n")
    when = "{all: [{field: exercise.weeks_consistent, gte: {param: review_weeks}}, {field: exercise.weeks_consistent, gte: {param: refer_weeks}}]}"
    error = load_error(tmp_path, rules_body({"c-rule": when}, params))
    assert "review_weeks (6) may not exceed refer_weeks (4)" in str(error)


def test_emergency_rules_must_be_critical_and_ask_for_emergency(tmp_path: Path) -> None:
    body = rules_body({"e-rule": GOOD_WHEN}).replace("category: sign", "category: emergency")
    error = load_error(tmp_path, body)
    messages = [p.message for p in error.problems]
    assert "an emergency rule must be indicator critical, not info" in messages
    assert "an emergency rule must ask for urgency emergency, not self-care" in messages


def test_exercise_advice_cannot_ride_on_a_rule_that_is_not_withheld(tmp_path: Path) -> None:
    """A plan note on a red-flag rule would make its card withheld exactly when the flag is yes."""
    body = rules_body({"p-rule": GOOD_WHEN}).replace(
        '      card: {summary: "p-rule fired", detail: detail}\n',
        '      card: {summary: "p-rule fired", detail: detail}\n      plan: {note: Do not exercise until assessed.}\n')
    error = load_error(tmp_path, body)
    assert "'plan' outputs belong to exercise or progression rules" in str(error)
    assert error.line == line_of(tmp_path / "pack.yaml", "plan: {note")
