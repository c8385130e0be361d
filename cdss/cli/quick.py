"""`cdss evaluate FILE...` without click: the one-patient command is mostly start-up (issue 15).

Importing click and building every command's options cost a seventh of a one-patient run,
and freeing every module and object at exit another 7 %; neither changes a result. So
`cdss.cli.main` first offers the command line to `run()` here, which takes only the plain
form: `evaluate` followed by existing readable FILEs and the options `--format json|cds-hooks|
fhir`, `--explain`, `--rules DIR`, `--param NAME=VALUE` and `--allow-in-progress`, each at most
once (`--param` repeatable), to a UTF-8 standard output, not on Windows. It computes every
result first and writes nothing until all succeeded; anything else (another command, `--help`,
`-`, the text report, an unknown or repeated option, a missing file, an invalid patient or
rule file, any exception) returns untouched and the click command runs instead, so every
message, help text and exit code is the click command's. Output is byte-identical: the same
function makes the text (`formatted`, shared with `commands._evaluate_one`), written as
`click.echo` writes it to a UTF-8 stream (the text holds no ANSI codes). A failed write exits
through the click command's own mapping (`commands.exit_code_for`). Tests:
tests/test_cold_start.py runs both paths on the same command lines.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence
from typing import Any

FORMATS = ("json", "cds-hooks", "fhir")
"""What the fast path writes; `text` (ANSI styling, stripped by click off a terminal) stays with click."""

_VALUED = {"--format": "fmt", "--rules": "rules", "--param": "params"}
_FLAGS = {"--explain": "explain", "--allow-in-progress": "allow_in_progress"}


def parse(args: Sequence[str]) -> dict[str, Any] | None:
    """The options of a plain `evaluate FILE...` command line, or None for anything else."""
    if len(args) < 2 or args[0] != "evaluate":
        return None
    seen: dict[str, Any] = {"files": [], "params": []}
    tokens = iter(args[1:])
    for token in tokens:
        if not token.startswith("-"):
            seen["files"].append(token)
            continue
        name, equals, value = token.partition("=")
        if name in _FLAGS and not equals:
            if _FLAGS[name] in seen:
                return None
            seen[_FLAGS[name]] = True
        elif name in _VALUED:
            if not equals:
                value = next(tokens, None)  # type: ignore[arg-type]
                if value is None or value.startswith("-"):
                    return None
            key = _VALUED[name]
            if key == "params":
                seen["params"].append(value)
            elif key in seen:
                return None
            else:
                seen[key] = value
        else:  # -, --, -h, --help, --jsonl, --workers, an unknown option: click decides
            return None
    if not seen["files"] or seen.get("fmt", "json") not in FORMATS:
        return None
    if seen.get("explain") and seen.get("fmt", "json") != "json":
        return None  # click explains why --explain cannot be expressed in that format
    for name in seen["files"]:
        if not (os.path.isfile(name) and os.access(name, os.R_OK)):
            return None
    if "rules" in seen and not (os.path.exists(seen["rules"]) and os.access(seen["rules"], os.R_OK)):
        return None
    overrides: dict[str, str] = {}
    for item in seen["params"]:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            return None
        overrides[name.strip()] = value.strip()
    seen["params"] = overrides
    return seen


def _utf8_stdout() -> bool:
    """click.echo writes to sys.stdout as it is when its encoding is not ASCII: require UTF-8."""
    import codecs

    encoding = getattr(sys.stdout, "encoding", None)
    try:
        return encoding is not None and codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False


def formatted(assessment: Any, fmt: str) -> str:
    """One result as the `evaluate` command writes it in a machine format (json, cds-hooks, fhir).
    fhir may raise PatientDataError (a patient_id FHIR cannot carry)."""
    if fmt == "json":
        return str(assessment.to_json())
    from ..result import compact

    if fmt == "cds-hooks":
        return compact(assessment.to_cds_hooks())
    if fmt == "fhir":
        from ..fhir.guidance import guidance_bundle

        return compact(guidance_bundle(assessment.to_dict()))
    raise ValueError(f"not a machine format: {fmt}")


def _results(plan: dict[str, Any]) -> list[str]:
    """Every result text, in FILE order; raises on anything the click command would report."""
    from pathlib import Path

    from . import cache as cli_cache
    from .input import parse_document, read_limited, with_fhir_options
    from ..ruleset import RuleSet

    rules = RuleSet(cli_cache.load(Path(plan["rules"]) if "rules" in plan else None))
    if plan["params"]:
        rules = rules.with_parameters(plan["params"])
    gc.freeze()  # what was built so far lives until exit: the collector (off since run began) skips it from now on
    gc.enable()
    out = []
    for name in plan["files"]:
        with open(name, "rb") as stream:
            document = parse_document(read_limited(stream))
        assessment = rules.evaluate(with_fhir_options(document, rules, bool(plan.get("allow_in_progress"))),
                                    trace=bool(plan.get("explain")))
        out.append(formatted(assessment, plan.get("fmt", "json")))
    return out


def run(argv: Sequence[str] | None = None) -> None:
    """Evaluate and exit when the command line is a plain `evaluate` that succeeds; else return."""
    if os.name == "nt":  # click expands wildcards in sys.argv and writes to the console its own way there
        return
    args = list(sys.argv[1:] if argv is None else argv)
    plan = parse(args)
    if plan is None or sys.stdout is None or os.environ.get("_CDSS_COMPLETE") or not _utf8_stdout():
        return
    if "fmt" not in plan and sys.stdout.isatty():
        return  # the default on a terminal is the text report
    gc.disable()  # the collector's passes over every new module's objects cost 3 % of a one-patient run
    try:
        texts = _results(plan)
    except KeyboardInterrupt as interrupt:
        _fail(interrupt)
    except Exception:  # noqa: BLE001 - any doubt: the click command runs and reports it its own way
        return
    finally:
        gc.enable()
    text = "".join(t + "\n" for t in texts)
    if "\x1b" in text:  # click.echo would strip ANSI codes off a terminal (results never hold one)
        return
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except (KeyboardInterrupt, Exception) as error:  # noqa: BLE001 - mapped exactly as the click command maps it
        _fail(error)
    _exit_now()


def _fail(error: BaseException) -> None:
    """Exit as the click command exits for an error raised while it ran (broken pipe, full disk, Ctrl-C)."""
    from .commands import exit_code_for

    sys.exit(exit_code_for(error))


def _exit_now() -> None:
    """Exit 0 without freeing every module and object (a tenth of a one-patient run): the output
    is flushed, atexit handlers still run, and with any other thread alive the normal exit runs."""
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        sys.exit(0)
    import atexit

    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - the normal exit reports what it can
        sys.exit(0)
    os._exit(0)
