"""Hostile input: rule files that attack the loader, patient documents that attack the API.

tests/test_loader_errors.py already covers small stand-alone cases (one alias bomb, one
`!!python/object/apply` tag, duplicate keys, a 10 MB pack, non-UTF-8). Here the hostile
content goes into a full copy of the BUNDLED rules (a real pack, a real rule), plus the
shapes not covered there: deep nesting, a file that is a list, merge-key bombs, very long
lines, control characters, hostile manifests. Every case must end in `cdss.RuleFileError`
naming the file and a line, quickly, and never execute code.

Patient side: nesting 20,000 deep, huge strings and keys, non-string keys, NaN/inf,
Decimal, huge integers, tuples, cycles, dict subclasses and non-dict Mappings. Every case
is either evaluated exactly like the equivalent plain JSON, or raises PatientDataError
naming a JSON path that starts with `$`; never anything else.
"""

from __future__ import annotations

import collections
import math
import shutil
import time
import types
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import cdss
from cdss.resources import rules_dir

RULES = cdss.load_rules()  # loaded once per module
TIME_LIMIT = 10.0  # seconds; generous: the failure modes guarded against take minutes or never end

EMERGENCY_PACK = "emergency-and-screening.yaml"
RED_FLAG_RULE = "red-flag-significant-leg-weakness"


# ------------------------------------------------------------------ rule files: helpers


def bundled_copy(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(rules_dir(), target)
    return target


def rule_block(text: str, rule_id: str) -> tuple[int, int]:
    """Start and end offsets of one rule (`  - id: ...` up to the next rule or the end) in a pack."""
    start = text.index(f"  - id: {rule_id}\n")
    nxt = text.find("\n  - id: ", start + 1)
    return start, len(text) if nxt < 0 else nxt + 1


def inject(pack: Path, rule_id: str, old: str, new: str) -> int:
    """Replace `old` by `new` inside one rule of a pack; return the 1-based line of the change."""
    text = pack.read_text(encoding="utf-8")
    start, end = rule_block(text, rule_id)
    offset = text.index(old, start, end)
    pack.write_text(text[:offset] + new + text[offset + len(old):], encoding="utf-8")
    return text[:offset].count("\n") + 1


def refused(root: Path) -> cdss.RuleFileError:
    started = time.perf_counter()
    with pytest.raises(cdss.RuleFileError) as info:  # anything else (or nothing) fails the test
        cdss.load_rules(root)
    assert time.perf_counter() - started < TIME_LIMIT
    return info.value


def assert_located(error: cdss.RuleFileError, file_name: str, line: int | None = None) -> None:
    assert Path(error.file).name == file_name, str(error)
    assert isinstance(error.line, int) and error.line >= 1, f"no line number: {error}"
    if line is not None:
        assert error.line == line, str(error)


def test_a_copy_of_the_bundled_rules_loads_unchanged(tmp_path: Path) -> None:
    copy = cdss.load_rules(bundled_copy(tmp_path))
    assert copy.info.digest == RULES.info.digest


# ------------------------------------------------------------------ rule files: code execution


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/apply:subprocess.check_call [['touch', '{marker}']]",
    "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
    "!!python/name:os.system",
    "!!python/module:os",
    "!!python/object:pathlib.Path {{}}",
    "!python/object/apply:os.system ['touch {marker}']",
    "!<tag:yaml.org,2002:python/object/apply:os.system> ['touch {marker}']",
])
def test_python_tags_inside_a_real_red_flag_rule_never_execute(tmp_path: Path, tag: str) -> None:
    root = bundled_copy(tmp_path)
    marker = tmp_path / "code-ran"
    line = inject(root / EMERGENCY_PACK, RED_FLAG_RULE, "priority: 1000", "priority: " + tag.format(marker=marker))
    error = refused(root)
    assert_located(error, EMERGENCY_PACK, line)
    assert "tag" in str(error)
    assert not marker.exists(), "a YAML tag executed code"


def test_a_python_tag_on_a_mapping_key_never_executes(tmp_path: Path) -> None:
    root = bundled_copy(tmp_path)
    marker = tmp_path / "code-ran"
    line = inject(root / EMERGENCY_PACK, RED_FLAG_RULE, "    priority: 1000\n",
                  f"    ? !!python/object/apply:os.system ['touch {marker}']\n    : 1\n    priority: 1000\n")
    assert_located(refused(root), EMERGENCY_PACK, line)
    assert not marker.exists()


@pytest.mark.parametrize("file_name", ["ruleset.yaml", "guidance.yaml"])
def test_python_tags_in_the_manifest_or_catalogue_never_execute(tmp_path: Path, file_name: str) -> None:
    root = bundled_copy(tmp_path)
    marker = tmp_path / "code-ran"
    path = root / file_name
    path.write_text(path.read_text(encoding="utf-8") + f"extra: !!python/object/apply:os.system ['touch {marker}']\n",
                    encoding="utf-8")
    assert_located(refused(root), file_name)
    assert not marker.exists()


# ------------------------------------------------------------------ rule files: expansion bombs


def test_merge_key_billion_laughs_inside_a_real_pack_is_refused_quickly(tmp_path: Path) -> None:
    root = bundled_copy(tmp_path)
    bomb = ["x-lol0: &l0 {a: lol, b: lol, c: lol, d: lol, e: lol, f: lol, g: lol, h: lol, i: lol}"]
    bomb += [f"x-lol{i}: &l{i} {{<<: [" + ", ".join([f"*l{i - 1}"] * 9) + "], k: 1}" for i in range(1, 12)]
    pack = root / EMERGENCY_PACK
    text = pack.read_text(encoding="utf-8")
    header_end = text.index("\npack:") + 1
    pack.write_text(text[:header_end] + "\n".join(bomb) + "\n" + text[header_end:], encoding="utf-8")
    first_alias_line = text[:header_end].count("\n") + 2
    error = refused(root)
    assert_located(error, EMERGENCY_PACK, first_alias_line)
    assert "alias" in str(error)


def test_a_merge_key_without_alias_is_refused(tmp_path: Path) -> None:
    """`<<` would silently merge another mapping into a rule; it is not plain data."""
    root = bundled_copy(tmp_path)
    line = inject(root / EMERGENCY_PACK, RED_FLAG_RULE, "    priority: 1000\n",
                  "    <<: {urgency: none}\n    priority: 1000\n")
    assert_located(refused(root), EMERGENCY_PACK, line)


def test_an_anchor_and_alias_between_two_real_rules_is_refused(tmp_path: Path) -> None:
    root = bundled_copy(tmp_path)
    pack = root / EMERGENCY_PACK
    inject(pack, "red-flag-radiating-numbness-tingling", "    when:\n", "    when: &w\n")
    text = pack.read_text(encoding="utf-8")
    start, end = rule_block(text, RED_FLAG_RULE)
    when_at = text.index("    when:\n", start, end)
    then_at = text.index("    then:\n", when_at, end)
    pack.write_text(text[:when_at] + "    when: *w\n" + text[then_at:], encoding="utf-8")
    error = refused(root)
    assert_located(error, EMERGENCY_PACK, text[:when_at].count("\n") + 1)
    assert "alias" in str(error)


# ------------------------------------------------------------------ rule files: shapes


@pytest.mark.parametrize("shape", ["flow-sequences", "flow-mappings"])
def test_deeply_nested_yaml_is_refused_with_file_and_line(tmp_path: Path, shape: str) -> None:
    root = bundled_copy(tmp_path)
    depth = 100_000
    body = "[" * depth + "]" * depth if shape == "flow-sequences" else "{a: " * depth + "1" + "}" * depth
    (root / EMERGENCY_PACK).write_text("pack: " + body + "\n", encoding="utf-8")
    assert_located(refused(root), EMERGENCY_PACK)


@pytest.mark.parametrize("content", ["- pack\n- rules\n", "just a string\n", "42\n", "null\n", "[]\n", "{}\n"],
                         ids=["list", "string", "number", "null", "empty-list", "empty-mapping"])
def test_a_pack_that_is_not_a_mapping_is_refused(tmp_path: Path, content: str) -> None:
    root = bundled_copy(tmp_path)
    (root / EMERGENCY_PACK).write_text(content, encoding="utf-8")
    assert_located(refused(root), EMERGENCY_PACK)


def test_a_duplicate_urgency_that_would_downgrade_an_emergency_is_refused(tmp_path: Path) -> None:
    root = bundled_copy(tmp_path)
    line = inject(root / EMERGENCY_PACK, RED_FLAG_RULE, "    urgency: emergency\n",
                  "    urgency: emergency\n    urgency: none\n") + 1
    error = refused(root)
    assert_located(error, EMERGENCY_PACK, line)
    assert "duplicate key 'urgency'" in str(error)


@pytest.mark.parametrize(("old", "new", "fragment"), [
    ("    urgency: emergency\n", "    urgncy: emergency\n", "urgency"),
    ("    urgency: emergency\n", "    urgency: [emergency]\n", "urgency"),
    ("    indicator: critical\n", "    indicator: CRITICAL\n", "indicator"),
    ("    priority: 1000\n", "    priority: '1000'\n", "priority"),
    ("    priority: 1000\n", "    priority: 1e3\n", "priority"),
    ("      is: true\n", "      is: 'true'\n", "tristate"),
    ("    when:\n      field: red_flags.significant_leg_weakness\n      is: true\n", "    when: 'true'\n", "condition"),
    ("    when:\n      field: red_flags.significant_leg_weakness\n      is: true\n", "    when: []\n", ""),
], ids=["unknown-key", "list-for-enum", "enum-case", "string-for-int", "float-for-int", "string-for-bool",
        "string-condition", "empty-list-condition"])
def test_wrong_keys_and_types_in_a_real_red_flag_rule_are_refused(tmp_path: Path, old: str, new: str,
                                                                  fragment: str) -> None:
    root = bundled_copy(tmp_path)
    line = inject(root / EMERGENCY_PACK, RED_FLAG_RULE, old, new)
    error = refused(root)
    assert_located(error, EMERGENCY_PACK)
    near = [p for p in error.problems if p.line is not None and abs(p.line - line) <= 2]
    assert near, f"no problem reported at line {line}: {[p.format() for p in error.problems]}"
    assert all(p.rule_id == RED_FLAG_RULE for p in error.problems), [p.format() for p in error.problems]
    assert any(fragment in p.message for p in error.problems), [p.format() for p in error.problems]


def test_a_very_long_line_is_refused_quickly_at_its_line(tmp_path: Path) -> None:
    """900,000 characters on one line (under the 1 MiB cap): a summary far over the CDS Hooks limit."""
    root = bundled_copy(tmp_path)
    line = inject(root / EMERGENCY_PACK, RED_FLAG_RULE, 'summary: "Seek immediate medical attention: significant leg weakness"',
                  'summary: "' + "x" * 900_000 + '"')
    error = refused(root)
    assert_located(error, EMERGENCY_PACK, line)
    assert len(str(error)) < 10_000, "the error message echoes the whole line"


def test_a_very_long_comment_line_just_under_the_cap_is_harmless(tmp_path: Path) -> None:
    root = bundled_copy(tmp_path)
    pack = root / EMERGENCY_PACK
    room = 1024 * 1024 - len(pack.read_bytes()) - 10
    pack.write_text(pack.read_text(encoding="utf-8") + "# " + "x" * room + "\n", encoding="utf-8")
    started = time.perf_counter()
    copy = cdss.load_rules(root)
    assert time.perf_counter() - started < TIME_LIMIT
    assert copy.info.digest == RULES.info.digest  # a comment does not change the meaning


@pytest.mark.parametrize("file_name", ["ruleset.yaml", "guidance.yaml", EMERGENCY_PACK])
def test_a_ten_megabyte_file_anywhere_in_a_real_rule_set_is_refused(tmp_path: Path, file_name: str) -> None:
    root = bundled_copy(tmp_path)
    path = root / file_name
    path.write_text(path.read_text(encoding="utf-8") + "# " + "x" * (10 * 1024 * 1024) + "\n", encoding="utf-8")
    assert_located(refused(root), file_name, 1)


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\ufffe"], ids=["NUL", "BEL", "ESC", "U+FFFE"])
def test_control_characters_in_a_rule_file_are_a_rule_file_error(tmp_path: Path, char: str) -> None:
    root = bundled_copy(tmp_path)
    line = inject(root / EMERGENCY_PACK, RED_FLAG_RULE, "    priority: 1000\n", f"    # hidden {char} character\n    priority: 1000\n")
    assert_located(refused(root), EMERGENCY_PACK, line)


@pytest.mark.parametrize("entry", ["../outside.yaml", "/etc/passwd", "sub/pack.yaml", "~/pack.yaml"])
def test_the_manifest_cannot_pull_in_files_from_outside_the_rule_set(tmp_path: Path, entry: str) -> None:
    root = bundled_copy(tmp_path)
    (tmp_path / "outside.yaml").write_text((root / "escalation.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    manifest = root / "ruleset.yaml"
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text.replace("    - escalation.yaml\n", f"    - escalation.yaml\n    - '{entry}'\n"), encoding="utf-8")
    assert_located(refused(root), "ruleset.yaml")


# ------------------------------------------------------------------ patient documents


def assert_patient_data_error(doc: Any) -> cdss.PatientDataError:
    started = time.perf_counter()
    with pytest.raises(cdss.PatientDataError) as info:  # any other exception fails the test
        RULES.evaluate(doc)
    assert time.perf_counter() - started < TIME_LIMIT
    path = info.value.path
    assert isinstance(path, str) and path.startswith("$"), path
    return info.value


def nested(depth: int, key: str, leaf: Any = True) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    node = doc
    for _ in range(depth - 1):
        node[key] = {}
        node = node[key]
    node[key] = leaf
    return doc


def nested_list(depth: int) -> list[Any]:
    doc: list[Any] = []
    node = doc
    for _ in range(depth):
        node.append([])
        node = node[0]
    return doc


DEEP = 20_000


@pytest.mark.parametrize("make", [
    lambda: nested(DEEP, "x"),
    lambda: nested(DEEP, "back_pain"),
    lambda: {"back_pain": nested(DEEP, "present")},
    lambda: {"observations": {"hip_drop_in_single_leg_stance": nested(DEEP, "standing_on_left")}},
    lambda: {"red_flags": nested_list(DEEP)},
    lambda: {"back_pain": {"present": nested_list(DEEP)}},
    lambda: nested_list(DEEP),
], ids=["unknown-keys", "section-in-section", "under-a-tristate", "under-a-nested-object", "lists-as-section",
        "lists-as-value", "lists-at-top"])
def test_a_document_nested_20000_levels_deep_is_refused(make: Callable[[], Any]) -> None:
    assert_patient_data_error(make())


TEN_MB = 10 * 1024 * 1024


def test_a_ten_megabyte_patient_id_is_refused_without_echoing_it() -> None:
    error = assert_patient_data_error({"patient_id": "x" * TEN_MB})
    assert error.path == "$.patient_id"
    assert len(str(error)) < 1000


def test_a_ten_megabyte_string_value_is_refused_without_echoing_it() -> None:
    error = assert_patient_data_error({"back_pain": {"present": "y" * TEN_MB}})
    assert error.path == "$.back_pain.present"
    assert len(str(error)) < 1000


@pytest.mark.parametrize("where", ["top", "section"])
def test_a_ten_megabyte_key_is_refused_quickly_without_echoing_it(where: str) -> None:
    key = "k" * TEN_MB
    doc = {key: True} if where == "top" else {"back_pain": {key: True}}
    error = assert_patient_data_error(doc)
    assert len(str(error)) < 10_000, f"the error message is {len(str(error)):,} characters: it echoes the key"


@pytest.mark.parametrize("key", [1, None, True, 1.5, ("back_pain",), frozenset({"a"}), b"back_pain"],
                         ids=["int", "None", "bool", "float", "tuple", "frozenset", "bytes"])
@pytest.mark.parametrize("where", ["top", "section", "nested-object"])
def test_non_string_keys_are_refused(key: Any, where: str) -> None:
    if where == "top":
        doc: Any = {"red_flags": {"significant_leg_weakness": False}, key: True}
    elif where == "section":
        doc = {"red_flags": {"significant_leg_weakness": False, key: True}}
    else:
        doc = {"observations": {"hip_drop_in_single_leg_stance": {key: True}}}
    assert_patient_data_error(doc)


NUMBERS = [math.nan, math.inf, -math.inf, Decimal("5"), Decimal("NaN"), Decimal("4.5"), 4.5, -0.5, 1e308, complex(5, 0)]
LEAVES = ["exercise.weeks_consistent", "back_pain.present", "red_flags.significant_leg_weakness", "back_pain.trend",
          "patient_id"]


def put(path: str, value: Any) -> dict[str, Any]:
    parts = path.split(".")
    doc: dict[str, Any] = {}
    node = doc
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return doc


@pytest.mark.parametrize("value", NUMBERS, ids=repr)
@pytest.mark.parametrize("path", LEAVES)
def test_nan_infinity_decimal_and_other_numbers_are_refused(path: str, value: Any) -> None:
    error = assert_patient_data_error(put(path, value))
    assert error.path == "$." + path


@pytest.mark.parametrize("digits", [4300, 4301, 10_000, 100_000])
@pytest.mark.parametrize("path", ["exercise.weeks_consistent", "back_pain.present", "patient_id"])
def test_huge_integers_are_refused(path: str, digits: int) -> None:
    """Python refuses int->str beyond 4,300 digits (ValueError); describing the value must not crash."""
    error = assert_patient_data_error(put(path, 10 ** (digits - 1)))
    assert error.path == "$." + path


def test_a_whole_number_float_is_read_as_the_integer() -> None:
    """JSON Schema counts 5.0 as an integer: it is accepted and evaluated exactly like 5."""
    doc = {"back_pain": {"present": True}, "exercise": {"weeks_consistent": 6}}
    as_float = {"back_pain": {"present": True}, "exercise": {"weeks_consistent": 6.0}}
    one, other = RULES.evaluate(doc).to_dict(), RULES.evaluate(as_float).to_dict()
    assert one["cards"] and one == other  # the card uuids too: they hash the answers as the engine reads them


@pytest.mark.parametrize("make", [
    lambda: (("red_flags", {"significant_leg_weakness": True}),),
    lambda: {"red_flags": (("significant_leg_weakness", True),)},
    lambda: {"red_flags": ()},
    lambda: {"back_pain": {"present": (True,)}},
    lambda: {"exercise": {"weeks_consistent": (6,)}},
    lambda: {"back_pain": {"present": {True}}},
    lambda: {"back_pain": {"present": b"true"}},
    lambda: {"back_pain": {"present": object()}},
    lambda: {"back_pain": {"present": len}},
    lambda: {"back_pain": {"present": bytearray(b"1")}},
], ids=["tuple-document", "tuple-section", "empty-tuple-section", "tuple-value", "tuple-int", "set-value", "bytes-value",
        "object-value", "function-value", "bytearray-value"])
def test_tuples_sets_bytes_and_objects_are_refused(make: Callable[[], Any]) -> None:
    assert_patient_data_error(make())


def test_a_self_referencing_document_is_refused() -> None:
    loop: dict[str, Any] = {}
    loop["back_pain"] = loop
    assert_patient_data_error(loop)
    ring: list[Any] = []
    ring.append(ring)
    assert_patient_data_error({"red_flags": ring})
    section: dict[str, Any] = {"present": True}
    section["worse_with_prolonged_standing_or_walking"] = section
    assert_patient_data_error({"back_pain": section})


PLAIN = {"patient_id": "anon-1", "back_pain": {"present": True, "trend": "unchanged"},
         "red_flags": {"numbness_or_tingling_radiating_down_leg": False, "significant_leg_weakness": False,
                       "sudden_bladder_or_bowel_control_loss": False},
         "observations": {"hip_drop_in_single_leg_stance": {"standing_on_left": True}},
         "exercise": {"stage": "activation", "weeks_consistent": 5}}


class Subclass(dict):  # type: ignore[type-arg]
    pass


class ReadOnly(Mapping[str, Any]):
    """A Mapping that is not a dict."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def deep_convert(value: Any, kind: Callable[[dict[str, Any]], Any]) -> Any:
    if isinstance(value, dict):
        return kind({k: deep_convert(v, kind) for k, v in value.items()})
    return value


@pytest.mark.parametrize("kind", [Subclass, collections.OrderedDict, lambda d: collections.defaultdict(lambda: True, d)],
                         ids=["dict-subclass", "OrderedDict", "defaultdict"])
def test_dict_subclasses_are_evaluated_exactly_like_plain_dicts(kind: Callable[[dict[str, Any]], Any]) -> None:
    expected = RULES.evaluate(PLAIN).to_json()
    assert RULES.evaluate(deep_convert(PLAIN, kind)).to_json() == expected


@pytest.mark.parametrize("kind", [ReadOnly, types.MappingProxyType], ids=["custom-Mapping", "MappingProxyType"])
def test_a_mapping_that_is_not_a_dict_is_evaluated_like_the_dict_at_the_top(kind: Callable[[dict[str, Any]], Any]) -> None:
    assert RULES.evaluate(kind(PLAIN)).to_json() == RULES.evaluate(PLAIN).to_json()


@pytest.mark.parametrize("kind", [ReadOnly, types.MappingProxyType], ids=["custom-Mapping", "MappingProxyType"])
def test_nested_non_dict_mappings_are_evaluated_like_dicts_or_refused_by_path(kind: Callable[[dict[str, Any]], Any]) -> None:
    """Either reading is safe; what must not happen is a crash or a silently different result."""
    expected = RULES.evaluate(PLAIN).to_json()
    try:
        got = RULES.evaluate(deep_convert(PLAIN, kind)).to_json()
    except cdss.PatientDataError as error:
        assert error.path.startswith("$.") and error.path != "$", error.path
    else:
        assert got == expected


def test_the_engine_is_unharmed_after_hostile_documents() -> None:
    before = RULES.evaluate(PLAIN).to_json()
    for doc in ({"back_pain": nested(DEEP, "present")}, {"x" * 1000: 1}, {1: 2}, {"red_flags": (1,)}, [PLAIN], None):
        with pytest.raises(cdss.PatientDataError):
            RULES.evaluate(doc)
    assert RULES.evaluate(PLAIN).to_json() == before
    assert cdss.load_rules().evaluate(PLAIN).to_json() == before
