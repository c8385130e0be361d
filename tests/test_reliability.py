"""Issue 16: no crash, no hang, nothing lost, under hostile rules, input and signals.

One regression test per numbered item of the issue (its reproduction is the test; items 5
and 7, the cache, are tested with the cache), a property over random rule packs, and a
signal test against a real `--workers 4` batch. Anything that could segfault runs in a
child process, so a crash fails the test instead of killing the test run.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cdss
from cdss.errors import ParameterError, PatientDataError, RuleFileError
from cdss.resources import rules_dir
from tests.helpers import ALL_NO, patient, rules_body, write_rule_set
from tests.strategies import valid_patients

CDSS = [sys.executable, "-c", "from cdss.cli.commands import main; main()"]
WEAKNESS = {**ALL_NO, "significant_leg_weakness": True}


def run_cdss(*args: str, input: bytes | None = None, stdout: Any = subprocess.PIPE,
             timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CDSS, *args], input=input, stdout=stdout, stderr=subprocess.PIPE, timeout=timeout,
                          check=False)


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh interpreter: a segfault there is a failed test, not a dead test run."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=Path(__file__).parent.parent)


def jsonl(docs: list[Any]) -> bytes:
    return b"".join(json.dumps(d).encode() + b"\n" for d in docs)


# ---------------------------------------------------------------- item 1: segfault with 256 firing rules


def test_item01_256_rules_firing_on_one_patient_are_refused_and_255_run(tmp_path: Path) -> None:
    code = f"""
        import sys
        from pathlib import Path
        from tests.helpers import write_rule_set, rules_body, patient, ALL_NO
        import cdss
        weakness = dict(ALL_NO, significant_leg_weakness=True)
        for n in (256, 255):
            rules = {{f"r-{{i}}": "{{field: red_flags.significant_leg_weakness, is: true}}" for i in range(n)}}
            root = write_rule_set(Path({str(tmp_path)!r}) / str(n), rules_body(rules))
            try:
                rs = cdss.load_rules(root)
            except cdss.RuleFileError as error:
                print(n, "refused", error.problems[0].format())
                continue
            result = rs.evaluate(patient(red_flags=weakness)).to_dict()
            print(n, "fired", sum(1 for c in result["cards"]))
    """
    done = run_python(code)
    assert done.returncode == 0, done.stderr[-2000:]  # -11 was the segfault
    lines = done.stdout.splitlines()
    assert lines[0].startswith("256 refused ") and "MAX_RULES" in lines[0] and "r-255" in lines[0]
    assert ":2816: r-255: engine limit:" in lines[0]  # file:line of the 256th rule
    assert lines[1] == "255 fired 255"


# ---------------------------------------------------------------- item 2: one line loses the rest of a batch


def test_item02_lone_surrogate_is_an_error_record_in_place_and_the_batch_goes_on(tmp_path: Path) -> None:
    good = patient()
    lines = [jsonl([good])] * 1000
    lines[10] = b'{"red_flags": {"significant_leg_weakness": "\\ud800"}}\n'
    lines[11] = b'{"x\\udfff": 1}\n'
    lines[999] = jsonl([patient(red_flags=WEAKNESS)])
    first = tmp_path / "first.jsonl"
    first.write_bytes(b"".join(lines))
    later = tmp_path / "later.jsonl"
    later.write_bytes(jsonl([patient(red_flags=WEAKNESS)]))
    done = run_cdss("evaluate", "--jsonl", "--workers", "2", str(first), str(later))
    assert done.returncode == 1, done.stderr
    out = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(out) == 1001
    assert out[10]["error"]["path"] == "$.red_flags.significant_leg_weakness"
    assert "unpaired surrogate" in out[10]["error"]["found"]
    assert out[11]["error"]["path"] == "$.x\\udfff"
    assert out[999]["urgency"] == "emergency" and out[1000]["urgency"] == "emergency"
    # the API refuses it as patient data, with the path; `validate --patients` agrees
    with pytest.raises(PatientDataError, match=r"\$\.patient_id: expected text \(valid Unicode\)"):
        cdss.load_rules().evaluate({**patient(), "patient_id": "a\ud800"})
    (tmp_path / "one.json").write_bytes(lines[10])
    checked = run_cdss("validate", "--patients", str(tmp_path / "one.json"))
    assert checked.returncode == 1 and b"unpaired surrogate" in checked.stdout


# ---------------------------------------------------------------- item 3: Ctrl-C hangs


def _interrupted_batch(tmp_path: Path, sig: signal.Signals, group: bool) -> tuple[int, float, bytes, bytes]:
    big = tmp_path / "big.jsonl"
    if not big.exists():
        big.write_bytes(jsonl([patient(patient_id=f"p{i}") for i in range(20_000)]) * 10)
    out_path = tmp_path / f"out-{sig.name}-{group}.jsonl"
    with open(out_path, "wb") as out:
        process = subprocess.Popen([*CDSS, "evaluate", "--jsonl", "--workers", "4", str(big)], stdout=out,
                                   stderr=subprocess.PIPE, start_new_session=True)
        # wait until the batch is really running: some output written
        deadline = time.monotonic() + 60
        while out_path.stat().st_size < 100_000 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert process.poll() is None, "the batch ended before the signal: make the input larger"
        sent = time.monotonic()
        if group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
        try:
            _, err = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            pytest.fail(f"{sig.name}: the batch hung")
        took = time.monotonic() - sent
    return process.returncode, took, out_path.read_bytes(), err


@pytest.mark.parametrize("sig, group, code", [(signal.SIGINT, True, 130), (signal.SIGTERM, True, 143),
                                              (signal.SIGTERM, False, 143)])
def test_item03_sigint_to_the_process_group_of_a_workers_4_batch_ends_it_cleanly(
        tmp_path: Path, sig: signal.Signals, group: bool, code: int) -> None:
    returncode, took, out, err = _interrupted_batch(tmp_path, sig, group)
    assert returncode == code, err.decode(errors="replace")[-2000:]
    assert took < 2.0  # the contract: a batch ends within 2 s of Ctrl-C
    assert b"Traceback" not in err and b"interrupted" in err
    assert out.endswith(b"\n")
    records = [json.loads(line) for line in out.splitlines()]  # every written line is complete
    assert records and all(r["patient_id"] == f"p{i % 20_000}" for i, r in enumerate(records))


# ---------------------------------------------------------------- item 4: validate passes what the engine rejects


@pytest.mark.parametrize("when, limit", [
    ("{any: [" + ", ".join(f"{{field: exercise.weeks_consistent, lt: {i}}}" for i in range(14)) + "]}",
     "MAX_SEQUENCE_EXPRESSIONS"),
    ("{not: {any: [" + ", ".join(f"{{field: exercise.weeks_consistent, equals: {i}}}" for i in range(8)) + "]}}",
     "MAX_SEQUENCE_EXPRESSIONS"),
])
def test_item04_validate_refuses_what_the_engine_rejects(tmp_path: Path, when: str, limit: str) -> None:
    root = write_rule_set(tmp_path, rules_body({"too-big": when}))
    done = run_cdss("validate", str(root))
    assert done.returncode == 3
    assert limit.encode() in done.stdout and b"pack.yaml:11: too-big: engine limit:" in done.stdout


def test_item04_operands_in_exponent_form_and_non_finite_numbers(tmp_path: Path) -> None:
    params = ("parameters:\n  tiny:\n    type: number\n    default: 1.0e-05\n    origin: policy\n"
              "    description: a threshold in exponent form\n")
    rules = {"huge": "{field: exercise.weeks_consistent, lt: 1.0e+20}",
             "tiny": "{field: exercise.weeks_consistent, gt: {param: tiny}}",
             "half": "{field: exercise.weeks_consistent, gte: 2.5}"}
    root = write_rule_set(tmp_path / "ok", rules_body(rules, params))
    done = run_cdss("validate", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    rs = cdss.load_rules(root)
    for weeks, fired in ((0, {"huge"}), (2, {"huge", "tiny"}), (3, {"huge", "tiny", "half"})):
        result = rs.evaluate(patient(exercise={"weeks_consistent": weeks}), trace=True).to_dict()  # trace: checked
        assert {c["rule"] for c in result["cards"]} == fired  # against the Python evaluator
    for bad in (".inf", "-.inf", ".nan"):
        root = write_rule_set(tmp_path / bad.strip("-."), rules_body({"r": f"{{field: exercise.weeks_consistent, gte: {bad}}}"}))
        with pytest.raises(RuleFileError, match="is not a usable number: write a finite number"):
            cdss.load_rules(root)


# ---------------------------------------------------------------- item 6: fork while another thread evaluates


def test_item06_fork_while_another_thread_evaluates_does_not_deadlock_the_child() -> None:
    code = """
        import os, threading, time, sys
        import cdss
        from tests.helpers import patient
        rs = cdss.load_rules()
        doc = patient()
        expected = rs.evaluate(doc).urgency  # issue 17: self-care while questions are open, so not hard-coded
        stop = False
        def busy():
            while not stop:
                rs.evaluate(doc)
        thread = threading.Thread(target=busy, daemon=True)
        thread.start()
        stuck = 0
        for _ in range(40):
            time.sleep(0.005)
            pid = os.fork()
            if pid == 0:
                ok = rs.evaluate(doc).urgency == expected and cdss.load_rules().evaluate(doc).urgency == expected
                os._exit(0 if ok else 1)
            deadline = time.monotonic() + 10
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    if os.waitstatus_to_exitcode(status) != 0:
                        print("child failed", status); sys.exit(1)
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9); os.waitpid(pid, 0); stuck += 1
                    break
                time.sleep(0.01)
        stop = True
        print("stuck", stuck)
    """
    done = run_python(code, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert done.stdout.strip().endswith("stuck 0")


# ---------------------------------------------------------------- item 8: parameters


def _policy_dose_rules(tmp_path: Path) -> Path:
    root = tmp_path / "rules"
    shutil.copytree(rules_dir(), root)
    pack = root / "exercise-programme.yaml"
    text = pack.read_text(encoding="utf-8")
    for name in ("sets_min", "sets_max"):
        start = text.index(f"  {name}:\n")
        end = text.index("origin: source", start)
        text = text[:end] + "origin: policy" + text[end + len("origin: source"):]
    pack.write_text(text, encoding="utf-8")
    return root


def test_item08_parameter_overrides_are_checked_like_defaults(tmp_path: Path) -> None:
    params = ("parameters:\n  cut:\n    type: number\n    default: 2.5\n    minimum: 0\n    origin: policy\n"
              "    description: a number parameter\n")
    rs = cdss.load_rules(write_rule_set(tmp_path / "number", rules_body(
        {"r": "{field: exercise.weeks_consistent, gte: {param: cut}}"}, params)))
    for value in (float("nan"), float("inf"), "nan", "inf", "1e999"):
        with pytest.raises(ParameterError, match="finite|takes number"):
            rs.with_parameters({"cut": value})
    assert rs.with_parameters({"cut": "3.5"}).parameter_values["cut"] == 3.5
    root = _policy_dose_rules(tmp_path)
    policy = cdss.load_rules(root)
    assert policy.with_parameters({"sets_min": 3, "sets_max": 4}).parameter_values["sets_max"] == 4
    with pytest.raises(ParameterError, match="advise sets from 9 to 1"):
        policy.with_parameters({"sets_min": 9, "sets_max": 1})
    # equal thresholds are one engine condition, different ones two: overrides are re-checked against the limits
    many = {f"r-{i}": f"{{field: exercise.weeks_consistent, gte: {i}}}" for i in range(62)}
    many.update({"p": "{field: exercise.weeks_consistent, gte: {param: p}}",
                 "q": "{field: exercise.weeks_consistent, gte: {param: q}}"})
    declared = "".join(f"  {name}:\n    type: integer\n    default: 0\n    origin: policy\n    description: d\n"
                       for name in ("p", "q"))
    limits = cdss.load_rules(write_rule_set(tmp_path / "many", rules_body(many, "parameters:\n" + declared)))
    limits.evaluate(patient(exercise={"weeks_consistent": 520}))
    with pytest.raises(ParameterError, match="exceeds an engine limit.*MAX_STACK_SIZE"):
        limits.with_parameters({"p": 100, "q": 200})
    for value in ("1_2", "\u0666", "4\u0660", "0x4", " 4 5"):
        done = run_cdss("evaluate", "--param", f"dedicated_effort_min_weeks={value}", "-", input=jsonl([patient()]))
        assert done.returncode == 2, value
        assert b"takes integer" in done.stderr
    assert run_cdss("evaluate", "--param", "dedicated_effort_min_weeks=2", "-", input=jsonl([patient()])).returncode == 0


# ---------------------------------------------------------------- item 9: terminal escapes in messages


def test_item09_terminal_escapes_in_an_unknown_key_are_shown_escaped() -> None:
    doc = {**patient(), "\x1b]0;owned\x07\x1b[2J": 1}
    done = run_cdss("evaluate", "-", input=json.dumps(doc).encode())
    assert done.returncode == 1
    assert b"\x1b" not in done.stderr and b"\x07" not in done.stderr
    assert b"$.\\x1b]0;owned\\x07\\x1b[2J: expected one of the known keys" in done.stderr
    checked = run_cdss("validate", "--patients", "-", input=json.dumps(doc).encode())
    assert b"\x1b" not in checked.stdout + checked.stderr


# ---------------------------------------------------------------- item 10: Markdown rulebook injection


def test_item10_markdown_rulebook_escapes_every_rule_text(tmp_path: Path) -> None:
    body = rules_body({"html-title": "{field: red_flags.significant_leg_weakness, is: true}"})
    body = body.replace("title: html-title", 'title: "<img src=x onerror=alert(1)> a \\\\| b\\n# Injected heading"')
    body = body.replace("detail: detail", 'detail: "<script>alert(1)</script> and | pipes"')
    root = write_rule_set(tmp_path / "rules", body)
    done = run_cdss("audit", "--rules", str(root), "--format", "markdown")
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    assert "<img" not in text and "<script>" not in text
    assert "&lt;img src=x onerror=alert(1)&gt; a \\&#124; b # Injected heading" in text
    assert not any(line.startswith("# Injected") for line in text.splitlines())
    for line in text.splitlines():  # every table row keeps its column count
        if line.startswith("| status |"):
            assert line.count(" | ") == 5
    nul = write_rule_set(tmp_path / "nul", rules_body({"r": "{field: red_flags.significant_leg_weakness, is: true}"})
                         .replace("detail: detail", 'detail: "a\\0b"'))
    done = run_cdss("audit", "--rules", str(nul), "--format", "html")
    assert done.returncode == 3 and b"U+0000" in done.stderr


# ---------------------------------------------------------------- item 11: look-alike ids


def test_item11_ids_match_their_pattern_in_full(tmp_path: Path) -> None:
    body = rules_body({"red-flag-x": "{field: red_flags.significant_leg_weakness, is: true}"})
    root = write_rule_set(tmp_path, body.replace("- id: red-flag-x", '- id: "red-flag-x\\n"'))
    with pytest.raises(RuleFileError, match=r"is 'red-flag-x\\n', which does not match the required form"):
        cdss.load_rules(root)


# ---------------------------------------------------------------- item 12: a lying Mapping


class LyingMapping(Mapping[str, Any]):
    """Shows its real content through [] and iteration, and a harmless one through get()."""

    def __init__(self, data: dict[str, Any], lie: dict[str, Any]) -> None:
        self.data, self.lie = data, lie

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def get(self, key: str, default: Any = None) -> Any:
        return self.lie.get(key, default)


def test_item12_a_mapping_whose_get_lies_cannot_hide_a_red_flag() -> None:
    rs = cdss.load_rules()
    flags = LyingMapping(WEAKNESS, ALL_NO)
    for doc in ({"red_flags": flags}, LyingMapping({"red_flags": WEAKNESS}, {"red_flags": ALL_NO})):
        assert rs.evaluate(doc).urgency == "emergency"


# ---------------------------------------------------------------- item 13: smaller ones


def test_item13_unwritable_output_unreadable_input_and_odd_rule_files(tmp_path: Path) -> None:
    doc = jsonl([patient()])
    (tmp_path / "one.json").write_bytes(doc)
    with open("/dev/full", "wb") as full:
        done = run_cdss("evaluate", str(tmp_path / "one.json"), stdout=full)
    assert done.returncode == 5 and b"cannot write the output: No space left on device" in done.stderr
    closed = subprocess.run([*CDSS, "evaluate", str(tmp_path / "one.json")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, timeout=60, check=False,
                            preexec_fn=lambda: os.close(1))
    assert closed.returncode == 5 and b"standard output is closed" in closed.stderr
    # an unreadable input is an error record in place; the next input is still read
    from cdss.cli.batch import read_lines

    lines = list(read_lines([("gone.jsonl", PermissionError(13, "Permission denied")), ("ok.jsonl", io.BytesIO(doc))]))
    assert [(name, number) for name, number, _ in lines] == [("gone.jsonl", 0), ("ok.jsonl", 1)]
    assert "Permission denied" in lines[0][2].message  # type: ignore[union-attr]
    # a pack symlinked from outside the rule set, and a FIFO guidance.yaml, are errors
    outside = tmp_path / "outside.yaml"
    outside.write_text("secret: line one\n", encoding="utf-8")
    root = write_rule_set(tmp_path / "linked", rules_body({"r": "{field: red_flags.significant_leg_weakness, is: true}"}))
    (root / "ruleset.yaml").write_text("rule_set:\n  id: test-set\n  title: T\n  version: 0.0.1\n"
                                       "  packs: [pack.yaml, other.yaml]\n", encoding="utf-8")
    (root / "other.yaml").symlink_to(outside)
    with pytest.raises(RuleFileError, match="points outside the rule-set directory") as error:
        cdss.load_rules(root)
    assert "secret" not in str(error.value)
    fifo_root = write_rule_set(tmp_path / "fifo", rules_body({"r": "{field: red_flags.significant_leg_weakness, is: true}"}))
    os.mkfifo(fifo_root / "guidance.yaml")
    with pytest.raises(RuleFileError, match="is not a regular file"):
        cdss.load_rules(fifo_root)


# ---------------------------------------------------------------- batch isolation: a worker that dies


def test_batch_worker_that_dies_is_replaced_and_its_lines_retried(tmp_path: Path) -> None:
    """A worker killed from outside (OOM killer, a crash) costs no line: the chunk is retried."""
    big = tmp_path / "big.jsonl"
    big.write_bytes(jsonl([patient(patient_id=f"p{i}") for i in range(30_000)]))
    out_path = tmp_path / "out.jsonl"
    with open(out_path, "wb") as out:
        process = subprocess.Popen([*CDSS, "evaluate", "--jsonl", "--workers", "2", str(big)], stdout=out,
                                   stderr=subprocess.PIPE)
        children: list[int] = []
        deadline = time.monotonic() + 60
        while not children and time.monotonic() < deadline:
            listed = subprocess.run(["ps", "-o", "pid=", "--ppid", str(process.pid)], capture_output=True, text=True,
                                    check=False)
            children = [int(p) for p in listed.stdout.split()]
            time.sleep(0.05)
        assert children, "no worker process appeared"
        os.kill(children[0], signal.SIGKILL)
        _, err = process.communicate(timeout=120)
    records = [json.loads(line) for line in out_path.read_bytes().splitlines()]
    assert process.returncode == 0, err.decode()[-2000:]
    assert [r["patient_id"] for r in records] == [f"p{i}" for i in range(30_000)]


def test_batch_line_that_kills_its_worker_every_time_becomes_an_error_record(tmp_path: Path) -> None:
    """The retry path: a line whose worker dies again when it is tried alone is written as an error
    record in its place (exit 4: not the input's fault), and every other line is evaluated."""
    lines = [json.dumps(patient(patient_id=f"p{i}")) for i in range(300)]
    lines[123] = lines[123].replace('"p123"', '"kills-its-worker"')
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    script = r"""
import io, os, sys
import cdss
from cdss.cli import batch
evaluate_chunk = batch.Evaluator.evaluate_chunk
def deadly(self, chunk):
    if any(raw and b"kills-its-worker" in raw for _, _, raw in chunk):
        os._exit(9)  # as a segfault in the engine would
    return evaluate_chunk(self, chunk)
batch.Evaluator.evaluate_chunk = deadly
out, err = io.BytesIO(), io.StringIO()
with open(sys.argv[1], "rb") as stream:
    code = batch.run([(sys.argv[1], stream)], cdss.load_rules(None), out=out, workers=2, trace=False, fmt="json", err=err)
sys.stdout.buffer.write(out.getvalue())
sys.stderr.write(err.getvalue())
sys.exit(code)
"""
    done = subprocess.run([sys.executable, "-c", script, str(source)], capture_output=True, timeout=120)
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 4, done.stderr.decode()[-2000:]
    assert len(records) == 300
    assert records[123]["line"] == 124 and records[123]["error"]
    assert [r.get("patient_id") for r in records[:123] + records[124:]] == [f"p{i}" for i in range(300) if i != 123]


# ---------------------------------------------------------------- property: what loads, runs

MAX_DEPTH, COMBINE_ODDS, MAX_CHILDREN = 4, 2, 8  # deep and wide enough to reach the engine limits
FIELDS = {path: f for path, f in __import__("cdss.fields", fromlist=["x"]).patient_fields().items()}


@st.composite
def conditions(draw: st.DrawFn, depth: int = 0) -> str:
    if depth < MAX_DEPTH and draw(st.integers(0, COMBINE_ODDS)) == 0:
        kind = draw(st.sampled_from(["all", "any", "not"]))
        if kind == "not":
            return f"{{not: {draw(conditions(depth + 1))}}}"
        children = draw(st.lists(conditions(depth + 1), min_size=1, max_size=MAX_CHILDREN))
        return f"{{{kind}: [{', '.join(children)}]}}"
    path = draw(st.sampled_from(sorted(FIELDS)))
    field = FIELDS[path]
    if field.kind == "tristate":
        return f"{{field: {path}, is: {draw(st.sampled_from(['true', 'false', 'unknown', 'known']))}}}"
    if field.kind == "enum":
        values = [v for v in field.values if v is not None]
        if draw(st.booleans()):
            return f"{{field: {path}, equals: {draw(st.sampled_from(values))}}}"
        return f"{{field: {path}, in: [{', '.join(draw(st.lists(st.sampled_from(values), min_size=1, max_size=3)))}]}}"
    op = draw(st.sampled_from(["gte", "gt", "lte", "lt", "equals"]))
    number = draw(st.one_of(st.integers(-5, 600), st.floats(-1e30, 1e30, allow_nan=False, allow_infinity=False)))
    return f"{{field: {path}, {op}: {number!r}}}"


def _probe_patients() -> Iterator[dict[str, Any]]:
    """Patients that make many conditions true at once (the engine's per-fact limits) and none."""
    for answer in (True, False, None):
        for weeks in (None, 0, 3, 520):
            yield {"red_flags": dict.fromkeys(ALL_NO, answer), "exercise": {"weeks_consistent": weeks, "stage": "compound"},
                   "back_pain": {"present": answer, "trend": "worsening"}, "symptoms": {"deep_buttock_ache": answer},
                   "risk_factors": {"prolonged_sitting": answer, "poor_movement_patterns": answer}}


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(packs=st.lists(conditions(), min_size=1, max_size=40), extra=valid_patients())
def test_every_rule_set_the_loader_accepts_registers_and_evaluates(tmp_path_factory: pytest.TempPathFactory,
                                                                   packs: list[str], extra: dict[str, Any]) -> None:
    root = write_rule_set(tmp_path_factory.mktemp("pack"), rules_body({f"r-{i}": when for i, when in enumerate(packs)}))
    try:
        rs = cdss.load_rules(root)
    except RuleFileError as error:
        assert all(p.line is not None for p in error.problems)  # refused with a place to fix, never a crash
        return
    from cdss.compiler import compile_rules
    from cdss.engine import registration_problem

    assert registration_problem(compile_rules(rs.rules, dict(rs.parameter_values))) is None
    for doc in (*_probe_patients(), extra):
        rs.evaluate(doc, trace=True)  # trace=True also checks durable-rules against the Python evaluator
