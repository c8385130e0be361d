"""`cdss diff OLD NEW`: what changed in meaning between two rule sets, and whether the version moved as semver says.

OLD and NEW are rule-set directories or git revisions (`HEAD~3`, `v1.0.0:rules`). Only click is
imported at the top; the loader, git and the renderers load when the command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from .commands import EXIT_CODES_HELP, EXIT_FAILED, EXIT_USAGE, Fail, rule_file_failure, write_output


@click.command("diff", epilog=EXIT_CODES_HELP)
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="[NEW]", required=False, default=None)
@click.option("--format", "fmt", type=click.Choice(("markdown", "html")), default="markdown", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, writable=True, path_type=Path), default=None,
              help="Write the report here instead of stdout.")
def diff_command(old: str, new: str | None, fmt: str, output: Path | None) -> None:
    """Report what changed in meaning from OLD to NEW, for the re-sign-off of NEW.

    \b
    OLD and NEW: rule-set directories, or git revisions of the repository you
    are in: REV (its rules/ directory) or REV:PATH (e.g. HEAD~3:rules). NEW
    defaults to the bundled rules (the working tree). Reports rules added,
    retired and changed (condition in plain English before and after, outputs,
    urgency, quotes), parameters and defaults, the guidance catalogue and the
    sources, each with the semver bump it needs. Exit 1 if the version did not
    move as far as the changes need (e.g. a changed condition without a major
    bump), saying which version to set; the verdict line goes to stderr.
    """
    import tempfile

    from ..audit.diff import RevisionError, diff, materialize, render_diff
    from ..errors import RuleFileError
    from ..loader import load
    from ..resources import rules_dir

    with tempfile.TemporaryDirectory(prefix="cdss-diff-") as tmp:
        sides = []
        for spec in (old, new):
            if spec is None:
                sides.append((rules_dir(), "working tree"))
                continue
            try:
                sides.append((materialize(spec, Path(tmp)), spec))
            except RevisionError as error:
                raise Fail(str(error), EXIT_USAGE) from None
        loaded = []
        for path, label in sides:
            try:
                loaded.append(load(path))
            except RuleFileError as error:
                failure = rule_file_failure(error, None)
                raise Fail(f"{label}: {failure.message}", failure.exit_code) from None
        report = diff(loaded[0], loaded[1], old_label=sides[0][1], new_label=sides[1][1])
        text = render_diff(report, fmt)
    write_output(text, output)
    click.echo(f"cdss: diff: {len(report.changes)} change{'s' if len(report.changes) != 1 else ''}; "
               f"{'' if report.ok else 'ERROR: '}{report.verdict}", err=True)
    if not report.ok:
        raise click.exceptions.Exit(EXIT_FAILED)
