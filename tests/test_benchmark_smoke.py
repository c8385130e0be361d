"""The benchmark script runs, end to end, in its tiny --quick mode (no timing is asserted).

Its self-check is what matters here: before timing anything, benchmarks/run.py exits
non-zero unless the one-pass validation+flattening equals `validate_patient` + `flatten`
(on valid and on mutated, mostly invalid documents), durable-rules, the reference
interpreter and the generated plain-Python rules fire the same rules, and the spliced
`to_json()` equals `json.dumps(to_dict())`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_quick_mode_runs_and_reports() -> None:
    """Without --output the run writes an untracked, timestamped file and says where; the tracked
    latest.json (the README's figures) is left alone (only --record writes it)."""
    recorded = ROOT / "benchmarks" / "results" / "latest.json"
    before = recorded.read_bytes()
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    match = re.search(r"written to (\S+run-\d{8}T\d{6}Z\.json)\)", done.stderr)
    assert match, done.stderr[-500:]
    output = Path(match.group(1))
    try:
        assert output.parent == recorded.parent and recorded.read_bytes() == before
        result = json.loads(output.read_text(encoding="utf-8"))
    finally:
        output.unlink(missing_ok=True)
    assert result["self_check"]["documents"] > 0 and result["self_check"]["mutants_invalid"] > 0
    assert result["self_check"]["one_pass_validation"], "prepare() fell back to two passes: see compile_checked_flattener"
    for path in ("evaluate", "raw_engine", "host_engine", "python_generated", "python_reference"):
        assert result["per_patient"][path]["calls"] > 0
    assert result["rss"]["evaluations"] > 0
    assert "cold_start" in result["cli"] and "batch" in result["cli"]
    assert "| (a) `RuleSet.evaluate()`" in done.stdout


def test_record_refuses_a_quick_run() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--record"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--record" in done.stderr
