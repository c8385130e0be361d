"""`cdss batch`: population screening on Dask (a LocalCluster, or an existing cluster).

Only option parsing and messages live here; the job is `cdss.batch.job`. Heavy imports
(dask, pandas, pyarrow) happen inside the command so `cdss --help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .commands import EXIT_INTERNAL, EXIT_PATIENT, EXIT_USAGE, Fail, _parse_params, _rules_option, load_rule_set

BATCH_EPILOG = """\b
Exit codes:
  0  every record evaluated; the summary adds up
  1  some records were invalid (each has an error record in its place)
  2  usage error (bad option, unreadable input, output directory not
     empty without --resume, or --resume with other inputs/rules)
  3  the rule files are invalid
  4  internal error, or the output does not add up to the input (a bug)
"""


@click.command("batch", epilog=BATCH_EPILOG)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...",
                type=click.Path(exists=True, dir_okay=False))
@click.option("--output", required=True, type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Directory for one output file per input partition, plus _SUMMARY.json.")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="Use the Dask cluster at ADDRESS (e.g. tcp://host:8786); inputs and DIR must be "
                   "readable/writable by its workers at the same paths.")
@click.option("--local-workers", type=click.IntRange(min=1), default=None, metavar="N",
              help="Without --scheduler: start a LocalCluster of N worker processes (default: CPU count).")
@_rules_option
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Override a policy parameter (repeatable); see `cdss rules show`.")
@click.option("--format", "fmt", type=click.Choice(("jsonl", "parquet")), default="jsonl", show_default=True,
              help="jsonl: the lines `cdss evaluate --jsonl` writes; parquet: flat columns plus the whole result.")
@click.option("--resume", is_flag=True, help="Finish an interrupted run into DIR: compute only partitions "
              "without an output file (same inputs, rules and options required).")
@click.option("--partition-lines", type=click.IntRange(min=1), default=10_000, show_default=True, metavar="N",
              help="Lines (or Parquet rows) per partition; a .gz file is always one partition.")
@click.option("--column", default="document", show_default=True, metavar="NAME",
              help="Parquet inputs: the column holding each patient document as JSON text.")
def batch(inputs: tuple[str, ...], output: Path, scheduler: str | None, local_workers: int | None,
          rules_path: Path | None, params: tuple[str, ...], fmt: str, resume: bool, partition_lines: int,
          column: str) -> None:
    """Evaluate JSON Lines (.jsonl, .gz) or Parquet INPUTs on Dask into DIR.

    \b
    Every input line (blank lines excepted) or row gives one output record, in
    order within its partition file: the result, or an error record
    {"file", "line" (or "row"), "error"} in its place. Each partition file is
    written to a temporary name and renamed when complete; a killed run can be
    finished with --resume. _SUMMARY.json counts urgencies, rules and errors,
    and the command checks that the counts add up to the input count.
    """
    if scheduler and local_workers:
        raise Fail("give --scheduler ADDRESS or --local-workers N, not both", EXIT_USAGE)
    overrides = _parse_params(params)
    rules = load_rule_set(rules_path, overrides)
    try:
        from ..batch import job
        from ..batch.frame import RuleSource
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise Fail(f"cdss batch needs the dask extra ({error.name} is missing): pip install 'cdss[dask]'",
                   EXIT_USAGE) from None
    source = RuleSource(str(rules_path.resolve()) if rules_path is not None else None, overrides, rules.info.digest)
    options = job.Options(output=output, fmt=fmt, resume=resume, partition_lines=partition_lines, column=column)
    try:
        job.precheck(options)
    except job.JobError as error:
        raise Fail(str(error), EXIT_USAGE) from None
    client = None
    try:
        if scheduler:
            from distributed import Client

            try:
                client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError, ValueError) as error:
                raise Fail(f"--scheduler {scheduler}: cannot connect ({error})", EXIT_USAGE) from None
        else:
            import os

            client = job.local_client(local_workers or os.cpu_count() or 1)
        link = client.dashboard_link if _has_dashboard(client) else None
        click.echo(f"cdss: Dask dashboard: {link or 'not available (pip install bokeh to get one)'}", err=True)
        try:
            report = job.run(client, list(inputs), source, options, err=sys.stderr)
        except job.JobError as error:
            raise Fail(str(error), EXIT_USAGE) from None
        except job.CountMismatch as error:
            raise Fail(f"{error}; the output in {output} is incomplete: this is a bug in cdss", EXIT_INTERNAL) from None
    finally:
        if client is not None:
            cluster = client.cluster if not scheduler else None
            client.close()
            if cluster is not None:
                cluster.close()
    summary = report.summary
    by_urgency = ", ".join(f"{summary['urgency'][u]:,} {u}" for u in job.URGENCIES)
    parts = summary["partitions"]
    line = (f"cdss: {summary['output_records']:,} records in {parts:,} partition{'s' if parts != 1 else ''}: "
            f"{summary['evaluated']:,} evaluated ({by_urgency}), {summary['errors']:,} invalid")
    if summary["errors"]:
        more = summary["errors"] - len(summary["first_errors"])
        line += f" (at {', '.join(summary['first_errors'])}{f' and {more:,} more' if more else ''})"
    click.echo(line, err=True)
    click.echo(f"cdss: counts add up: {summary['check']}; wrote {output / job.SUMMARY}", err=True)
    if summary["errors"]:
        raise click.exceptions.Exit(EXIT_PATIENT)


def _has_dashboard(client: object) -> bool:
    try:
        import bokeh  # noqa: F401 - the dashboard needs it
    except ImportError:
        return False
    return bool(getattr(client, "dashboard_link", None))
