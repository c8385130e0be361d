"""The `cdss` command line: commands, input reading, the local batch, the text report and the cache.

`commands` holds the click group (`cli`) and the console entry point (`main`); the other
modules are what the commands need, imported lazily so `cdss --help` stays fast.
"""

from __future__ import annotations

from .commands import cli, main

__all__ = ["cli", "main"]
