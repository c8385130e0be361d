"""The `cdss` command line: commands, input reading, the local batch, the text report and the cache.

`commands` holds the click group (`cli`) and the click entry point; `main` here first offers
the command line to `quick` (a plain `cdss evaluate FILE...` without importing click, for a
fast start) and otherwise runs the click group. The other modules are what the commands
need, imported lazily so `cdss --help` stays fast; `cli` is imported on first use (PEP 562).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from .commands import cli

__all__ = ["cli", "main"]


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console entry point (`cdss`)."""
    from .quick import run

    run(argv)  # returns only when the click command must run: anything but a plain, successful evaluate
    from .commands import main as click_main

    click_main(argv)


def __getattr__(name: str) -> Any:
    if name == "cli":
        from .commands import cli

        return cli
    raise AttributeError(f"module 'cdss.cli' has no attribute {name!r}")
