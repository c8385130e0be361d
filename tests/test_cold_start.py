"""Cold start (issue 15): with a warm rule-set cache, `cdss evaluate` imports no YAML, no JSON Schema, no ctypes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
