"""YAML syntax errors name the line where the problem starts, with a hint in plain words."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cdss.cli.commands import cli
from cdss.yaml_source import YamlProblem, load_yaml

CASES = [
    # (file text, line, column, words the hint must contain)
    ("a: 1\nsummary: Pain: worse when standing\nc: 3\n", 2, 14, "text containing ': ' must be quoted"),
    ('a: 1\nquote: "Pain that intensifies\nc: 3\nd: 4\n', 2, 8, "a quoted text opened here is never closed"),
    ("a: 1\nquote: 'Pain that intensifies\nc: 3\nd: 4\n", 2, 8, "a quoted text opened here is never closed"),
    ("a:\n\tb: 1\n", 2, 1, "tabs cannot indent YAML: use spaces"),
    ("a:\n  b: 1\n   c: 2\n", 3, 5, "indented more than the key above it"),
    ("a:\n  b: 1\n c: 2\n", 3, 2, "indentation does not match the keys above it"),
    ('a: "abc" def\nb: 1\n', 1, 10, "text after a closing quote"),
    ("a: [1, 2\nb: 3\nc: 4\n", 1, 4, "the '[' opened here is not closed"),
    ("a: 1\njust some text\nb: 2\n", 2, 1, "neither 'key: value' nor a list item"),
    ('a: "C:\\d"\n', 1, None, "a backslash inside"),
    ("a: @x\n", 1, 4, "a value cannot start with '@'"),
    ("a: 1\n- b\n", 2, 1, "a list item ('- ...') where a key was expected"),
    # a quote left open swallows the next lines and the parser fails far below: report the opening
    ('rules:\n  - id: a\n    source:\n      quote: "Pain that\n      section: x\n    then:\n      card: {summary: "hi"}\n',
     4, 14, "a quoted text opened here runs on to line 7: add the closing quote"),
]


@pytest.mark.parametrize(("text", "line", "column", "hint"), CASES, ids=[c[3][:30] for c in CASES])
def test_syntax_error_is_located_where_it_starts_with_a_hint(tmp_path: Path, text: str, line: int,
                                                            column: int | None, hint: str) -> None:
    path = tmp_path / "pack.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(YamlProblem) as info:
        load_yaml(path)
    assert info.value.line == line, info.value.message
    if column is not None:
        assert info.value.column == column, info.value.message
    assert hint in info.value.message
    assert info.value.message.startswith("invalid YAML: ") and "\n" not in info.value.message


def test_validate_shows_the_hint_at_file_line(tmp_path: Path) -> None:
    (tmp_path / "ruleset.yaml").write_text("rule_set: {id: t, title: t, version: 0.0.1}\n", encoding="utf-8")
    (tmp_path / "pack.yaml").write_text("pack:\n  title: Back pain: the basics\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)], prog_name="cdss")
    assert result.exit_code == 3
    assert f"{tmp_path / 'pack.yaml'}:2:19: -: invalid YAML: text containing ': ' must be quoted" in result.stdout
