"""Cold start (issue 15): with a warm rule-set cache, `cdss evaluate` imports no YAML, no JSON Schema, no ctypes,
no click (cdss.cli.quick), and its click-free path answers exactly as the click command does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATIENT = ROOT / "examples" / "patients" / "classic-beginner.json"

PROBE = """
import atexit, sys
atexit.register(lambda: sys.stderr.write("MODULES " + " ".join(sorted(m for m in sys.modules if "." not in m)) + "\\n"))
from cdss.cli import main
sys.argv = ["cdss", *sys.argv[1:]]
sys.exit(main())
"""


def run(*args: str, cache: Path) -> tuple[str, set[str]]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CDSS_CACHE_DIR": str(cache)})
    assert done.returncode == 0, done.stderr
    modules = next(line for line in done.stderr.splitlines() if line.startswith("MODULES ")).split()[1:]
    return done.stdout, set(modules)


def test_a_cache_hit_imports_neither_yaml_nor_jsonschema(tmp_path: Path) -> None:
    cold, cold_modules = run("evaluate", "--format", "json", str(PATIENT), cache=tmp_path / "cache")
    warm, warm_modules = run("evaluate", "--format", "json", str(PATIENT), cache=tmp_path / "cache")
    assert {"yaml", "jsonschema"} <= cold_modules  # the first run reads and checks the rule files
    assert not {"yaml", "jsonschema", "fastjsonschema", "ctypes"} & warm_modules, sorted(warm_modules)
    assert warm == cold and json.loads(warm)["rule_set"]["id"]


def test_a_plain_evaluate_imports_no_click(tmp_path: Path) -> None:
    """The one-patient command takes the click-free path (cdss.cli.quick); anything else still gets click."""
    run("evaluate", "--format", "json", str(PATIENT), cache=tmp_path / "cache")
    _, modules = run("evaluate", "--format", "json", "--explain", str(PATIENT), str(PATIENT), cache=tmp_path / "cache")
    assert "click" not in modules, sorted(modules)
    _, modules = run("evaluate", "--format", "text", str(PATIENT), cache=tmp_path / "cache")
    assert "click" in modules


# ---------------------------------------------------------------- the click-free path changes nothing

FAST = [sys.executable, "-c", "import sys; from cdss.cli import main; sys.exit(main())"]
CLICK = [sys.executable, "-c", "import sys; from cdss.cli.commands import main; sys.exit(main())"]


def both(args: list[str], cache: Path, stdout: Any = subprocess.PIPE) -> tuple[Any, Any]:
    """(cdss.cli.main, the click command) run on the same command line: returncode, stdout, stderr."""
    env = {**os.environ, "CDSS_CACHE_DIR": str(cache)}
    out = []
    for command in (FAST, CLICK):
        done = subprocess.run([*command, *args], cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE, timeout=120, env=env)
        out.append((done.returncode, done.stdout, done.stderr))
    return out[0], out[1]


def test_quick_parse_takes_only_the_plain_form() -> None:
    from cdss.cli.quick import parse

    name = str(PATIENT)
    plan = parse(["evaluate", "--format=cds-hooks", name, "--param", "a=1", "--param=b= 2 ", "--rules", str(ROOT / "rules")])
    assert plan == {"files": [name], "params": {"a": "1", "b": "2"}, "fmt": "cds-hooks", "rules": str(ROOT / "rules")}
    for args in (["validate", name], ["evaluate"], ["evaluate", "-"], ["evaluate", "--", name], ["evaluate", "-h", name],
                 ["evaluate", "--help"], ["evaluate", "--jsonl", name], ["evaluate", "--workers", "1", name],
                 ["evaluate", "--format", "text", name], ["evaluate", "--format", "JSON", name],
                 ["evaluate", "--format", "json", "--format", "json", name], ["evaluate", "--explain", "--explain", name],
                 ["evaluate", "--explain", "--format", "fhir", name], ["evaluate", "--format", name],
                 ["evaluate", "--format", "--explain", name], ["evaluate", "--param", "novalue", name],
                 ["evaluate", "--param", "=1", name], ["evaluate", "--rules", "/nonexistent", name],
                 ["evaluate", "/nonexistent.json"], ["evaluate", str(ROOT)], ["evaluate", "--debug", name],
                 ["--debug", "evaluate", name], ["evaluate", "--explain=yes", name], ["evaluate", "-x", name]):
        assert parse(args) is None, args


@pytest.mark.parametrize("args", [
    ["--format", "json"], ["--format", "cds-hooks"], ["--format", "fhir"], ["--explain"], [],
    ["--param", "escalation_refer_weeks=5", "--format=json"], ["--rules", "rules", "--allow-in-progress"],
])
def test_the_quick_path_writes_what_the_click_command_writes(tmp_path: Path, args: list[str]) -> None:
    files = [str(PATIENT), str(ROOT / "examples" / "patients" / "escalation-week-5.json"), str(PATIENT)]
    fast, click = both(["evaluate", *args, *files], tmp_path / "cache")
    assert fast == click and fast[0] == 0 and fast[1].count(b"\n") == 3 and not fast[2]
    fast, click = both(["evaluate", *args, *files], tmp_path / "cache")  # from the warm cache too
    assert fast == click


@pytest.mark.parametrize("args", [
    ["evaluate", "--format", "json", "examples/patients/empty.json", "NO-SUCH-FILE.json"],  # click's usage error
    ["evaluate", "--format", "json", "BAD"],  # an invalid patient document: error record, exit 1
    ["evaluate", "--format", "json", "LIST"],  # a list of patients: the hint
    ["evaluate", "--format", "fhir", "--explain", "examples/patients/empty.json"],
    ["evaluate", "--param", "no_such_parameter=3", "examples/patients/empty.json"],
    ["evaluate", "--param", "escalation_refer_weeks=-1", "examples/patients/empty.json"],
    ["evaluate", "--rules", "examples/rule-errors", "examples/patients/empty.json"],  # exit 3, file:line
    ["evaluate", "--format", "text", "examples/patients/empty.json"],
    ["evaluate", "examples/patients/empty.json"],  # not a terminal: json
    ["evaluate", "--help"], ["--help"], ["--version"], ["evaluate"],
])
def test_every_other_command_line_gets_the_click_commands_answer(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "bad.json").write_text('{"age": "forty"}')
    (tmp_path / "list.json").write_text(f"[{PATIENT.read_text()}]")
    args = [str(tmp_path / "bad.json") if a == "BAD" else str(tmp_path / "list.json") if a == "LIST" else a for a in args]
    fast, click = both(args, tmp_path / "cache")
    assert fast == click
    assert fast[1] or fast[2]


def test_output_that_cannot_be_written_fails_as_the_click_command_does(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with open("/dev/full", "wb") as full:
        fast, click = both(["evaluate", "--format", "json", str(PATIENT)], tmp_path / "cache", stdout=full)
    assert fast == click
    assert fast[0] == 5 and fast[2].startswith(b"cdss: error: cannot write the output"), fast
