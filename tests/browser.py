"""Where the system Chromium is, for every browser test (the audit rulebook, the web pages).

Browser downloads do not work here: tests use Debian's Chromium (`.ci/run` installs it).
Without it a browser test is *skipped* with the install command in the reason, except
under CI (the CI variable set), where a missing browser is a failure: CI always runs them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"

# What Chromium needs on this kind of machine: no sandbox as root, no GPU, and no background
# networking (the closed network otherwise refuses many connections at every start).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def chromium_path() -> str:
    """The Chromium executable; skips the calling test (fails it under CI) when there is none."""
    found = shutil.which("chromium") or next(
        (p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).is_file()), None)
    if found:
        return found
    reason = f"Chromium is not installed; install it with: {INSTALL}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (.ci/run does this; under CI browser tests never skip)")
    pytest.skip(reason)
