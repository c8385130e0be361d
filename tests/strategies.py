"""Hypothesis strategies for patient documents, derived from schemas/patient.schema.json.

Written by hand because hypothesis-jsonschema breaks with hypothesis >= 6.170.10
(DEPENDENCY-FACTS.md). Everything here is derived by walking the schema, so a field added
to the contract is generated without touching this file; a schema keyword this walker does
not understand fails loudly (NotImplementedError) instead of being ignored.

- `valid_patients()`: every valid document. Each section and each key present or absent,
  tri-states true/false/null, enums and null, integers in their bounds and null,
  `patient_id` strings up to maxLength or absent. Shrinks towards `{}` (absent keys first).
- `patients_with_screening("positive"|"incomplete"|"negative")`: valid documents whose
  red-flag answers force one screening verdict; everything else arbitrary.
- `near_valid_patients()`: a valid document with exactly one mistake, plus the JSON path
  the error must name (`NearValid`).
- `invalid_values(json_only=...)`: arbitrary JSON-like values that are not valid patients.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from functools import cache
from typing import Any, Iterator

from hypothesis import strategies as st

from cdss.fields import patient_fields
from cdss.resources import schema_text

ABSENT = object()
"""Marker for 'key not in the document' (distinct from a null value)."""

KNOWN_KEYWORDS = {
    "$schema", "$id", "$ref", "$defs", "title", "description", "type", "properties", "additionalProperties",
    "required", "enum", "minimum", "maximum", "maxLength",
}


# ------------------------------------------------------------------ the schema, walked


@cache
def patient_schema() -> dict[str, Any]:
    """A private parse of the schema text: fastjsonschema rewrites `$ref`s of the cached
    `cdss.resources.schema("patient")` in place when cdss compiles its validator."""
    return json.loads(schema_text("patient"))  # type: ignore[no-any-return]


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """A schema node with a local `$ref` merged in (the referring node's own keys win)."""
    if "$ref" not in node:
        return node
    ref = node["$ref"]
    if not ref.startswith("#/$defs/"):
        raise NotImplementedError(f"strategies.py only follows local #/$defs/ references, not {ref!r}")
    target = patient_schema()["$defs"][ref.rsplit("/", 1)[-1]]
    return {**resolve(target), **{k: v for k, v in node.items() if k != "$ref"}}


def types_of(node: dict[str, Any]) -> list[str]:
    types = node.get("type", [])
    return [types] if isinstance(types, str) else list(types)


def _check_keywords(node: dict[str, Any], where: str) -> None:
    unknown = set(node) - KNOWN_KEYWORDS
    if unknown:
        raise NotImplementedError(f"schema keyword(s) {sorted(unknown)} at {where} are not understood by "
                                  "tests/strategies.py: extend it so generated documents stay faithful")


@dataclass(frozen=True)
class SchemaNode:
    """One place in the patient document: `path` as a tuple of keys ( () is the root)."""

    path: tuple[str, ...]
    node: dict[str, Any]

    @property
    def json_path(self) -> str:
        return json_path(self.path)

    @property
    def kind(self) -> str:
        """object | tristate | enum | integer | string."""
        node = self.node
        types = types_of(node)
        if "properties" in node or "object" in types:
            return "object"
        if "enum" in node:
            return "enum"
        if "boolean" in types:
            return "tristate"
        if "integer" in types:
            return "integer"
        if "string" in types:
            return "string"
        raise NotImplementedError(f"no generator for schema node at {self.json_path}: {node}")

    @property
    def nullable(self) -> bool:
        return "null" in types_of(self.node) or None in self.node.get("enum", ())


def json_path(path: tuple[str, ...] | list[str]) -> str:
    return "$" + "".join(f".{part}" for part in path)


def walk(node: dict[str, Any] | None = None, path: tuple[str, ...] = ()) -> Iterator[SchemaNode]:
    """Every node of the patient schema, parents before children."""
    node = resolve(patient_schema() if node is None else node)
    _check_keywords(node, json_path(path))
    here = SchemaNode(path, node)
    yield here
    if here.kind == "object":
        if node.get("additionalProperties", True) is not False:
            raise NotImplementedError(f"{json_path(path)} allows additional properties: strategies.py assumes it does not")
        for name, child in node.get("properties", {}).items():
            yield from walk(child, (*path, name))


@cache
def objects() -> tuple[SchemaNode, ...]:
    return tuple(n for n in walk() if n.kind == "object")


@cache
def leaves() -> tuple[SchemaNode, ...]:
    return tuple(n for n in walk() if n.kind != "object")


def node_at(path: tuple[str, ...]) -> SchemaNode:
    return next(n for n in walk() if n.path == path)


# ------------------------------------------------------------------ valid documents

TRISTATE_VALUES = (False, True, None)


def strategy_for(node: dict[str, Any]) -> st.SearchStrategy[Any]:
    """The strategy of every value valid at this schema node."""
    node = resolve(node)
    here = SchemaNode((), node)
    kind = here.kind
    if kind == "object":
        props = node.get("properties", {})
        required = set(node.get("required", ()))
        return st.fixed_dictionaries(
            {k: strategy_for(v) for k, v in props.items() if k in required},
            optional={k: strategy_for(v) for k, v in props.items() if k not in required},
        )
    if kind == "enum":
        return st.sampled_from([v for v in node["enum"] if v is not None] + ([None] if None in node["enum"] else []))
    if kind == "tristate":
        values = [False, True] + ([None] if here.nullable else [])
        return st.sampled_from(values)
    if kind == "integer":
        ints = st.integers(min_value=node.get("minimum"), max_value=node.get("maximum"))
        bounds = [b for b in (node.get("minimum"), node.get("maximum")) if b is not None]
        if bounds:  # the bounds are where off-by-one bugs live: reach them often, not by luck
            ints = ints | st.sampled_from(bounds)
        return ints | st.none() if here.nullable else ints
    if kind == "string":
        limit = node.get("maxLength")
        text = st.text(max_size=limit)
        if limit is not None:  # the boundary is where off-by-one bugs live: reach it often
            text = text | st.text(min_size=limit, max_size=limit)
        return text | st.none() if here.nullable else text
    raise NotImplementedError(kind)  # pragma: no cover


def valid_patients() -> st.SearchStrategy[dict[str, Any]]:
    """Every valid patient document."""
    return strategy_for(patient_schema())


# ------------------------------------------------------------------ paths into documents


def split(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def get(doc: Any, path: str | tuple[str, ...]) -> Any:
    """The value at a dotted path; ABSENT when a key (or section) is missing."""
    value = doc
    for part in split(path) if isinstance(path, str) else path:
        if not isinstance(value, dict) or part not in value:
            return ABSENT
        value = value[part]
    return value


def put(doc: dict[str, Any], path: str | tuple[str, ...], value: Any) -> dict[str, Any]:
    """A deep copy of `doc` with `value` at the path (ABSENT deletes the key); creates sections."""
    out = copy.deepcopy(doc)
    parts = split(path) if isinstance(path, str) else tuple(path)
    node = out
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    if value is ABSENT:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value
    return out


def known(value: Any) -> bool:
    return value is not ABSENT and value is not None


@cache
def red_flag_paths() -> tuple[str, ...]:
    return tuple(p for p in patient_fields() if p.startswith("red_flags."))


@cache
def tristate_paths() -> tuple[str, ...]:
    return tuple(p for p, f in patient_fields().items() if f.kind == "tristate")


def red_flags(doc: dict[str, Any]) -> dict[str, Any]:
    """Each red flag's answer: True, False, or None for unknown (absent or null)."""
    out = {}
    for path in red_flag_paths():
        value = get(doc, path)
        out[path] = None if value is ABSENT else value
    return out


UNKNOWN_SPELLINGS = st.sampled_from([None, ABSENT])
ANY_TRISTATE = st.sampled_from([False, True, None, ABSENT])


@st.composite
def patients_with_screening(draw: st.DrawFn, screening: str) -> dict[str, Any]:
    """A valid document whose red-flag answers force the screening verdict.

    positive: at least one red flag true (the others anything);
    incomplete: none true, at least one unknown (absent or null), the rest false;
    negative: all three answered false.
    """
    doc = draw(valid_patients())
    flags = red_flag_paths()
    if screening == "positive":
        chosen = draw(st.sets(st.sampled_from(flags), min_size=1))
        values = {f: True if f in chosen else draw(ANY_TRISTATE) for f in flags}
    elif screening == "incomplete":
        chosen = draw(st.sets(st.sampled_from(flags), min_size=1))
        values = {f: draw(UNKNOWN_SPELLINGS) if f in chosen else False for f in flags}
    elif screening == "negative":
        values = {f: False for f in flags}
    else:
        raise ValueError(screening)
    for path, value in values.items():
        doc = put(doc, path, value)
    return doc


# ------------------------------------------------------------------ near-valid documents


@dataclass(frozen=True)
class NearValid:
    """A document with exactly one mistake; the error must name `path` (or a path inside it)."""

    doc: Any
    path: str
    mutation: str

    def __repr__(self) -> str:  # hypothesis prints this for a failing example
        return f"NearValid(mutation={self.mutation!r}, path={self.path!r}, doc={self.doc!r})"


KEY_CHARS = "abcdefghijklmnopqrstuvwxyz_"


@st.composite
def misspelling(draw: st.DrawFn, word: str, taken: frozenset[str]) -> str:
    """A plausible typo of `word` that is not a valid key here."""
    edits = ["drop", "double", "swap", "upper", "hyphen", "replace", "insert"]
    while True:
        edit = draw(st.sampled_from(edits))
        i = draw(st.integers(0, len(word) - 1))
        if edit == "drop":
            typo = word[:i] + word[i + 1:]
        elif edit == "double":
            typo = word[:i] + word[i] + word[i:]
        elif edit == "swap":
            j = min(i + 1, len(word) - 1)
            typo = word[:i] + word[j] + word[i] + word[j + 1:] if j > i else word + "s"
        elif edit == "upper":
            typo = word[:i] + word[i].upper() + word[i + 1:]
        elif edit == "hyphen":
            typo = word.replace("_", "-") if "_" in word else word + "-"
        elif edit == "replace":
            typo = word[:i] + draw(st.sampled_from(KEY_CHARS)) + word[i + 1:]
        else:
            typo = word[:i] + draw(st.sampled_from(KEY_CHARS)) + word[i:]
        if typo and typo not in taken:
            return typo


def _wrong_type_values(leaf: SchemaNode) -> st.SearchStrategy[Any]:
    """Values of a type the leaf does not accept (never valid for it)."""
    kind = leaf.kind
    containers = st.just([]) | st.just({}) | st.lists(st.booleans(), min_size=1, max_size=2)
    if kind == "tristate":
        return st.sampled_from(["true", "false", "yes", "no", "null", "", "True", 0, 1, 0.0, 1.0, -1]) | containers
    if kind == "integer":
        return st.sampled_from(["4", "6", "four", "", "null", "5 weeks"]) | containers
    if kind == "enum":
        values = [v for v in leaf.node["enum"] if v is not None]
        variants = [v.upper() for v in values] + [v + " " for v in values] + ["", "unknown", "null"]
        return st.sampled_from([v for v in variants if v not in values]) | st.sampled_from([0, 1, True, False, 1.5]) | containers
    if kind == "string":
        values = st.sampled_from([0, 42, True, False, 1.5]) | containers
        return values if leaf.nullable else values | st.none()
    raise NotImplementedError(kind)  # pragma: no cover


MUTATIONS = ("misspelled-key", "extra-nested-key", "wrong-type", "out-of-range", "bool-for-int", "float",
             "string-true", "null-section", "array-instead-of-object", "too-long-string", "top-level-array")


@st.composite
def near_valid_patients(draw: st.DrawFn, mutations: tuple[str, ...] = MUTATIONS) -> NearValid:
    """A valid document with exactly one of the mistakes in MUTATIONS."""
    doc = draw(valid_patients())
    sections = [o for o in objects() if o.path]
    integers = [leaf for leaf in leaves() if leaf.kind == "integer"]
    tristates = [leaf for leaf in leaves() if leaf.kind == "tristate"]
    strings = [leaf for leaf in leaves() if leaf.kind == "string" and "maxLength" in leaf.node]
    available = [m for m in mutations if not (
        (m in ("out-of-range", "bool-for-int") and not integers)
        or (m == "too-long-string" and not strings))]
    mutation = draw(st.sampled_from(available))

    if mutation in ("misspelled-key", "extra-nested-key"):
        obj = draw(st.sampled_from(objects()))
        names = frozenset(obj.node.get("properties", {}))
        if mutation == "misspelled-key":
            right = draw(st.sampled_from(sorted(names)))
            wrong = draw(misspelling(right, names))
            current = get(doc, (*obj.path, right))
            value = current if current is not ABSENT else draw(strategy_for(obj.node["properties"][right]))
            doc = put(doc, (*obj.path, right), ABSENT)  # a rename: the right key goes, the typo comes
        else:
            wrong = draw(st.text(KEY_CHARS, min_size=1, max_size=12).filter(lambda k: k not in names))
            value = draw(st.none() | st.booleans() | st.integers(0, 10) | st.just({}))
        return NearValid(put(doc, (*obj.path, wrong), value), json_path((*obj.path, wrong)), mutation)

    if mutation == "wrong-type":
        leaf = draw(st.sampled_from(leaves()))
        return NearValid(put(doc, leaf.path, draw(_wrong_type_values(leaf))), leaf.json_path, mutation)

    if mutation == "out-of-range":
        leaf = draw(st.sampled_from(integers))
        low, high = leaf.node.get("minimum"), leaf.node.get("maximum")
        options = []
        if low is not None:
            options.append(st.integers(max_value=low - 1))
        if high is not None:
            options.append(st.integers(min_value=high + 1))
        return NearValid(put(doc, leaf.path, draw(st.one_of(options))), leaf.json_path, mutation)

    if mutation == "bool-for-int":
        leaf = draw(st.sampled_from(integers))
        return NearValid(put(doc, leaf.path, draw(st.booleans())), leaf.json_path, mutation)

    if mutation == "float":
        # a float that is not a whole number (5.0 IS an integer for JSON Schema), or one for a tri-state
        leaf = draw(st.sampled_from(integers + tristates))
        if leaf.kind == "integer":
            value = draw(st.floats(allow_nan=True, allow_infinity=True).filter(
                lambda x: not math.isfinite(x) or not x.is_integer()))
        else:
            value = draw(st.floats(allow_nan=True, allow_infinity=True))
        return NearValid(put(doc, leaf.path, value), leaf.json_path, mutation)

    if mutation == "string-true":
        leaf = draw(st.sampled_from(tristates + integers))
        value = draw(st.sampled_from(["true", "false", "True", "null"] if leaf.kind == "tristate" else ["4", "6", "0"]))
        return NearValid(put(doc, leaf.path, value), leaf.json_path, mutation)

    if mutation == "null-section":
        section = draw(st.sampled_from(sections))
        return NearValid(put(doc, section.path, None), section.json_path, mutation)

    if mutation == "array-instead-of-object":
        section = draw(st.sampled_from(sections))
        current = get(doc, section.path)
        content = current if isinstance(current, dict) else {}
        value = draw(st.sampled_from([[], [content], list(content.values()), list(content.items())]))
        return NearValid(put(doc, section.path, value), section.json_path, mutation)

    if mutation == "too-long-string":
        leaf = draw(st.sampled_from(strings))
        limit = leaf.node["maxLength"]
        value = draw(st.text(min_size=limit + 1, max_size=limit + 40))
        return NearValid(put(doc, leaf.path, value), leaf.json_path, mutation)

    if mutation == "top-level-array":
        return NearValid(draw(st.sampled_from([[doc], [], list(doc.items())])), "$", mutation)

    raise AssertionError(mutation)  # pragma: no cover


# ------------------------------------------------------------------ arbitrary invalid values


@cache
def _validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(patient_schema())


def is_valid_patient(value: Any) -> bool:
    """The oracle: jsonschema's reading of the contract (independent of cdss' fast validator)."""
    try:
        return bool(_validator().is_valid(value))
    except Exception:  # e.g. unhashable or exotic values: certainly not a valid JSON document
        return False


def json_values(json_only: bool = True) -> st.SearchStrategy[Any]:
    """Arbitrary JSON values; with json_only=False also NaN/inf, tuples and non-string keys."""
    section_names = [name for name in patient_schema()["properties"]]
    keys: st.SearchStrategy[Any] = st.sampled_from(section_names) | st.text(max_size=12)
    scalars: st.SearchStrategy[Any] = (st.none() | st.booleans() | st.integers()
                                       | st.floats(allow_nan=not json_only, allow_infinity=not json_only)
                                       | st.text(max_size=20))
    if not json_only:
        keys = keys | st.integers() | st.none() | st.booleans() | st.tuples(st.integers())

    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        containers = st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5)
        if not json_only:
            containers = containers | st.lists(children, max_size=3).map(tuple)
        return containers

    return st.recursive(scalars, extend, max_leaves=20)


@st.composite
def _corrupted(draw: st.DrawFn, json_only: bool) -> Any:
    """A valid document with one subtree (or the whole) replaced by an arbitrary value."""
    doc = draw(valid_patients())
    node = draw(st.sampled_from([n for n in walk()]))
    value = draw(json_values(json_only))
    return value if not node.path else put(doc, node.path, value)


def invalid_values(json_only: bool = True) -> st.SearchStrategy[Any]:
    """Arbitrary JSON-like values that are not valid patient documents."""
    return st.one_of(json_values(json_only), _corrupted(json_only)).filter(lambda v: not is_valid_patient(v))


def coherence_patients() -> st.SearchStrategy[dict[str, Any]]:
    """Patients screened negative with back pain, trend, stage and weeks drawn densely (issue 17 invariants)."""
    def build(doc: dict[str, Any], present: Any, trend: Any, stage: Any, weeks: Any) -> dict[str, Any]:
        doc = put(doc, "back_pain.present", present)
        doc = put(doc, "back_pain.trend", trend)
        doc = put(doc, "exercise.stage", stage)
        return put(doc, "exercise.weeks_consistent", weeks)

    return st.builds(build, patients_with_screening("negative"), st.sampled_from([True, False, None, ABSENT]),
                     st.sampled_from(["improving", "unchanged", "worsening", None, ABSENT]),
                     st.sampled_from(["none", "activation", "compound", None, ABSENT]),
                     st.one_of(st.sampled_from([None, ABSENT]), st.integers(0, 14), st.integers(0, 520)))
