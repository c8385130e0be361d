"""`cdss test`: run scenario files (patients with the result a rule set must produce) against a rule set.

The rule author's test runner, like `openfisca test`: one line per failing expectation,
`file:line: scenario: what: expected X, found Y`, so an editor or CI log jumps to the line;
a summary; exit 1 on any failure. Only click is imported at the top (`cdss --help` stays fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .commands import EXIT_CODES_HELP, EXIT_FAILED, EXIT_RULES, EXIT_USAGE, Fail, _rules_option, load_rule_set


@click.command("test", epilog=EXIT_CODES_HELP)
@click.argument("paths", nargs=-1, metavar="[SCENARIO_FILE|DIR ...]",
                type=click.Path(exists=True, path_type=Path))
@_rules_option
@click.option("--format", "fmt", type=click.Choice(("text", "json")), default="text", show_default=True,
              help="text: one line per failing expectation and a summary; json: one document for tools.")
def test_command(paths: tuple[Path, ...], rules_path: Path | None, fmt: str) -> None:
    """Run scenario files against the rule set; exit 1 if any expectation fails.

    \b
    Default scenarios: the examples/scenarios directory beside the rule set
    (for the bundled rules, the bundled examples). Each failing expectation is
    one line: `file:line: scenario: what: expected X, found Y`. The summary
    (scenarios passed / failed) goes to stderr in text form.
    """
    from ..audit.build import default_scenarios_dir
    from ..errors import RuleFileError
    from ..loader import _display
    from ..scenarios import load_scenario_files, mismatches, scenario_files

    rules = load_rule_set(rules_path)
    if not paths:
        default = default_scenarios_dir(rules)
        if default is None:
            raise Fail("no scenarios given and no examples/scenarios directory beside the rule set: "
                       "name scenario files or directories", EXIT_USAGE)
        paths = (default,)
    files = scenario_files(paths)
    if not files:
        raise Fail(f"no *.yaml scenario files in {', '.join(map(str, paths))}", EXIT_USAGE)
    try:
        scenarios = load_scenario_files(files)
    except RuleFileError as error:  # every problem of every scenario file, then exit 3
        for problem in error.problems:
            click.echo(problem.format(), err=True)
        raise Fail(f"{len(error.problems)} problem{'s' if len(error.problems) != 1 else ''} in the scenario files "
                   "(schema: cdss schema scenario)", EXIT_RULES) from None
    failures: list[dict[str, Any]] = []
    failed_scenarios = 0
    for scenario in scenarios:
        found = mismatches(scenario, rules)
        failed_scenarios += bool(found)
        for m in found:
            failures.append({"file": _display(Path(scenario.file)), "line": scenario.line_of(m.key),
                             "scenario": scenario.name, "what": m.what, "expected": m.expected, "found": m.found})
    passed = len(scenarios) - failed_scenarios
    info = rules.loaded.info
    if fmt == "json":
        from ..result import canonical

        click.echo(canonical({
            "rule_set": {"id": info.id, "version": info.version, "digest": info.digest},
            "files": [_display(f) for f in files], "scenarios": len(scenarios), "passed": passed,
            "failed": failed_scenarios, "failures": failures}))
    else:
        for f in failures:
            where = f"{f['file']}:{f['line']}" if f["line"] is not None else f["file"]
            click.echo(f"{where}: {f['scenario']}: {f['what']}: expected {f['expected']}, found {f['found']}")
        verdict = f"{passed} passed" + (f", {failed_scenarios} FAILED ({len(failures)} failing expectation"
                                        f"{'s' if len(failures) != 1 else ''})" if failed_scenarios else "")
        click.echo(f"cdss test: {len(scenarios)} scenario{'s' if len(scenarios) != 1 else ''} in {len(files)} "
                   f"file{'s' if len(files) != 1 else ''} against {info.id} {info.version}: {verdict}", err=True)
    if failed_scenarios:
        raise click.exceptions.Exit(EXIT_FAILED)


__all__ = ["test_command"]
