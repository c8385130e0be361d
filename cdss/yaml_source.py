"""Read a YAML file as plain data, safely, and remember where every value came from.

Rule files are data written by people: no tags, no aliases (alias bombs), no duplicate keys
(the second would silently win), dates kept as strings, and a size cap. Every value keeps
its line and column so that schema errors can point at the exact spot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .resources import MAX_RULE_FILE_BYTES as MAX_BYTES
from .resources import read_rule_file

MAX_DEPTH = 64  # far beyond any sensible rule, far below Python's recursion limit
ALLOWED_TAGS = {
    "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:map",
}
Location = tuple[int, int]  # 1-based line, column


class YamlProblem(Exception):
    """The file cannot be read as rule data; carries the location of the first problem."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


_BASE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~15x faster, same marks


class _DataLoader(_BASE_LOADER):  # type: ignore[misc,valid-type]
    """The safe loader without the timestamp resolver, so dates stay strings."""


_DataLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _check_events(text: str) -> None:
    """Refuse aliases (alias bombs) and deep nesting from the event stream, before any node is built."""
    depth = 0
    for event in yaml.parse(text, Loader=_BASE_LOADER):
        if isinstance(event, yaml.AliasEvent):
            raise YamlProblem("anchors and aliases (*name) are not allowed in rule files; write the value out",
                              event.start_mark.line + 1, event.start_mark.column + 1)
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlProblem(f"nested more than {MAX_DEPTH} levels deep; rule files are shallow: flatten the condition",
                                  event.start_mark.line + 1, event.start_mark.column + 1)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


@dataclass
class YamlDocument:
    """Parsed data plus the location of every value and mapping key, by JSON path."""

    path: Path
    data: Any
    values: dict[tuple[Any, ...], Location] = field(default_factory=dict)
    keys: dict[tuple[Any, ...], Location] = field(default_factory=dict)

    def locate(self, path: tuple[Any, ...] | list[Any]) -> Location | None:
        """The best location for a JSON path: the key if it is a mapping entry, else the value,
        else the nearest enclosing value."""
        path = tuple(path)
        while True:
            if path in self.keys:
                return self.keys[path]
            if path in self.values:
                return self.values[path]
            if not path:
                return None
            path = path[:-1]


def _mark(node: Any) -> Location:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _index(node: Any, path: tuple[Any, ...], doc: YamlDocument) -> None:
    if node.tag not in ALLOWED_TAGS:
        line, column = _mark(node)
        raise YamlProblem(f"YAML tag {node.tag!r} is not allowed in rule files: they hold plain data only",
                          line, column)
    doc.values[path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, Location] = {}
        for key_node, value_node in node.value:
            if key_node.tag not in ALLOWED_TAGS or not isinstance(key_node, yaml.ScalarNode):
                line, column = _mark(key_node)
                raise YamlProblem("mapping keys must be plain text", line, column)
            key = key_node.value
            if key in seen:
                line, column = _mark(key_node)
                first = seen[key][0]
                raise YamlProblem(f"duplicate key '{key}' (first at line {first}); the second would silently "
                                  "replace the first: keep one", line, column)
            seen[key] = _mark(key_node)
            doc.keys[(*path, key)] = _mark(key_node)
            _index(value_node, (*path, key), doc)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), doc)


def load_yaml(path: Path, read: Callable[[Path, int], bytes] | None = None) -> YamlDocument:
    """Parse one YAML file into plain data with locations, or raise YamlProblem.

    The file is read once, at most MAX_BYTES + 1 of it (`read` may replace the reading,
    e.g. to hash exactly the bytes that are parsed).
    """
    raw = (read or read_rule_file)(path, MAX_BYTES)
    if len(raw) > MAX_BYTES:
        raise YamlProblem(f"file is over {MAX_BYTES:,} bytes; a rule file may be at most {MAX_BYTES:,} bytes: "
                          "split it into packs", 1, 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise YamlProblem(f"not UTF-8 text (byte 0x{raw[error.start]:02x}); save the file as UTF-8", line, None) from None
    try:
        _check_events(text)
        loader = _DataLoader(text)
    except yaml.reader.ReaderError as error:
        raise _reader_problem(text, error) from None
    except yaml.MarkedYAMLError as error:
        raise _syntax_problem(error, text) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise YamlProblem("the file is empty", 1, 1)
        doc = YamlDocument(path, None)
        _index(node, (), doc)
        doc.data = loader.construct_document(node)
        return doc
    except yaml.MarkedYAMLError as error:
        raise _syntax_problem(error, text) from None
    except yaml.reader.ReaderError as error:
        raise _reader_problem(text, error) from None
    except yaml.YAMLError as error:
        raise YamlProblem(f"invalid YAML: {error}") from None
    except RecursionError:
        raise YamlProblem("YAML nested too deeply for a rule file") from None
    finally:
        loader.dispose()


def _reader_problem(text: str, error: Any) -> YamlProblem:
    """A located message for a character YAML does not allow (NUL, most control characters)."""
    position = getattr(error, "position", 0) or 0
    before = text[:position]
    line = before.count("\n") + 1
    column = position - (before.rfind("\n") + 1) + 1
    character = getattr(error, "character", "?")
    code = f"U+{ord(character):04X}" if isinstance(character, str) and character else repr(character)
    return YamlProblem(f"character {code} is not allowed in a YAML file; remove it", line, column)


_KEY_LINE = re.compile(r"\n[ \t]*(?:- )?[A-Za-z_][A-Za-z0-9_-]*:[ \n]")


def _runaway_quote(text: str) -> tuple[int, int, int] | None:
    """(start line, end line, start column), 0-based, of the last quoted text before the error that spans lines and
    swallows what looks like a `key:` line: a missing closing quote, whatever the parser then reports."""
    found = None
    try:
        for token in yaml.scan(text, Loader=_BASE_LOADER):
            if isinstance(token, yaml.ScalarToken) and token.style in ('"', "'") \
                    and token.end_mark.line > token.start_mark.line \
                    and _KEY_LINE.search(text[token.start_mark.index:token.end_mark.index]):
                found = (token.start_mark.line, token.end_mark.line, token.start_mark.column)
    except yaml.YAMLError:
        pass
    return found


def _syntax_problem(error: Any, text: str = "") -> YamlProblem:
    """A YAML syntax error located where the problem STARTS (an unclosed quote at its opening, not
    at the end of the file), with a hint in plain words for the mistakes people make most."""
    problem = (error.problem or "").strip()
    context = (error.context or "").strip()
    pm, cm = error.problem_mark, error.context_mark
    lines = text.splitlines()

    def line_text(mark: Any) -> str:
        return lines[mark.line] if mark is not None and 0 <= mark.line < len(lines) else ""

    def at(mark: Any) -> str:
        row = line_text(mark)
        return row[mark.column] if mark is not None and 0 <= mark.column < len(row) else ""

    mark, hint = pm or cm, None
    if "quoted scalar" in context and "end of stream" in problem:
        mark, hint = cm, "a quoted text opened here is never closed: add the closing quote"
    elif "quoted scalar" in context and "end of" in problem:
        mark, hint = cm, "a quoted text opened here is not closed where expected: add the closing quote"
    elif "unknown escape" in problem:
        hint = "a backslash inside \"...\" starts an escape: write \\\\ for a backslash, or use single quotes"
    elif context.startswith("while parsing a flow"):
        bracket = "[" if "sequence" in context else "{"
        mark, hint = cm, (f"the '{bracket}' opened here is not closed, or two of its items lack a ',' between them")
    elif problem.startswith("mapping values are not allowed"):
        row = line_text(pm)
        first_colon = row.find(": ") if row.find(": ") >= 0 else row.find(":")
        if pm is not None and first_colon >= 0 and first_colon < pm.column:
            hint = "text containing ': ' must be quoted: put the whole value in double quotes"
        else:
            hint = ("this line is indented more than the key above it, so it reads as part of that value: "
                    "line it up with its sibling keys")
    elif "could not find expected ':'" in problem and cm is not None:
        mark, hint = cm, ("this line is neither 'key: value' nor a list item ('- ...'): add ': ' after the key, "
                          "or indent it further to continue the text above")
    elif "cannot start any token" in problem:
        char = at(pm)
        hint = ("tabs cannot indent YAML: use spaces" if char == "\t"
                else f"a value cannot start with '{char}': put the value in quotes")
    elif context.startswith("while parsing a block mapping") and pm is not None:
        row, char = line_text(pm), at(pm)
        before = row[: pm.column].rstrip()
        if before.endswith(('"', "'")) and before.lstrip()[:1] not in ("", "-"):
            hint = "text after a closing quote: put the whole value inside the quotes"
        elif char == "-":
            hint = "a list item ('- ...') where a key was expected: indent the list under its key"
        else:
            hint = "this line's indentation does not match the keys above it: line it up with its siblings (spaces, not tabs)"
    elif context.startswith("while parsing a block collection"):
        hint = "a key where a list item ('- ...') was expected: check the indentation of this line"
    runaway = _runaway_quote(text) if hint is None or not hint.startswith("a quoted text") else None
    if runaway is not None and (mark is None or runaway[0] <= mark.line):
        start, end, column = runaway
        return YamlProblem(f"invalid YAML: a quoted text opened here runs on to line {end + 1}: add the closing quote "
                           f"(the parser stopped at line {(mark.line + 1) if mark else '?'}: {problem or context})",
                           start + 1, column + 1)
    raw = " ".join(part for part in (context, problem) if part) or "invalid YAML"
    message = f"invalid YAML: {hint} (parser: {problem or raw})" if hint else f"invalid YAML: {raw}"
    return YamlProblem(message, mark.line + 1 if mark else None, mark.column + 1 if mark else None)
