"""The `cdss` command line: evaluate patients, validate rules and patients, show rules and schemas.

Startup is kept small: this module imports only click and the standard library at the top;
the loader (YAML, JSON Schema) and the rule engine are imported by the commands that need
them, so `cdss --help` and `cdss schema` stay fast.

Exit codes (also in `cdss --help` and the README):
0 evaluated / valid; 1 invalid patient document; 2 usage error; 3 invalid rule files;
4 internal error (a bug).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

import click

from .. import __version__

if TYPE_CHECKING:
    from .input import InputProblem
    from ..errors import RuleFileError
    from ..ruleset import RuleSet

EXIT_OK = 0
EXIT_PATIENT = 1
EXIT_STRICT = 1  # validate/audit --strict: a warning, finding or unverified quote
EXIT_FAILED = 1  # cdss test: a scenario expectation failed; cdss diff: the version did not move as semver says
EXIT_USAGE = 2
EXIT_RULES = 3
EXIT_INTERNAL = 4
EXIT_OUTPUT = 5
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

REPORT_TO = "please report it with the command you ran (README.md, 'Exit codes' says where)"

EXIT_CODES_HELP = """\b
Exit codes:
  0  evaluated (whatever the urgency) / everything valid
  1  a patient document is invalid (the message names the JSON path,
     what was expected and what was found); in a --jsonl batch: at
     least one line was invalid (every other line was still evaluated)
  1  (validate/audit --strict) a warning, finding or unverified quote;
     (test) a scenario failed; (diff) the version did not move as
     semver requires
  2  usage error
  3  the rule files are invalid (file:line:col: rule-id: message)
  4  internal error (a bug): one line; add --debug for the traceback
  5  the output cannot be written (disk full, standard output closed)
  130 / 143  interrupted (Ctrl-C / SIGTERM); every line written is complete
"""

FORMATS = ("json", "text", "cds-hooks", "fhir")


# ---------------------------------------------------------------- errors


class Fail(click.ClickException):
    """An error the user can act on: one line on stderr, `cdss: error: ...`, and an exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        from ..errors import printable

        click.echo(f"cdss: error: {printable(self.format_message())}", err=True)


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def rule_file_failure(error: RuleFileError, path: Path | None) -> Fail:
    """Exit 3 with the first problem (`file:line:col: rule-id: message`) and a pointer to the rest."""
    more = len(error.problems) - 1
    message = error.problems[0].format()
    if more:
        target = f" {path}" if path is not None else ""
        message += f" (and {more} more problem{'s' if more > 1 else ''}: run 'cdss validate{target}' to list them)"
    return Fail(_one_line(message, 1000), EXIT_RULES)


class CdssGroup(click.Group):
    """Maps every failure to its exit code and one line on stderr; a traceback only with --debug."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (KeyboardInterrupt, Exception) as error:  # noqa: BLE001 - the one place that turns any failure into an exit code
            _exit_for(ctx, error)

    @staticmethod
    def _failure(ctx: click.Context, error: Exception) -> Fail:
        from ..errors import EngineError, ParameterError, PatientDataError, RuleFileError

        if isinstance(error, RuleFileError):
            return rule_file_failure(error, None)
        if isinstance(error, ParameterError):
            return Fail(_one_line(str(error)), EXIT_USAGE)
        if isinstance(error, PatientDataError):
            return Fail(_one_line(str(error)), EXIT_PATIENT)
        if (ctx.obj or {}).get("debug"):
            import traceback

            traceback.print_exception(error, file=sys.stderr)
        what = "the rule engine failed" if isinstance(error, EngineError) else "internal error"
        detail = _one_line(f"{type(error).__name__}: {error}", 200)
        hint = "" if (ctx.obj or {}).get("debug") else "; rerun with --debug for the traceback"
        return Fail(f"{what} ({detail}); this is a bug in cdss: {REPORT_TO}{hint}", EXIT_INTERNAL)


def _exit_for(ctx: click.Context, error: BaseException) -> NoReturn:
    """Ctrl-C: 130; a closed pipe: 141, silently; output that cannot be written: 5; anything else:
    the user error it is (exit 1, 2 or 3) or an internal error (exit 4)."""
    if isinstance(error, KeyboardInterrupt):
        click.echo("cdss: interrupted", err=True)
        ctx.exit(EXIT_INTERRUPTED)
    if isinstance(error, BrokenPipeError):
        _silence_stdout()
        ctx.exit(EXIT_BROKEN_PIPE)
    if isinstance(error, OSError):
        output = output_failure(error)
        if output is None:
            raise CdssGroup._failure(ctx, error) from None
        _silence_stdout()
        raise output from None
    raise CdssGroup._failure(ctx, error) from None  # type: ignore[arg-type]


def exit_code_for(error: BaseException) -> int:
    """What `cdss` writes to stderr and exits with for `error` raised while a command ran; for the
    click-free `cdss evaluate` (cdss.cli.quick), whose output can fail to be written as click's can."""
    ctx = click.Context(cli, info_name="cdss", obj={"debug": False})
    try:
        _exit_for(ctx, error)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as failure:
        failure.show()
        return failure.exit_code


def output_failure(error: OSError) -> Fail | None:
    """Output that cannot be written (disk full, closed or broken descriptor) is the
    environment's problem, not a bug: exit 5 with the reason."""
    import errno

    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EBADF):
        return Fail(f"cannot write the output: {error.strerror or error}", EXIT_OUTPUT)
    return None


def _silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so the final flush does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


# ---------------------------------------------------------------- the group


@click.group(cls=CdssGroup, epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="On an internal error, print the full traceback.")
@click.version_option(__version__, prog_name="cdss", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """cdss: clinical guidance as auditable, executable data.

    Evaluate patient documents against the rule set (the bundled one, or --rules DIR),
    check rule files and patient documents, run scenario files (test), compare two
    versions of a rule set (diff), and read the rules and the JSON Schemas.
    cdss supports, never replaces, clinical judgement.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if sys.stdout is None:  # started with stdout closed (`>&-`)
        raise Fail("standard output is closed: nowhere to write the results", EXIT_OUTPUT)


def _rules_option(function: Any) -> Any:
    return click.option("--rules", "rules_path", type=click.Path(exists=True, path_type=Path), default=None,
                        metavar="DIR", help="Rule set directory (with ruleset.yaml) or one pack file; "
                        "default: the bundled rules.")(function)


def write_output(text: str, output: Path | None) -> None:
    """A report to standard output, or to `--output PATH` (exit 5 when it cannot be written)."""
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as error:
        raise Fail(f"--output {output}: cannot write it ({error.strerror or error})", EXIT_OUTPUT) from None
    click.echo(f"cdss: wrote {output}", err=True)


def load_rule_set(path: Path | None, overrides: dict[str, str] | None = None) -> RuleSet:
    """The rule set (exit 3 if invalid) with `--param` overrides applied (exit 2 if refused)."""
    from . import cache as cli_cache
    from ..errors import ParameterError, RuleFileError
    from ..ruleset import RuleSet

    try:
        rules = RuleSet(cli_cache.load(path))
    except RuleFileError as error:
        raise rule_file_failure(error, path) from None
    if overrides:
        try:
            rules = rules.with_parameters(overrides)
        except ParameterError as error:
            raise Fail(f"--param: {_one_line(str(error))}", EXIT_USAGE) from None
    return rules


def _parse_params(values: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise Fail(f"--param takes NAME=VALUE, got {item[:60]!r}", EXIT_USAGE)
        out[name.strip()] = value.strip()
    return out


def _binary(stream: Any) -> BinaryIO:
    """The byte stream under a text stream (sys.stdin / sys.stdout)."""
    sys.stdout.flush()
    return getattr(stream, "buffer", stream)  # type: ignore[no-any-return]


def _open_input(name: str) -> BinaryIO:
    if name == "-":
        return _binary(sys.stdin)
    try:
        return open(name, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as error:
        raise Fail(f"{name}: cannot read: {error.strerror or error}", EXIT_PATIENT) from None


def _read_document(name: str) -> Any:
    """Parse one patient document (strict JSON); InputProblem when it cannot be read as one."""
    from .input import InputProblem, parse_document, read_limited

    try:
        stream = _open_input(name)
    except Fail as failure:  # one unreadable FILE gets an error record in its place; the others go on
        raise InputProblem("$", "a readable file", "a file that cannot be read", failure.message) from None
    try:
        raw = read_limited(stream)
    finally:
        if name != "-":
            stream.close()
    return parse_document(raw)


# ---------------------------------------------------------------- evaluate


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("files", nargs=-1, required=True, metavar="FILE|- ...",
                type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="json: the result document; text: a readable summary; cds-hooks: a CDS Hooks response; "
                   "fhir: a FHIR R4 Bundle (GuidanceResponse, RequestGroup, CarePlan, ServiceRequests). "
                   "Default: text on a terminal, json otherwise.")
@click.option("--explain", is_flag=True, help="Add the trace: every rule, fired or not, each condition with the value it saw.")
@_rules_option
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Override a policy parameter (repeatable); see `cdss rules show`.")
@click.option("--jsonl", is_flag=True, help="Each FILE is JSON Lines (one patient per line); write one result per line.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --jsonl: evaluate in N processes (output order is kept).")
@click.option("--allow-in-progress", is_flag=True,
              help="Also evaluate FHIR QuestionnaireResponses whose status is in-progress (unfinished forms).")
def evaluate(files: tuple[str, ...], fmt: str | None, explain: bool, rules_path: Path | None,
             params: tuple[str, ...], jsonl: bool, workers: int, allow_in_progress: bool) -> None:
    """Evaluate patient documents: one result per FILE (`-` reads stdin).

    A FILE (or line) may also be a FHIR R4 QuestionnaireResponse to the Questionnaire of
    `cdss fhir questionnaire` (recognised by its resourceType); see docs/FHIR.md.

    \b
    JSON output is always one compact document per line, in FILE order: a single
    FILE gives one JSON document; several give JSON Lines. A FILE that is not a
    valid patient document yields, in its place, an error record
    {"file": ..., "error": {"path", "expected", "found", "message"}} (plus one line
    on stderr) and the others are still evaluated; the exit code is then 1.

    \b
    With --jsonl every non-blank input line yields one output line, in order:
    the result, or {"file": ..., "line": N, "error": {...}}. Blank lines are
    skipped. A summary (counts per urgency, errors) goes to stderr; exit 1 if any
    line was bad.
    """
    overrides = _parse_params(params)
    if jsonl:
        if fmt == "text":
            raise Fail("--jsonl writes one JSON document per line: use --format json, cds-hooks or fhir", EXIT_USAGE)
        fmt = fmt or "json"
    else:
        if workers != 1:
            raise Fail("--workers applies to --jsonl batches only", EXIT_USAGE)
        if fmt is None:
            fmt = "text" if sys.stdout.isatty() else "json"
    if explain and fmt in ("cds-hooks", "fhir"):
        what = "a CDS Hooks response" if fmt == "cds-hooks" else "FHIR resources"
        raise Fail(f"--explain cannot be expressed in {what}: use --format json or text", EXIT_USAGE)
    rules = load_rule_set(rules_path, overrides)
    if jsonl:
        from . import batch as cli_batch

        def inputs() -> Iterator[tuple[str, Any]]:
            for name in files:
                try:
                    stream = _open_input(name)
                except Fail as failure:  # an error record in its place; the other FILEs go on
                    yield name, failure
                    continue
                try:
                    yield name, stream
                finally:
                    if name != "-":
                        stream.close()

        code = cli_batch.run(inputs(), rules, out=_binary(sys.stdout), workers=workers,
                             trace=explain, fmt=fmt, err=sys.stderr, allow_in_progress=allow_in_progress)
        sys.stdout.flush()
        if code:
            raise click.exceptions.Exit(code)
        return
    failed = False
    for index, name in enumerate(files):
        try:
            text = _evaluate_one(name, rules, fmt=fmt, explain=explain, overrides=overrides,
                                 label=name if len(files) > 1 else None, allow_in_progress=allow_in_progress)
        except _InputFailure as failure:
            failed = True
            click.echo(printable(f"cdss: error: {name}: {failure.problem.message}"), err=True)
            if fmt != "text":
                from .batch import error_record

                click.echo(error_record(name, None, failure.problem))
            continue
        if fmt == "text" and index:
            click.echo("")
        click.echo(text)
    if failed:
        raise click.exceptions.Exit(EXIT_PATIENT)


class _InputFailure(Exception):
    def __init__(self, problem: InputProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _evaluate_one(name: str, rules: RuleSet, *, fmt: str, explain: bool, overrides: dict[str, str],
                  label: str | None, allow_in_progress: bool = False) -> str:
    from .input import InputProblem, patient_problem, with_fhir_options
    from .quick import formatted  # the same text as the click-free path writes
    from ..errors import PatientDataError

    try:
        document = _read_document(name)
        try:
            assessment = rules.evaluate(with_fhir_options(document, rules, allow_in_progress), trace=explain)
            if fmt == "fhir":  # may refuse a patient_id FHIR cannot carry
                return formatted(assessment, fmt)
        except PatientDataError as error:
            raise patient_problem(error, document) from None
    except InputProblem as problem:
        raise _InputFailure(problem) from None
    if fmt != "text":
        return formatted(assessment, fmt)
    from .textreport import render_result

    return render_result(assessment.to_dict(), overrides=overrides, label=label)


# ---------------------------------------------------------------- validate


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("paths", nargs=-1, metavar="[PATH...]", type=click.Path(allow_dash=True, exists=True))
@click.option("--patients", is_flag=True,
              help="The PATHs are patient JSON documents (or directories of *.json, or - for stdin), not rules.")
@click.option("--strict", "--fail-on-warning", "strict", is_flag=True,
              help="Rules: exit 1 on any warning (draft rules, unused parameters, a YAML file not listed in packs...) "
                   "or when quotes cannot be verified (no source declared).")
def validate(paths: tuple[str, ...], patients: bool, strict: bool) -> None:
    """Check rule sets / packs (default: the bundled rules), or patient documents.

    \b
    Rules: every problem is printed as `file:line:col: rule-id: message`; every
    quote is checked verbatim against the sources ruleset.yaml declares. Exit 3
    if any error; with --strict, exit 1 if any warning or if quotes are not
    verified; else 0.
    Patients (--patients): every invalid document is printed as
    `file: $.path: expected ..., found ...`; exit 1 if any is invalid, else 0.
    """
    if patients:
        _validate_patients(paths)
        return
    from ..evidence import NO_SOURCE
    from ..loader import _display, collect
    from ..resources import rules_dir

    failed = unsure = False
    for path in paths or (None,):
        loaded, problems = collect(path)
        if loaded is not None:
            problems = [*_registration_problems(loaded), *problems]
            loaded = None if problems and problems[0].severity == "error" else loaded
        errors = [p for p in problems if p.severity == "error"]
        warnings = [p for p in problems if p.severity != "error"]
        for problem in problems:
            click.echo(printable(problem.format()))
        shown = path if path is not None else f"{_display(rules_dir())} (bundled)"
        if errors or loaded is None:
            failed = True
            verdict = f"INVALID: {len(errors)} error{'s' if len(errors) != 1 else ''}"
            quotes = ""
        else:
            unsure = unsure or bool(warnings) or not loaded.sources
            verdict = f"ok, {len(loaded.rules)} rules in {len(loaded.packs)} pack{'s' if len(loaded.packs) != 1 else ''}"
            quotes = (f"; {len(loaded.rules)} quotes verified against "
                      f"{', '.join(_display(s.path) for s in loaded.sources)}" if loaded.sources else f"; {NO_SOURCE}")
        click.echo(f"cdss: {shown}: {verdict}, {len(warnings)} warning{'s' if len(warnings) != 1 else ''}{quotes}", err=True)
    if failed:
        raise click.exceptions.Exit(EXIT_RULES)
    if strict and unsure:
        click.echo("cdss: --strict: failing on the warnings / unverified quotes above", err=True)
        raise click.exceptions.Exit(EXIT_STRICT)


def _registration_problems(loaded: Any) -> list[Any]:
    """Compile the rule set and register it with durable-rules, as `evaluate` will: what validates runs."""
    from ..compiler import compile_rules
    from ..engine import registration_problem
    from ..errors import Problem

    values = {name: p.default for name, p in loaded.parameters.items()}
    problem = registration_problem(compile_rules(loaded.rules, values))
    return [Problem(str(loaded.root), None, None, None, problem)] if problem else []


def printable(text: str) -> str:
    """Messages with caller-supplied text (file names, keys) cannot drive the terminal."""
    from ..errors import printable as escape

    return escape(text)


def _patient_paths(paths: Sequence[str]) -> Iterator[str]:
    for path in paths:
        if path != "-" and Path(path).is_dir():
            found = sorted(Path(path).glob("*.json"))
            if not found:
                raise Fail(f"{path}: no *.json patient documents in this directory", EXIT_USAGE)
            yield from (str(p) for p in found)
        else:
            yield path


def _validate_patients(paths: Sequence[str]) -> None:
    from .input import InputProblem, check_patient

    if not paths:
        raise Fail("--patients needs at least one PATH (a JSON file, a directory of them, or -)", EXIT_USAGE)
    for path in paths:
        if path != "-" and not Path(path).exists():
            raise Fail(f"{path}: no such file or directory", EXIT_USAGE)
    total = invalid = 0
    for name in _patient_paths(paths):
        total += 1
        try:
            check_patient(_read_document(name))
        except InputProblem as problem:
            invalid += 1
            click.echo(printable(f"{name}: {problem.message}"))
    click.echo(f"cdss: {total} patient document{'s' if total != 1 else ''}: "
               f"{total - invalid} valid, {invalid} invalid", err=True)
    if invalid:
        raise click.exceptions.Exit(EXIT_PATIENT)


# ---------------------------------------------------------------- rules


@cli.group()
def rules() -> None:
    """Read the rules: a table of every rule, or one rule in full."""


@rules.command("list")
@_rules_option
def rules_list(rules_path: Path | None) -> None:
    """A table of the rules: id, category, indicator, status, guidance ids."""
    from .textreport import render_rule_table

    click.echo(render_rule_table(load_rule_set(rules_path)))


@rules.command("show")
@click.argument("rule_id", metavar="ID")
@_rules_option
def rules_show(rule_id: str, rules_path: Path | None) -> None:
    """One rule for a human: condition in words, outputs, parameters, guidance, source quote."""
    from ..loader import nearest
    from .textreport import render_rule

    rule_set = load_rule_set(rules_path)
    ids = [r.id for r in rule_set.rules]
    if rule_id not in ids:
        raise Fail(f"no rule '{rule_id}'{nearest(rule_id, ids)} (see 'cdss rules list')", EXIT_USAGE)
    click.echo(render_rule(rule_set, rule_set.rule(rule_id)))


# ---------------------------------------------------------------- schema


@cli.command()
@click.argument("name", metavar="NAME", type=click.Choice(("patient", "result", "rule-pack", "rule-set", "scenario", "guidance")))
def schema(name: str) -> None:
    """Print a JSON Schema (draft 2020-12), the normative form of a contract.

    NAME: patient, result, rule-pack, rule-set, scenario or guidance.
    """
    from ..resources import schema_text

    text = schema_text(name)
    click.echo(text, nl=not text.endswith("\n"))


# ---------------------------------------------------------------- audit


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--source", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Check every quote against this document instead of the sources ruleset.yaml declares.")
@click.option("--format", "fmt", type=click.Choice(("markdown", "html")), default="markdown", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, writable=True, path_type=Path), default=None,
              help="Write the rulebook here instead of stdout.")
@_rules_option
@click.option("--scenarios", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Scenario directory (default: examples/scenarios beside the rule set, as for the bundled rules); "
                   "a scenario the rules do not meet is a problem.")
@click.option("--strict", is_flag=True, help="Exit 1 if there is any problem or warning, or quotes are not verified.")
def audit(source: Path | None, fmt: str, output: Path | None, rules_path: Path | None, scenarios: Path | None,
          strict: bool) -> None:
    """Write the rulebook: every rule with its source, parameters and the scenarios that exercise it.

    \b
    The counts of findings go to stderr. Exit 0 whatever the findings (the
    rulebook lists them), unless --strict: then exit 1 on any problem or
    warning, or when quotes are not verified (notes ask a reviewer to confirm
    something intended and never fail).
    """
    from .. import audit as audit_module

    rule_set = load_rule_set(rules_path)
    try:
        data = audit_module.prepare(rule_set, source=source, scenarios=scenarios)
    except UnicodeDecodeError:
        raise Fail(f"--source {source}: not UTF-8 text; give the source document as UTF-8", EXIT_USAGE) from None
    except OSError as error:
        raise Fail(f"--source {source}: cannot read it ({error.strerror or error})", EXIT_USAGE) from None
    text = audit_module.to_html(data) if fmt == "html" else audit_module.to_markdown(data)
    write_output(text, output)
    c = data.counts
    quotes = (f"{c['quotes_found']} of {c['rules']} quotes found verbatim" if data.source_given
              else "quotes not verified: no source declared")
    click.echo(f"cdss: audit: {c['findings_problem']} problem{'s' if c['findings_problem'] != 1 else ''}, "
               f"{c['findings_warning']} warning{'s' if c['findings_warning'] != 1 else ''}, "
               f"{c['findings_note']} note{'s' if c['findings_note'] != 1 else ''}; {quotes}", err=True)
    if strict and (c["findings_problem"] or c["findings_warning"] or c["quotes_not_found"] or not data.source_given):
        click.echo("cdss: --strict: failing on the findings above", err=True)
        raise click.exceptions.Exit(EXIT_STRICT)


def _register() -> None:
    """Commands defined in their own modules (one line each, so parallel work merges cleanly)."""
    from .diff import diff_command
    from .test import test_command

    cli.add_command(test_command)
    cli.add_command(diff_command)


_register()


cli.add_command(__import__("cdss.cli.batchjob", fromlist=["batch"]).batch)  # cdss batch (Dask), issue 14


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console entry point (`cdss`)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="cdss")
    raise SystemExit(0)  # pragma: no cover - click exits itself


cli.add_command(importlib.import_module(".fhir", __package__).fhir)  # cdss fhir ... (cdss/cli/fhir.py: click only)

if __name__ == "__main__":  # pragma: no cover
    main()


from .feedback import feedback as _feedback  # issue 11: `cdss feedback report`
from .serve import serve as _serve  # issue 11: `cdss serve` (imports the web stack only when run)

cli.add_command(_serve)
cli.add_command(_feedback)
