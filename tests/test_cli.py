"""The command line: every command, every exit code, hostile input, batches, the installed executable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import cdss
from cdss.cli import cli
from tests.conftest import FIXTURES, ROOT
from tests.helpers import patient, rules_body, write_rule_set

CDSS = Path(sys.executable).parent / "cdss"
BASIC = str(FIXTURES / "basic")

EMERGENCY = {"patient_id": "t-emergency", "back_pain": {"present": True},
             "red_flags": {"significant_leg_weakness": True}}
BEGINNER = {"patient_id": "t-beginner", **patient(
    back_pain={"present": True},
    observations={"hip_drop_in_single_leg_stance": {"standing_on_left": True, "standing_on_right": False}},
    exercise={"stage": "none", "weeks_consistent": 0})}
INCOMPLETE = {"patient_id": "t-incomplete"}
# for the fixture rule set: the `refer` rule fires from refer_weeks (policy, 4..6, default 6)
WEEK_FOUR = {"patient_id": "t-week-4", **patient(back_pain={"present": True, "trend": "unchanged"},
                                                exercise={"stage": "activation", "weeks_consistent": 4})}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test uses one private rule-set cache, never the user's."""
    directory = tmp_path_factory.getbasetemp() / "cdss-cache"
    monkeypatch.setenv("CDSS_CACHE_DIR", str(directory))
    monkeypatch.delenv("CDSS_NO_CACHE", raising=False)
    return directory


def invoke(*args: str, input: bytes | str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, prog_name="cdss")


def write(tmp: Path, name: str, content: Any) -> str:
    path = tmp / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(json.dumps(content), encoding="utf-8")
    return str(path)


def one_error_line(result: Result) -> str:
    """The stderr of a failed run: exactly one line, `cdss: error: ...`, no traceback."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cdss: error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


# ---------------------------------------------------------------- help and start-up


def test_help_lists_every_command_and_the_exit_codes() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("evaluate", "validate", "rules", "schema", "audit"):
        assert f"  {command}" in result.stdout
    assert "Exit codes:" in result.stdout
    for code in ("0  evaluated", "1  a patient document is invalid", "2  usage error", "3  the rule files are invalid",
                 "4  internal error"):
        assert code in result.stdout
    assert "Exit codes:" in invoke("evaluate", "--help").stdout
    assert invoke("--version").stdout.strip() == f"cdss {cdss.__version__}"


HEAVY = ("durable", "durable_rules_engine", "jsonschema", "fastjsonschema", "yaml")


@pytest.mark.parametrize("argv", [["--help"], ["schema", "patient"], ["evaluate", "--help"]])
def test_help_and_schema_do_not_import_the_engine_or_validators(argv: list[str]) -> None:
    code = textwrap.dedent(f"""
        import contextlib, io, json, sys
        from cdss.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                main({argv!r})
            except SystemExit as exit:
                assert exit.code in (0, None), exit.code
        print(json.dumps(sorted(sys.modules)))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}
    assert "cdss.loader" not in loaded and "cdss.ruleset" not in loaded


# ---------------------------------------------------------------- evaluate: one file


def test_evaluate_writes_one_json_result_per_file(tmp_path: Path) -> None:
    result = invoke("evaluate", write(tmp_path, "p.json", EMERGENCY))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1  # not a terminal: compact JSON, one document per line
    data = json.loads(lines[0])
    assert data["urgency"] == "emergency" and data["patient_id"] == "t-emergency"
    assert data["plan"]["status"] == "withheld"
    assert "trace" not in data
    assert result.stderr == ""
    assert data == cdss.load_rules().evaluate(EMERGENCY).to_dict()


def test_evaluate_text_is_a_readable_summary(tmp_path: Path) -> None:
    result = invoke("evaluate", "--format", "text", write(tmp_path, "e.json", EMERGENCY))
    assert result.exit_code == 0
    text = result.stdout
    assert "EMERGENCY: seek immediate medical attention" in text
    assert "Red-flag screening: POSITIVE" in text
    assert "Plan: WITHHELD" in text and "Exercise advice is withheld" in text
    assert "Referrals (1)" in text and "immediately" in text
    assert "[CRITICAL] Seek immediate medical attention" in text
    assert "Source: Do Weak Glutes Cause Back Pain?" in text
    assert "\x1b[" not in text  # no colour codes when not on a terminal

    text = invoke("evaluate", "--format", "text", write(tmp_path, "b.json", BEGINNER)).stdout
    assert "SELF-CARE" in text and "Red-flag screening: negative" in text
    assert "Plan: recommended, activation phase" in text
    assert "Clamshell (gluteus medius): 2 to 3 sets of 10 to 15 repetitions" in text
    assert "[left] Left gluteus medius and minimus weakness" in text
    assert "Missing answers" in text and "back_pain.trend" in text

    text = invoke("evaluate", "--format", "text", write(tmp_path, "i.json", INCOMPLETE)).stdout
    assert "Red-flag screening: INCOMPLETE" in text and "Plan: PENDING red-flag screening" in text
    assert "red_flags.significant_leg_weakness" in text


def test_evaluate_cds_hooks_is_a_strict_response(tmp_path: Path) -> None:
    result = invoke("evaluate", "--format", "cds-hooks", write(tmp_path, "p.json", EMERGENCY))
    assert result.exit_code == 0
    response = json.loads(result.stdout)
    assert list(response) == ["cards"]
    assert response["cards"][0]["indicator"] == "critical"
    assert "invalid.cdss" in response["cards"][0]["extension"]


def test_stdin_dash(tmp_path: Path) -> None:
    result = invoke("evaluate", "-", input=json.dumps(BEGINNER))
    assert result.exit_code == 0
    assert json.loads(result.stdout)["patient_id"] == "t-beginner"


def test_explain_adds_the_trace_in_json_and_in_text(tmp_path: Path) -> None:
    path = write(tmp_path, "w.json", WEEK_FOUR)
    data = json.loads(invoke("evaluate", "--explain", "--rules", BASIC, path).stdout)
    steps = {step["rule"]: step for step in data["trace"]}
    assert set(steps) == {"red-flag", "flag-unknown", "hip-drop-left", "refer", "exercise-clamshell"}
    assert steps["refer"]["fired"] is False
    assert {"field": "exercise.weeks_consistent", "op": "gte", "value": 6, "param": "refer_weeks", "saw": 4,
            "result": False} in steps["refer"]["conditions"]

    text = invoke("evaluate", "--explain", "--format", "text", "--rules", BASIC, path).stdout
    assert "Trace: 5 rules evaluated, 1 fired" in text
    assert "FIRED exercise-clamshell" in text
    assert "no   exercise.weeks_consistent >= 6 [refer_weeks]   (saw 4)" in text
    assert "yes  back_pain.present is yes   (saw yes)" in text

    refused = invoke("evaluate", "--explain", "--format", "cds-hooks", path)
    assert refused.exit_code == 2
    assert "--explain" in one_error_line(refused)


def test_several_files_give_json_lines_in_order_with_errors_in_place(tmp_path: Path) -> None:
    good_a = write(tmp_path, "a.json", EMERGENCY)
    bad = write(tmp_path, "bad.json", {"patient_id": "t-bad", "red_flags": {"significant_leg_weaknes": True}})
    good_b = write(tmp_path, "b.json", BEGINNER)
    result = invoke("evaluate", good_a, bad, good_b)
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line.get("patient_id") for line in lines] == ["t-emergency", None, "t-beginner"]
    assert lines[1] == {"file": bad, "error": {
        "path": "$.red_flags.significant_leg_weaknes",
        "expected": "one of the known keys (numbness_or_tingling_radiating_down_leg, significant_leg_weakness, "
                    "sudden_bladder_or_bowel_control_loss)",
        "found": "an unknown key", "hint": "did you mean 'significant_leg_weakness'?",
        "message": lines[1]["error"]["message"]}}
    error = one_error_line(result)
    assert error.startswith(f"cdss: error: {bad}: $.red_flags.significant_leg_weaknes: expected one of the known keys")
    assert error.endswith("(did you mean 'significant_leg_weakness'?)")
    assert "t-bad" not in result.stderr  # patient data is never echoed

    text = invoke("evaluate", "--format", "text", good_a, good_b).stdout
    assert text.count("rules weak-glutes-low-back-pain") == 2
    assert f"{good_a} · patient t-emergency" in text


# ---------------------------------------------------------------- parameters and rule sets


def test_param_overrides_a_policy_parameter_and_is_recorded(tmp_path: Path) -> None:
    path = write(tmp_path, "w.json", WEEK_FOUR)
    default = json.loads(invoke("evaluate", "--rules", BASIC, path).stdout)
    assert default["urgency"] == "self-care" and default["parameters"]["refer_weeks"] == 6
    result = invoke("evaluate", "--rules", BASIC, "--param", "refer_weeks=4", path)
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["parameters"]["refer_weeks"] == 4
    assert data["urgency"] == "see-professional"
    assert any(card["summary"] == "Pain after 4 weeks: see a professional" for card in data["cards"])
    text = invoke("evaluate", "--format", "text", "--rules", BASIC, "--param", "refer_weeks=4", path).stdout
    assert "Parameters overridden: refer_weeks=4" in text


@pytest.mark.parametrize(("param", "words"), [
    ("refer_weks=4", "; did you mean 'refer_weeks'?"),
    ("refer_weeks=9", "9 is above the maximum 6"),
    ("refer_weeks=soon", "takes integer"),
    ("sets_max=4", "cannot be overridden"),
    ("refer_weeks", "--param takes NAME=VALUE"),
])
def test_param_errors_are_usage_errors(tmp_path: Path, param: str, words: str) -> None:
    result = invoke("evaluate", "--rules", BASIC, "--param", param, write(tmp_path, "w.json", WEEK_FOUR))
    assert result.exit_code == 2
    assert words in one_error_line(result)
    assert result.stdout == ""


def test_rules_option_uses_another_rule_set(tmp_path: Path) -> None:
    data = json.loads(invoke("evaluate", "--rules", BASIC, write(tmp_path, "e.json", EMERGENCY)).stdout)
    assert data["rule_set"]["id"] == "fixture-basic"
    assert [card["rule"] for card in data["cards"]] == ["red-flag"]


def broken_rule_set(tmp_path: Path) -> Path:
    return write_rule_set(tmp_path / "broken", rules_body({
        "typo-field": "{field: red_flags.significant_leg_weaknes, is: true}",
        "bad-operator": "{field: back_pain.present, equal: true}",
    }))


def test_invalid_rules_exit_3_with_file_line_and_rule_id(tmp_path: Path) -> None:
    rules = broken_rule_set(tmp_path)
    result = invoke("evaluate", "--rules", str(rules), write(tmp_path, "p.json", EMERGENCY))
    assert result.exit_code == 3
    line = one_error_line(result)
    assert f"{rules / 'pack.yaml'}:" in line
    assert ": typo-field: " in line and "did you mean 'red_flags.significant_leg_weakness'?" in line
    assert f"(and 1 more problem: run 'cdss validate {rules}' to list them)" in line
    assert result.stdout == ""


# ---------------------------------------------------------------- exit 4: internal errors


def _explode(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("boom\nsecond line")


def test_internal_error_is_one_line_and_the_traceback_needs_debug(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from cdss.ruleset import RuleSet

    monkeypatch.setattr(RuleSet, "evaluate", _explode)
    path = write(tmp_path, "p.json", EMERGENCY)
    result = invoke("evaluate", path)
    assert result.exit_code == 4
    line = one_error_line(result)
    assert "internal error (RuntimeError: boom second line)" in line
    assert "please report it" in line and "--debug" in line

    debug = invoke("--debug", "evaluate", path)
    assert debug.exit_code == 4
    assert "Traceback (most recent call last)" in debug.stderr
    assert "RuntimeError: boom" in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1].startswith("cdss: error: internal error")


def test_engine_error_is_an_internal_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cdss.errors import EngineError
    from cdss.ruleset import RuleSet

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise EngineError("durable-rules did not handle the patient fact")

    monkeypatch.setattr(RuleSet, "evaluate", fail)
    monkeypatch.setattr(RuleSet, "evaluate_many", fail)  # what --jsonl batches call
    result = invoke("evaluate", "--jsonl", "-", input=json.dumps(EMERGENCY) + "\n")
    assert result.exit_code == 4
    assert "the rule engine failed on 1 line" in result.stderr
    record = json.loads(result.stdout)  # the line's error record is in place; the batch went on (issue 16)
    assert "EngineError: durable-rules did not handle" in record["error"]["found"]


# ---------------------------------------------------------------- hostile input: exit 1, one clear line

HOSTILE = [
    ("malformed", b'{"red_flags": {"significant_leg_weakness": true,}}',
     "not valid JSON: Expecting property name enclosed in double quotes at line 1, column 49"),
    ("malformed-multiline", b'{\n  "patient_id": "x"\n  "exercise": {}\n}',
     "not valid JSON: Expecting ',' delimiter at line 3, column 3"),
    ("nan", b'{"exercise": {"weeks_consistent": NaN}}', "NaN is not allowed (use null for an unknown value)"),
    ("infinity", b'{"exercise": {"weeks_consistent": -Infinity}}', "-Infinity is not allowed"),
    ("overflow", b'{"exercise": {"weeks_consistent": 1e999}}', "the number 1e999 is too large"),
    ("huge-integer", b'{"exercise": {"weeks_consistent": ' + b"9" * 5000 + b"}}", "a number with too many digits"),
    ("latin-1", b'{"patient_id": "caf\xe9"}', "not UTF-8 text: byte 0xe9 at line 1, column 20"),
    ("array", b"[{}, {}]", "$: expected a JSON object (one patient), found an array (one patient per document"),
    ("string", b'"hello"', "$: expected a JSON object (one patient), found string 'hello'"),
    ("deep-arrays", b"[" * 20000 + b"]" * 20000, "JSON nested too deeply to read"),
    ("deep-objects", b'{"a":' * 20000 + b"1" + b"}" * 20000, "JSON nested too deeply to read"),
    ("empty", b"", "empty input: expected a JSON object"),
    ("whitespace", b"\n  \n", "empty input: expected a JSON object"),
    ("duplicate-key", b'{"red_flags": {"significant_leg_weakness": true, "significant_leg_weakness": false}}',
     "duplicate key 'significant_leg_weakness'"),
    ("wrong-type", b'{"red_flags": {"significant_leg_weakness": "yes"}}',
     "$.red_flags.significant_leg_weakness: expected true or false or null (unknown), found string 'yes'"),
    ("oversized", b'{"patient_id": "' + b"x" * (1024 * 1024 + 10) + b'"}', "input is larger than 1024 KiB"),
]


@pytest.mark.parametrize(("name", "content", "words"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_input_exits_1_with_one_clear_line(tmp_path: Path, name: str, content: bytes, words: str) -> None:
    path = write(tmp_path, f"{name}.json", content)
    result = invoke("evaluate", path)
    assert result.exit_code == 1, result.output
    line = one_error_line(result)
    assert line.startswith(f"cdss: error: {path}: ")
    assert words in line
    assert len(line) < 400
    record = json.loads(result.stdout)
    assert record["file"] == path and set(record["error"]) >= {"path", "expected", "found", "message"}


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    result = invoke("evaluate", write(tmp_path, "bom.json", b"\xef\xbb\xbf" + json.dumps(EMERGENCY).encode()))
    assert result.exit_code == 0
    assert json.loads(result.stdout)["urgency"] == "emergency"


def test_missing_file_or_directory_is_a_usage_error(tmp_path: Path) -> None:
    missing = invoke("evaluate", str(tmp_path / "nope.json"))
    assert missing.exit_code == 2
    assert "does not exist" in missing.stderr
    assert invoke("evaluate", str(tmp_path)).exit_code == 2
    assert invoke("evaluate").exit_code == 2
    assert invoke("evaluate", "--rules", str(tmp_path / "no-rules"), "-", input="{}").exit_code == 2


def test_usage_errors_for_batch_only_options(tmp_path: Path) -> None:
    path = write(tmp_path, "p.json", EMERGENCY)
    workers = invoke("evaluate", "--workers", "2", path)
    assert workers.exit_code == 2 and "--workers applies to --jsonl" in one_error_line(workers)
    text = invoke("evaluate", "--jsonl", "--format", "text", path)
    assert text.exit_code == 2 and "--jsonl writes one JSON document per line" in one_error_line(text)
    assert invoke("evaluate", "--jsonl", "--workers", "0", path).exit_code == 2


# ---------------------------------------------------------------- batches


def jsonl(*records: Any) -> bytes:
    out = b""
    for record in records:
        out += (record if isinstance(record, bytes) else json.dumps(record).encode()) + b"\n"
    return out


def test_jsonl_bad_line_in_the_middle_yields_an_error_record_and_the_batch_goes_on(tmp_path: Path) -> None:
    data = jsonl(EMERGENCY, b"", BEGINNER, b'{"red_flags": {"significant_leg_weakness": "no"}}',
                 b"{not json", b"   ", b'{"exercise": {"weeks_consistent": NaN}}', b'{"patient_id": "caf\xe9"}',
                 INCOMPLETE)
    path = write(tmp_path, "batch.jsonl", data)
    result = invoke("evaluate", "--jsonl", path)
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 7  # one per non-blank line, in order
    assert [line.get("patient_id") for line in lines] == ["t-emergency", "t-beginner", None, None, None, None,
                                                          "t-incomplete"]
    assert lines[2] == {"file": path, "line": 4, "error": {
        "path": "$.red_flags.significant_leg_weakness", "expected": "true or false or null (unknown)",
        "found": "string 'no'",
        "message": "$.red_flags.significant_leg_weakness: expected true or false or null (unknown), found string 'no'"}}
    assert lines[3]["line"] == 5 and "column 2" in lines[3]["error"]["found"]
    assert lines[4]["line"] == 7 and "NaN" in lines[4]["error"]["message"]
    assert lines[5]["line"] == 8 and "byte 0xe9 at column 20" in lines[5]["error"]["found"]
    assert result.stderr.splitlines() == [
        f"cdss: 7 records: 3 evaluated (1 emergency, 1 see-professional, 1 self-care, 0 none), 4 invalid "
        f"(at {path}:4, {path}:5, {path}:7, {path}:8)"]


def test_jsonl_from_stdin_all_valid_exits_0_with_a_summary() -> None:
    result = invoke("evaluate", "--jsonl", "--format", "cds-hooks", "-", input=jsonl(EMERGENCY, BEGINNER))
    assert result.exit_code == 0
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["cards"][0]["indicator"] == "critical" and list(second) == ["cards"]
    assert result.stderr == "cdss: 2 records: 2 evaluated (1 emergency, 0 see-professional, 1 self-care, 0 none), 0 invalid\n"


def test_jsonl_oversized_line_is_an_error_record_not_a_crash(tmp_path: Path) -> None:
    path = write(tmp_path, "big.jsonl", jsonl(b'{"patient_id": "' + b"x" * (1024 * 1024 + 5) + b'"}', EMERGENCY))
    result = invoke("evaluate", "--jsonl", path)
    assert result.exit_code == 1
    big, emergency = (json.loads(line) for line in result.stdout.splitlines())
    assert big["line"] == 1 and "1024 KiB per line" in big["error"]["expected"]
    assert emergency["urgency"] == "emergency"


def test_workers_keep_input_order_and_match_one_process(tmp_path: Path) -> None:
    kinds = [EMERGENCY, BEGINNER, INCOMPLETE, b"[]", WEEK_FOUR]
    records = []
    for i in range(700):  # several chunks of 256 lines per worker
        kind = kinds[i % len(kinds)]
        records.append(kind if isinstance(kind, bytes) else {**kind, "patient_id": f"p{i:04d}"})
    path = write(tmp_path, "many.jsonl", jsonl(*records))
    one = invoke("evaluate", "--jsonl", "--explain", path)
    two = invoke("evaluate", "--jsonl", "--explain", "--workers", "2", path)
    assert one.exit_code == two.exit_code == 1
    assert two.stdout == one.stdout
    assert two.stderr == one.stderr
    ids = [json.loads(line).get("patient_id") for line in two.stdout.splitlines()]
    assert ids == [None if isinstance(r, bytes) else r["patient_id"] for r in records]
    assert "trace" in json.loads(two.stdout.splitlines()[0])


def test_workers_apply_parameter_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "w.jsonl", jsonl(*[WEEK_FOUR] * 3))
    result = invoke("evaluate", "--jsonl", "--workers", "2", "--rules", BASIC, "--param", "refer_weeks=4", path)
    assert result.exit_code == 0
    assert {json.loads(line)["urgency"] for line in result.stdout.splitlines()} == {"see-professional"}


def test_workers_without_fork_evaluate_in_one_process_and_say_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where os.fork does not exist (Windows), --workers N runs in one process: same output, and a note."""
    path = write(tmp_path, "w.jsonl", jsonl(EMERGENCY, BEGINNER, b"[]"))
    one = invoke("evaluate", "--jsonl", path)
    monkeypatch.delattr("os.fork")
    two = invoke("evaluate", "--jsonl", "--workers", "3", path)
    assert two.exit_code == one.exit_code == 1
    assert two.stdout == one.stdout
    assert "--workers 3 needs os.fork" in two.stderr and "--workers" not in one.stderr


# ---------------------------------------------------------------- validate


def test_validate_bundled_and_fixture_rules() -> None:
    result = invoke("validate")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "(bundled): ok, 24 rules" in result.stderr or "(bundled): ok," in result.stderr
    fixture = invoke("validate", BASIC)
    assert fixture.exit_code == 0
    assert f"cdss: {BASIC}: ok, 5 rules in 1 pack, 0 warnings" in fixture.stderr


def test_validate_prints_every_problem_and_exits_3(tmp_path: Path) -> None:
    rules = broken_rule_set(tmp_path)
    result = invoke("validate", str(rules))
    assert result.exit_code == 3
    problems = result.stdout.splitlines()
    assert len(problems) == 2
    pack = rules / "pack.yaml"
    assert problems[0].startswith(f"{pack}:") and ": typo-field: " in problems[0]
    assert problems[1].startswith(f"{pack}:") and ": bad-operator: unknown operator 'equal'" in problems[1]
    for problem in problems:
        file, line, column, _rest = problem.split(":", 3)
        assert line.isdigit() and column.isdigit()
    assert "INVALID: 2 errors" in result.stderr


def test_validate_fail_on_warning(tmp_path: Path) -> None:
    body = rules_body({"draft-rule": "{field: back_pain.present, is: true}"}).replace(
        "    category: sign", "    status: draft\n    category: sign")
    rules = write_rule_set(tmp_path / "draft", body)
    relaxed = invoke("validate", str(rules))
    assert relaxed.exit_code == 0
    assert "draft-rule: warning: rule is still a draft" in relaxed.stdout
    for flag in ("--strict", "--fail-on-warning"):  # --fail-on-warning: the older spelling
        strict = invoke("validate", flag, str(rules))
        assert strict.exit_code == 1, strict.output


def test_validate_patients(tmp_path: Path) -> None:
    good = write(tmp_path, "good.json", BEGINNER)
    assert invoke("validate", "--patients", good).exit_code == 0
    bad = write(tmp_path, "bad.json", {"observations": {"hip_drop_in_single_leg_stance": {"standing_on_left": 1}}})
    nan = write(tmp_path, "nan.json", b'{"exercise": {"weeks_consistent": NaN}}')
    result = invoke("validate", "--patients", str(tmp_path))  # a directory: every *.json in it
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{bad}: $.observations.hip_drop_in_single_leg_stance.standing_on_left: expected true or false or null "
        "(unknown), found number 1",
        f"{nan}: not valid JSON: NaN is not allowed (use null for an unknown value)",
    ]
    assert "cdss: 3 patient documents: 1 valid, 2 invalid" in result.stderr
    assert invoke("validate", "--patients", "-", input="{}").exit_code == 0
    assert invoke("validate", "--patients").exit_code == 2
    assert invoke("validate", "--patients", str(tmp_path / "missing.json")).exit_code == 2
    assert invoke("validate", str(tmp_path / "no-such-rules")).exit_code == 2


# ---------------------------------------------------------------- rules, schema, audit


def test_rules_list_is_a_table() -> None:
    result = invoke("rules", "list", "--rules", BASIC)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "CATEGORY", "INDICATOR", "STATUS", "GUIDANCE"]
    assert lines[1].split() == ["red-flag", "emergency", "critical", "active", "G-RED-2"]
    assert [line.split()[0] for line in lines[1:]] == ["red-flag", "flag-unknown", "hip-drop-left", "refer",
                                                       "exercise-clamshell"]
    bundled = invoke("rules", "list")
    assert bundled.exit_code == 0 and len(bundled.stdout.splitlines()) == len(cdss.load_rules().rules) + 1


def test_rules_show_renders_a_rule_for_a_human() -> None:
    result = invoke("rules", "show", "refer", "--rules", BASIC)
    assert result.exit_code == 0
    text = result.stdout
    assert text.startswith("refer: Refer after weeks\n")
    for expected in ("category   escalation", "indicator  warning", "urgency    see-professional", "guidance   G-ESC-1",
                     "all of:", "low back pain or discomfort now is reported (back_pain.present is yes)",
                     "is at least 6 weeks (exercise.weeks_consistent ≥ refer_weeks (currently 6 weeks))",
                     "it is not the case that course of the pain over the exercise programme: improving "
                     "(back_pain.trend = improving)",
                     "Card (warning): Pain after 6 weeks: see a professional",
                     "refer_weeks = 6 weeks (policy, overridable with --param, 4..6; default 6)",
                     "G-ESC-1: ", "Do Weak Glutes Cause Back Pain? > When Glute Strengthening Isn’t Enough",
                     "“professional evaluation is necessary”"):
        assert expected in text, expected
    clamshell = invoke("rules", "show", "exercise-clamshell", "--rules", BASIC).stdout
    assert "Exercise Clamshell (gluteus medius): 2 to 3 sets of 10 to 15 repetitions" in clamshell
    assert "sets_max = 3 sets" not in clamshell and "sets_max = 3 (stated by the source, fixed" in clamshell


def test_rules_show_unknown_id_suggests_the_nearest() -> None:
    result = invoke("rules", "show", "hip-drop-lft", "--rules", BASIC)
    assert result.exit_code == 2
    assert "no rule 'hip-drop-lft'; did you mean 'hip-drop-left'?" in one_error_line(result)


@pytest.mark.parametrize("name", ["patient", "result", "rule-pack", "rule-set", "scenario", "guidance"])
def test_schema_prints_the_bundled_schema(name: str) -> None:
    result = invoke("schema", name)
    assert result.exit_code == 0
    assert result.stdout == (ROOT / "schemas" / f"{name}.schema.json").read_text(encoding="utf-8")
    assert json.loads(result.stdout)["$schema"].startswith("https://json-schema.org/draft/2020-12")


def test_schema_unknown_name_is_a_usage_error() -> None:
    assert invoke("schema", "patients").exit_code == 2


def test_audit_command_exists() -> None:
    result = invoke("audit", "--help")
    assert result.exit_code == 0
    for option in ("--source", "--format", "--output", "--rules", "--scenarios"):
        assert option in result.stdout


# ---------------------------------------------------------------- the rule-set cache


def _counting_loader(monkeypatch: pytest.MonkeyPatch) -> list[Path | None]:
    """Record every full read of a rule set (a cache hit reads none)."""
    from cdss import loader

    calls: list[Path | None] = []
    real_load = loader.load
    monkeypatch.setattr(loader, "load", lambda path=None, **kw: calls.append(path) or real_load(path, **kw))
    return calls


def test_rule_set_cache_is_reused_and_invalidated_by_any_edit(tmp_path: Path, _private_cache: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from cdss.cli import cache as cli_cache

    calls = _counting_loader(monkeypatch)
    rules = write_rule_set(tmp_path / "rs", rules_body({"one": "{field: back_pain.present, is: true}"}))
    first = cli_cache.load(rules)
    cached = cli_cache.cache_file(_private_cache, rules)
    assert cached.is_file() and oct(cached.stat().st_mode & 0o777) == "0o600"
    assert cli_cache.load(rules) == first  # the whole checked rule set, equal field by field
    assert len(calls) == 1  # the second load read no rule file through the loader
    pack = rules / "pack.yaml"
    pack.write_text(pack.read_text().replace("one fired", "one has fired"), encoding="utf-8")
    edited = cli_cache.load(rules)
    assert len(calls) == 2  # an edit is a miss: read and checked in full
    assert edited.info.digest != first.info.digest
    assert edited.rules[0].then["card"]["summary"] == "one has fired"
    assert cached.is_file() and not list(_private_cache.glob(".rules-*"))  # replaced in place, no leftovers
    # a new YAML file in the directory can become a pack: a miss too
    (rules / "more.yaml").write_text((rules / "pack.yaml").read_text().replace("test-pack", "more-pack")
                                     .replace("id: one", "id: two"), encoding="utf-8")
    assert [r.id for r in cli_cache.load(rules).rules] == ["two", "one"]
    assert len(calls) == 3
    # an invalid rule set is reported, never recorded as checked
    (rules / "more.yaml").unlink()
    pack.write_text(pack.read_text().replace("priority: 10", "priority: high"), encoding="utf-8")
    for _ in range(2):
        with pytest.raises(cdss.RuleFileError):
            cli_cache.load(rules)
    assert len(calls) == 5


def test_rule_set_cache_ignores_files_others_could_write(tmp_path: Path, _private_cache: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from cdss.cli import cache as cli_cache

    rules = write_rule_set(tmp_path / "rs", rules_body({"one": "{field: back_pain.present, is: true}"}))
    cli_cache.load(rules)
    cached = cli_cache.cache_file(_private_cache, rules)
    cached.chmod(0o666)
    calls = _counting_loader(monkeypatch)
    cli_cache.load(rules)
    assert len(calls) == 1
    cached.write_text("not json")
    cached.chmod(0o600)
    cli_cache.load(rules)
    assert len(calls) == 2
    monkeypatch.setenv("CDSS_NO_CACHE", "1")
    assert cli_cache.cache_dir() is None


# ---------------------------------------------------------------- the installed executable


def run_cdss(*args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(CDSS), *args], input=input, capture_output=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_installed_executable_every_exit_code(tmp_path: Path) -> None:
    assert CDSS.is_file(), f"the cdss console script is not installed next to {sys.executable}"
    ok = run_cdss("evaluate", write(tmp_path, "e.json", EMERGENCY))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["urgency"] == "emergency"

    bad = run_cdss("evaluate", "-", input=b'{"red_flags": {"significant_leg_weaknes": true}}')
    assert bad.returncode == 1
    assert bad.stderr.decode().splitlines() == [
        "cdss: error: -: $.red_flags.significant_leg_weaknes: expected one of the known keys "
        "(numbness_or_tingling_radiating_down_leg, significant_leg_weakness, sudden_bladder_or_bowel_control_loss), "
        "found an unknown key (did you mean 'significant_leg_weakness'?)"]

    usage = run_cdss("evaluate", str(tmp_path / "missing.json"))
    assert usage.returncode == 2

    rules = run_cdss("validate", str(broken_rule_set(tmp_path)))
    assert rules.returncode == 3
    assert b": typo-field: " in rules.stdout

    deep = run_cdss("evaluate", "-", input=b"[" * 20000 + b"]" * 20000)
    assert deep.returncode == 1 and b"Traceback" not in deep.stderr


def test_installed_executable_jsonl_workers_and_a_closed_pipe(tmp_path: Path) -> None:
    data = jsonl(*[{**BEGINNER, "patient_id": f"p{i}"} for i in range(1500)])
    done = run_cdss("evaluate", "--jsonl", "--workers", "2", "-", input=data)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["patient_id"] for line in done.stdout.splitlines()] == [f"p{i}" for i in range(1500)]
    assert done.stderr.decode().startswith("cdss: 1,500 records: 1,500 evaluated")

    # a reader that stops early (`| head -1`) ends the run quietly (input from a file: no pipe to deadlock on)
    big = Path(write(tmp_path, "big.jsonl", data * 20))
    with big.open("rb") as stdin:
        process = subprocess.Popen([str(CDSS), "evaluate", "--jsonl", "-"], stdin=stdin,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdout is not None and process.stderr is not None
        process.stdout.readline()
        process.stdout.close()
        try:
            assert process.wait(timeout=60) == 141
        finally:
            process.kill()
    assert b"Traceback" not in process.stderr.read()


def test_terminal_gets_text_and_a_progress_line(tmp_path: Path) -> None:
    import pty
    path = write(tmp_path, "e.json", EMERGENCY)
    master, slave = pty.openpty()
    try:
        done = subprocess.run([str(CDSS), "evaluate", path], stdout=slave, stderr=subprocess.PIPE, timeout=60)
        os.close(slave)
        output = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(master)
    assert done.returncode == 0
    assert b"EMERGENCY: seek immediate medical attention" in output  # text, not JSON, on a terminal

    master, slave = pty.openpty()
    try:
        batch = subprocess.run([str(CDSS), "evaluate", "--jsonl", "-"], input=jsonl(EMERGENCY), stdout=subprocess.PIPE,
                               stderr=slave, timeout=60)
        os.close(slave)
        progress = os.read(master, 65536)
    finally:
        os.close(master)
    assert batch.returncode == 0
    assert b"\rcdss: 1 record ..." in progress and b"cdss: 1 record: 1 evaluated" in progress


def test_jsonl_summary_names_the_first_five_bad_lines_and_counts_the_rest() -> None:
    result = invoke("evaluate", "--jsonl", "-", input=jsonl(*([b"[]"] * 8), EMERGENCY))
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 9
    assert result.stderr == ("cdss: 9 records: 1 evaluated (1 emergency, 0 see-professional, 0 self-care, 0 none), "
                             "8 invalid (at -:1, -:2, -:3, -:4, -:5 and 3 more)\n")


def test_audit_io_problems_are_named_exit_codes_not_bugs(tmp_path: Path) -> None:
    unwritable = invoke("audit", "--output", str(tmp_path / "no" / "such" / "dir" / "x.md"))
    assert unwritable.exit_code == 5 and "cannot write it" in one_error_line(unwritable)  # output cannot be written
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9".encode("latin-1"))
    undecodable = invoke("audit", "--source", str(latin1))
    assert undecodable.exit_code == 2 and "not UTF-8" in one_error_line(undecodable)


def test_long_strings_from_a_patient_are_never_echoed(tmp_path: Path) -> None:
    secret = "Jane Doe DOB 1980-01-02 NHS 943 476 5919 ward 7 bed 12 next of kin John"
    result = invoke("evaluate", "-", input=json.dumps({"patient_id": secret}))
    assert result.exit_code == 1
    assert "Jane" not in result.stdout and "Jane" not in result.stderr
    assert "a string of 71 characters" in one_error_line(result)


def test_an_unreadable_file_gets_an_error_record_in_its_place(tmp_path: Path) -> None:
    good = write(tmp_path, "good.json", EMERGENCY)
    import socket

    unreadable = tmp_path / "unreadable.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(unreadable))  # exists, is not a directory, but open() fails (even for root)
    try:
        result = invoke("evaluate", "--format", "json", good, str(unreadable), good)
    finally:
        server.close()
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert json.loads(lines[1])["error"]["expected"] == "a readable file"
    assert json.loads(lines[0])["urgency"] == json.loads(lines[2])["urgency"] == "emergency"


def test_text_output_does_not_pass_terminal_escapes_through(tmp_path: Path) -> None:
    path = write(tmp_path, "esc.json", {**EMERGENCY, "patient_id": "p\x1b[2J1"})
    text = invoke("evaluate", "--format", "text", path).stdout
    assert "\x1b[2J" not in text and "p\\x1b[2J1" in text


def test_text_report_never_reads_as_all_clear_while_questions_are_open() -> None:
    """Empty findings and cards say 'none yet' while a question could raise the urgency; plain 'none' after."""
    negative = {"numbness_or_tingling_radiating_down_leg": False, "significant_leg_weakness": False,
                "sudden_bladder_or_bowel_control_loss": False}
    open_questions = invoke("evaluate", "--format", "text", "-", input=json.dumps({"red_flags": negative}))
    assert open_questions.exit_code == 0
    lines = open_questions.stdout.splitlines()
    assert "  none" not in lines
    assert lines.count("  none yet: the answers to the questions above could change this") == 2
    answered = {"red_flags": negative, "back_pain": {"present": False}, "exercise": {"stage": "none", "weeks_consistent": 0}}
    settled = invoke("evaluate", "--format", "text", "-", input=json.dumps(answered))
    assert "Questions to answer" not in settled.stdout and "none yet" not in settled.stdout
