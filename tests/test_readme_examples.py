"""Every ```console example of README.md is the real output of the real command, so the README cannot go stale.

A console block holds `$ COMMAND` lines, each followed by the output it shows. Each command is
run with bash (pipes and redirections work), the venv's `cdss` first on PATH, the repository
root as working directory, stdout and stderr together as a terminal shows them. The shown
output must match the real one, except that a line `...` stands for any number of lines and
`...` inside a line for any text. On failure the message holds the real output, ready to paste.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
ELISION = "..."


@dataclass(frozen=True)
class Example:
    command: str
    expected: tuple[str, ...]
    line: int  # of the `$ ` line in README.md

    @property
    def id(self) -> str:
        return f"README.md:{self.line}: {self.command[:60]}"


def examples(text: str) -> list[Example]:
    """The `$ ` commands of every ```console block, each with the lines it shows."""
    out: list[Example] = []
    in_block = False
    current: tuple[str, int] | None = None
    shown: list[str] = []

    def close() -> None:
        if current is not None:
            out.append(Example(current[0], tuple(shown), current[1]))

    for number, line in enumerate(text.splitlines(), 1):
        if not in_block:
            in_block = line.strip() == "```console"
            current, shown = None, []
            continue
        if line.strip() == "```":
            close()
            in_block, current, shown = False, None, []
        elif line.startswith("$ "):
            close()
            current, shown = (line[2:], number), []
        elif current is not None:
            shown.append(line)
    return out


def pattern(expected: tuple[str, ...]) -> re.Pattern[str]:
    """A regex for the shown output: a `...` line is any number of lines, `...` in a line any text."""
    parts = []
    for line in expected:
        if line.strip() == ELISION:
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(re.escape(piece) for piece in line.rstrip().split(ELISION)) + r"[ \t]*\n")
    return re.compile("".join(parts))


def matches(expected: tuple[str, ...], actual: str) -> bool:
    text = "".join(line.rstrip() + "\n" for line in actual.splitlines())
    return pattern(expected).fullmatch(text) is not None


EXAMPLES = examples(README.read_text(encoding="utf-8"))


def test_the_readme_has_console_examples() -> None:
    assert len(EXAMPLES) >= 10
    assert all(e.command.split()[0] in ("cdss", "printf") for e in EXAMPLES), \
        "console examples run cdss (a `printf ... |` feeding it is fine); other tools may be missing on a fresh machine"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_readme_example(example: Example) -> None:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("CDSS_NO_CACHE", None)
    env["COLUMNS"] = "88"  # the text report wraps to the terminal: the README shows 88 columns
    done = subprocess.run(["bash", "-c", example.command], check=False, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120)
    if not matches(example.expected, done.stdout):
        pytest.fail(f"README.md:{example.line}: the output shown for\n  $ {example.command}\nis not what it prints "
                    f"(exit {done.returncode}). Actual output, ready to paste (elide volatile parts with ...):\n"
                    f"$ {example.command}\n{done.stdout.rstrip()}\n", pytrace=False)


@pytest.mark.parametrize(("shown", "actual", "ok"), [
    (("a", "b"), "a\nb\n", True),
    (("a", "b"), "a\nb\nc\n", False),
    (("a", "...", "d"), "a\nb\nc\nd\n", True),
    (("a", "...", "d"), "a\nd\n", True),
    (("a", "...", "d"), "a\nb\n", False),
    (("digest sha256:...", "x"), "digest sha256:0123abc\nx\n", True),
    (("digest sha256:...end",), "digest sha256:0123\n", False),
    (("  ...",), "anything\nat all\n", True),
    (("a.b",), "axb\n", False),  # only ... is special: the rest is literal
])
def test_the_elision_rules(shown: tuple[str, ...], actual: str, ok: bool) -> None:
    assert matches(shown, actual) is ok
