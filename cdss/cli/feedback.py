"""`cdss feedback report`: which rules clinicians override, and why (from the service's SQLite store)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .commands import EXIT_USAGE, Fail


@click.group()
def feedback() -> None:
    """Read the card feedback that `cdss serve` stored."""


@feedback.command("report")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="PATH",
              help="The feedback database (default, as for cdss serve: $XDG_STATE_HOME/cdss/feedback.sqlite3, else ~/.local/state/cdss/feedback.sqlite3).")
@click.option("--format", "fmt", type=click.Choice(("text", "json")), default="text", show_default=True)
def report(db_path: Path | None, fmt: str) -> None:
    """Overrides per rule, most overridden first, with the override reasons and counts."""
    from ..service.config import default_feedback_db
    from ..service.feedback import FeedbackStore, StoreError, render_text
    from ..service.feedback import report as summarise

    path = db_path or default_feedback_db()
    if not path.is_file():
        raise Fail(f"--db {path}: no such feedback database (cdss serve creates it; see its 'feedback in' line)",
                   EXIT_USAGE)
    try:
        store = FeedbackStore(path)
        try:
            summary = summarise(store.rows())
        finally:
            store.close()
    except StoreError as error:
        raise Fail(str(error), EXIT_USAGE) from None
    if fmt == "json":
        click.echo(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        click.echo(render_text(summary))
