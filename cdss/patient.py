"""Validate a patient document and flatten it into the one fact the engine sees.

Validation runs a compiled validator (fastjsonschema) on every document; only a document
that fails is re-checked with jsonschema, whose error tree gives the JSON path, what was
expected and what was found. Flattening gives every field an explicit value ("unknown"
for absent or null), because durable-rules misbehaves on missing nested fields.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any
from collections.abc import Callable

from .errors import PatientDataError, describe_value, printable
from .fields import UNKNOWN, Field, patient_fields
from .resources import schema

TRISTATE_VALUES = {True: "true", False: "false", None: UNKNOWN}

_lock = threading.Lock()
_fast_validator: Callable[[Any], Any] | None = None


def _fast() -> Callable[[Any], Any]:
    global _fast_validator
    if _fast_validator is None:
        with _lock:
            if _fast_validator is None:
                import copy

                import fastjsonschema

                # a copy: fastjsonschema rewrites every "$ref" of the schema it is given, in place
                _fast_validator = fastjsonschema.compile(copy.deepcopy(schema("patient")))
    return _fast_validator


def json_path(parts: Any) -> str:
    """Render a jsonschema path deque as `$.a.b[0]`."""
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validate_patient(patient: Any) -> dict[str, Any]:
    """Return the document as a plain dict, or raise PatientDataError naming the first problem.

    `prepare` (the evaluation hot path) accepts exactly what this accepts, in one generated
    pass, and calls this for anything else: a check added here that the schema does not
    express must be added to `compile_checked_flattener` too (benchmarks/run.py checks both agree).
    """
    patient = plain_data(patient)
    surrogate = unpaired_surrogate_error(patient)
    if surrogate is not None:
        raise surrogate
    try:
        _fast()(patient)
        return patient  # type: ignore[no-any-return]
    except RecursionError:
        raise PatientDataError("$", "a patient document (at most 4 levels deep)", "nesting too deep") from None
    except Exception:  # fastjsonschema.JsonSchemaException: explain it precisely below
        pass
    raise explain_invalid(patient)


def explain_invalid(patient: Any) -> PatientDataError:
    """The most useful PatientDataError for a document known to be invalid."""
    if not isinstance(patient, dict):
        return PatientDataError("$", "a JSON object (one patient)", describe_value(patient))
    unknown = _first_unknown_key(patient, schema("patient"), "$")
    if unknown is not None:
        return unknown
    not_json = _first_non_json_value(patient, "$", 0)
    if not_json is not None:
        return not_json
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema("patient"))
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(patient))
    except RecursionError:
        return PatientDataError("$", "a patient document (at most 4 levels deep)", "nesting too deep")
    if error is None:  # the fast validator and jsonschema disagree: report rather than pass it on
        return PatientDataError("$", "a valid patient document", "a document the validators disagree on")
    path = json_path(error.absolute_path)
    return PatientDataError(path, _expected(error), describe_value(error.instance))


def _first_unknown_key(node: Any, node_schema: dict[str, Any], path: str) -> PatientDataError | None:
    """Find a misspelled or unknown key first: it is the most common mistake and the most dangerous."""
    if not isinstance(node, dict):
        return None
    defs = schema("patient").get("$defs", {})
    properties = node_schema.get("properties", {})
    for key, value in node.items():
        if not isinstance(key, str) or key not in properties:
            shown = _shown_key(key)
            import difflib  # only on this error path: not in a one-patient start

            near = difflib.get_close_matches(key, list(properties), n=1, cutoff=0.6) if shown == key else []
            hint = f"did you mean '{near[0]}'?" if near else None
            known = ", ".join(properties) if properties else "none"
            found = "an unknown key" if isinstance(key, str) else f"a key that is not text ({type(key).__name__})"
            return PatientDataError(f"{path}.{shown}", f"one of the known keys ({known})", found, hint)
        sub = properties[key]
        if "$ref" in sub:
            sub = defs[sub["$ref"].rsplit("/", 1)[-1]]
        nested = _first_unknown_key(value, sub, f"{path}.{key}")
        if nested is not None:
            return nested
    return None


def _first_non_json_value(node: Any, path: str, depth: int) -> PatientDataError | None:
    """Values no JSON parser produces (Decimal, complex, tuples, NaN, huge integers) are named
    before jsonschema sees them: it would compare or print them and fail in unhelpful ways."""
    if depth > 8:
        return PatientDataError(path, "a patient document (at most 4 levels deep)", "nesting too deep")
    if isinstance(node, dict):
        for key, value in node.items():
            found = _first_non_json_value(value, f"{path}.{_shown_key(key)}", depth + 1)
            if found is not None:
                return found
        return None
    if node is None or isinstance(node, (bool, str)):
        return None
    if isinstance(node, int):
        return None if node.bit_length() <= 64 else PatientDataError(path, "a whole number", describe_value(node))
    if isinstance(node, float):
        return None if node == node and node not in (float("inf"), float("-inf")) else PatientDataError(
            path, "a finite number", "NaN or infinity")
    if isinstance(node, list):
        return PatientDataError(path, "a value of the patient schema", "an array")
    return PatientDataError(path, "a JSON value", f"a Python {type(node).__name__}")


def _shown_key(key: Any) -> str:
    """A key as it may appear in a message: text, at most 64 characters (it could be megabytes)."""
    text = key if isinstance(key, str) else repr(key)
    text = text if len(text) <= 64 else f"{text[:48]}…({len(text):,} characters)"
    return printable(text)


def _expected(error: Any) -> str:
    keyword = error.validator
    value = error.validator_value
    if keyword == "type":
        types = [value] if isinstance(value, str) else list(value)
        words = {"boolean": "true or false", "null": "null (unknown)", "integer": "a whole number",
                 "object": "an object", "string": "a string"}
        return " or ".join(words.get(t, t) for t in types)
    if keyword == "enum":
        return "one of " + ", ".join("null" if v is None else repr(v) for v in value)
    if keyword == "maximum":
        return f"a number at most {value}"
    if keyword == "minimum":
        return f"a number at least {value}"
    if keyword == "maxLength":
        return f"a string of at most {value} characters"
    return error.message


def flatten(patient: Mapping[str, Any], fields: Mapping[str, Field] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The flat fact for a *validated* document, and the dotted paths of its unknown fields.

    Tri-state answers become "true"/"false"/"unknown"; enums their value or "unknown";
    integers their value plus a `<key>__known` flag, so comparisons on an unknown number
    are false by construction.
    """
    fact: dict[str, Any] = {}
    unknown: list[str] = []
    for field in (fields or patient_fields()).values():
        value: Any = patient
        for part in field.path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if field.kind == "tristate":
            fact[field.key] = TRISTATE_VALUES[value]
        elif field.kind == "enum":
            fact[field.key] = UNKNOWN if value is None else value
        else:
            fact[field.key] = 0 if value is None else int(value)
            fact[field.key + "__known"] = "false" if value is None else "true"
        if value is None:
            unknown.append(field.path)
    return fact, unknown


Checked = Callable[[dict[str, Any]], "tuple[dict[str, Any], list[str], str, str] | None"]
_checked: Checked | None = None
_checked_ready = False


def prepare(patient: Any) -> tuple[dict[str, Any], dict[str, Any], list[str], str, str]:
    """Validate and flatten in one pass: `(document, fact, unknown, encoded, answers)` for the engine.

    Same result as `validate_patient` then `flatten` (same PatientDataError for an invalid
    document), plus the fact as JSON text with `"id": "patient", "kind": "patient"` appended
    and the closing brace left off (the engine adds the session id), plus `answers_text(fact)`
    (what the card UUIDs hash). The one pass is Python
    generated once from the schema (`compile_checked_flattener`); any document it does not
    accept goes through `validate_patient`, so errors are exactly those of the full path.
    """
    global _checked, _checked_ready
    if not _checked_ready:
        with _lock:
            if not _checked_ready:
                try:
                    _checked = compile_checked_flattener(schema("patient"), patient_fields())
                except NotImplementedError:  # a schema feature the generator does not know: two passes
                    _checked = None
                _checked_ready = True
    if type(patient) is not dict and isinstance(patient, Mapping):
        patient = plain_data(patient)
    if _checked is not None and type(patient) is dict:
        out = _checked(patient)
        if out is not None:
            text = patient.get("patient_id")  # the one free-text value the fast path lets through
            if isinstance(text, str) and not text.isprintable() and _SURROGATE.search(text):
                raise PatientDataError("$.patient_id", "text (valid Unicode)", "an unpaired surrogate (\\ud800-\\udfff)")
            return patient, out[0], out[1], out[2], out[3]
    document = validate_patient(patient)  # raises the precise PatientDataError
    fact, unknown = flatten(document)
    import json

    return document, fact, unknown, json.dumps(dict(fact, id="patient", kind="patient"))[:-1], answers_text(fact)


def answers_text(fact: Mapping[str, Any]) -> str:
    """A flat fact's values in field order (an integer's `__known` flag after it), joined by `|`: the
    patient's answers as the card UUIDs hash them (docs/SERVICE.md). Key order and null-versus-absent
    in the document do not change it. It is unambiguous because no enum value of the patient schema
    holds a `|` (a test checks; the one-pass generator also refuses one)."""
    return "|".join([str(value) for value in fact.values()])


_OBJECT_KEYWORDS = {"type", "additionalProperties", "properties", "description", "title", "$schema", "$id", "$defs"}


def compile_checked_flattener(root: Mapping[str, Any], fields: Mapping[str, Field]) -> Checked:
    """Generate one straight-line function that validates a document against `root` and flattens it.

    It returns None for any document that breaks the schema. It knows exactly the schema
    features the patient schema uses (closed objects; tri-states `["boolean", "null"]`;
    string enums with null; integers with bounds; strings with maxLength) and raises
    NotImplementedError for anything else, so a schema change can never be silently
    under-checked. The checks mirror fastjsonschema's (e.g. 3.0 is an integer, true is not).
    """
    import json

    defs = root.get("$defs", {})
    namespace: dict[str, Any] = {"_ABSENT": object(), "_EMPTY": {}, "_int_ok": _integer_ok}
    lines = ["def checked(doc):", "    unknown = []"]
    visited: list[tuple[str, str]] = []
    entries: list[tuple[str, str]] = []  # (fact key, variable)
    json_parts: list[str] = []
    counter = iter(range(1_000_000))

    def resolve(prop: Mapping[str, Any]) -> dict[str, Any]:
        if "$ref" in prop:
            ref = prop["$ref"]
            if not ref.removeprefix(root.get("$id", "")).startswith("#/$defs/"):
                raise NotImplementedError(ref)
            return {**defs[ref.rsplit("/", 1)[-1]], **{k: v for k, v in prop.items() if k != "$ref"}}
        return dict(prop)

    def types_of(prop: Mapping[str, Any]) -> set[str]:
        types = prop.get("type")
        return {types} if isinstance(types, str) else set(types or ())

    def obj(node: Mapping[str, Any], var: str, prefix: str) -> None:
        nonlocal lines
        if set(node) - _OBJECT_KEYWORDS or node.get("type") != "object" or node.get("additionalProperties") is not False:
            raise NotImplementedError(prefix or "$")
        keys = f"_K{next(counter)}"
        namespace[keys] = frozenset(node["properties"])
        lines.append(f"    if not {keys}.issuperset({var}): return None")
        for name, raw in node["properties"].items():
            prop = resolve(raw)
            path = f"{prefix}{name}"
            kinds = types_of(prop)
            n = next(counter)
            v, j = f"v{n}", f"j{n}"
            if "properties" in prop:
                lines += [f"    {v} = {var}.get({name!r}, _ABSENT)",
                          f"    if {v} is _ABSENT: {v} = _EMPTY",
                          f"    elif type({v}) is not dict: return None"]
                obj(prop, v, path + ".")
                continue
            lines.append(f"    {v} = {var}.get({name!r})")
            if "enum" in prop:
                values = prop["enum"]
                if set(prop) - {"enum", "description"} or None not in values or not all(
                        x is None or (isinstance(x, str) and json.dumps(x, ensure_ascii=False) == f'"{x}"' and "|" not in x)
                        for x in values):
                    raise NotImplementedError(path)
                table = f"_E{n}"
                namespace[table] = frozenset(x for x in values if x is not None)
                lines += [f"    if {v} is None: {v} = {UNKNOWN!r}; unknown.append({path!r})",
                          f"    elif not (isinstance({v}, str) and {v} in {table}): return None"]
                kind = "enum"
            elif kinds == {"boolean", "null"}:
                if set(prop) - {"type", "description"}:
                    raise NotImplementedError(path)
                lines += [f"    if {v} is None: {v} = {UNKNOWN!r}; unknown.append({path!r})",
                          f"    elif {v} is True: {v} = 'true'",
                          f"    elif {v} is False: {v} = 'false'",
                          "    else: return None"]
                kind = "tristate"
            elif kinds == {"integer", "null"}:
                if set(prop) - {"type", "minimum", "maximum", "description"}:
                    raise NotImplementedError(path)
                low, high = prop.get("minimum"), prop.get("maximum")
                if not all(b is None or (isinstance(b, int) and not isinstance(b, bool)) for b in (low, high)):
                    raise NotImplementedError(path)
                bounds = " and ".join([*([f"{low} <= {v}"] if low is not None else []),
                                       *([f"{v} <= {high}"] if high is not None else [])]) or "True"
                lines += [f"    if {v} is None: {v} = 0; {j} = 'false'; unknown.append({path!r})",
                          f"    elif type({v}) is int and {bounds}: {j} = 'true'",
                          f"    elif _int_ok({v}, {low!r}, {high!r}): {v} = int({v}); {j} = 'true'",
                          "    else: return None"]
                kind = "integer"
            elif kinds == {"string"}:
                if set(prop) - {"type", "maxLength", "description"}:
                    raise NotImplementedError(path)
                limit = prop.get("maxLength")
                lines.append(f"    if {v} is not None and not (isinstance({v}, str)"
                             + (f" and len({v}) <= {int(limit)}" if limit is not None else "") + "): return None")
                lines.append(f"    if {v} is None and {name!r} in {var}: return None")  # null is not a string
                continue  # opaque: not a field
            else:
                raise NotImplementedError(path)
            visited.append((path, kind))
            key = path.replace(".", "__")
            if json.dumps(key) != f'"{key}"':
                raise NotImplementedError(path)
            entries.append((key, v))
            if kind == "integer":
                entries.append((key + "__known", j))
                json_parts.append(f'"{key}": {{{v}}}, "{key}__known": "{{{j}}}"')
            else:
                json_parts.append(f'"{key}": "{{{v}}}"')

    obj(root, "doc", "")
    if visited != [(f.path, f.kind) for f in fields.values()]:
        raise NotImplementedError("the schema walk and the field catalogue disagree")
    fact = ", ".join(f"{key!r}: {var}" for key, var in entries)
    head = "{{" + ", ".join([*json_parts, '"id": "patient"', '"kind": "patient"'])
    answers = "|".join(f"{{{var}}}" for _, var in entries)  # answers_text(fact), from the locals
    lines.append(f"    return {{{fact}}}, unknown, f{head!r}, f{answers!r}")
    exec(compile("\n".join(lines), "<cdss.patient checked flattener>", "exec"), namespace)
    return namespace["checked"]  # type: ignore[no-any-return]


_encoder: Callable[[Mapping[str, Any]], str] | None = None


def encode_fact(fact: Mapping[str, Any]) -> str:
    """`json.dumps(dict(fact, id="patient", kind="patient"))[:-1]`, the engine's form of a fact, for a
    fact `prepare` made, also after some of its fields were set unknown (contradictory answers).

    With the one-pass flattener in use (its generator checked that every enum value needs no
    JSON escaping), this is one generated f-string, about 5x faster than json.dumps.
    """
    global _encoder
    if _encoder is None:
        prepare({})  # decides whether the generated one-pass path is in use
        with _lock:
            if _encoder is None:
                _encoder = compile_fact_encoder(patient_fields()) if _checked is not None else _dumps_fact
    return _encoder(fact)


def _dumps_fact(fact: Mapping[str, Any]) -> str:
    import json

    return json.dumps(dict(fact, id="patient", kind="patient"))[:-1]


def compile_fact_encoder(fields: Mapping[str, Field]) -> Callable[[Mapping[str, Any]], str]:
    """`encode_fact` for facts of these fields whose text values need no JSON escaping: one generated
    f-string (about twice as fast as a %-template: the values are formatted without a parse)."""
    parts = []
    for fld in fields.values():
        key = fld.key
        # the key goes into generated source (in an f-string and as a subscript): only plain names
        if not re.fullmatch(r"[A-Za-z0-9_]+", key):
            raise NotImplementedError(fld.path)
        if fld.kind == "integer":
            parts.append(f'"{key}": {{f["{key}"]:d}}, "{key}__known": "{{f["{key}__known"]}}"')
        else:
            parts.append(f'"{key}": "{{f["{key}"]}}"')
    template = "{{" + ", ".join([*parts, '"id": "patient"', '"kind": "patient"'])
    namespace: dict[str, Any] = {}
    exec(compile(f"def encode(f):\n    return f'''{template}'''", "<cdss.patient fact encoder>", "exec"), namespace)  # noqa: S102 - generated from the field catalogue
    return namespace["encode"]  # type: ignore[no-any-return]


def _integer_ok(value: Any, low: int | None, high: int | None) -> bool:
    """fastjsonschema's test for `type: integer` plus bounds, for values that are not plain ints."""
    if isinstance(value, bool):
        return False
    if not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
        return False
    return (low is None or not value < low) and (high is None or not value > high)


_canonical: Callable[[Mapping[str, Any]], str] | None = None


def canonical_patient(patient: Mapping[str, Any]) -> str:
    """`result.canonical(patient)` for a *validated* document, about 2x faster (generated from the schema)."""
    global _canonical
    if _canonical is None:
        with _lock:
            if _canonical is None:
                _canonical = compile_canonical(schema("patient"))
    return _canonical(patient)


def compile_canonical(root: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], str]:
    """Generate a serializer equal to `json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))`
    for documents valid against `root` (objects of known keys; tri-states, string enums, integers, strings)."""
    from json.encoder import encode_basestring

    from .result import canonical as exact  # the spelling this generated function must reproduce

    defs = root.get("$defs", {})
    namespace: dict[str, Any] = {"_LIT": {True: "true", False: "false", None: "null"}, "_str": encode_basestring,
                                 "_exact": exact, "_int": int}
    lines = ["def canonical(doc):"]
    counter = iter(range(1_000_000))

    def walk(node: Mapping[str, Any], var: str, indent: str) -> str:
        parts = f"p{next(counter)}"
        lines.append(f"{indent}{parts} = []")
        for name in sorted(node["properties"]):
            prop = node["properties"][name]
            if "$ref" in prop:
                prop = {**defs[prop["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in prop.items() if k != "$ref"}}
            key = encode_basestring(name) + ":"
            types = prop.get("type")
            types = {types} if isinstance(types, str) else set(types or ())
            lines.append(f"{indent}if {name!r} in {var}:")
            value = f"v{next(counter)}"
            lines.append(f"{indent}    {value} = {var}[{name!r}]")
            if "properties" in prop:
                inner = walk(prop, value, indent + "    ")
                lines.append(f"{indent}    {parts}.append({key!r} + '{{' + ','.join({inner}) + '}}')")
            elif "enum" in prop:
                table = f"_E{next(counter)}"
                if not all(v is None or isinstance(v, str) for v in prop["enum"]):
                    raise ValueError(f"unsupported enum {prop['enum']!r}")
                namespace[table] = {v: exact(v) for v in prop["enum"]}
                lines.append(f"{indent}    {parts}.append({key!r} + {table}[{value}])")
            elif types <= {"boolean", "null"}:
                lines.append(f"{indent}    {parts}.append({key!r} + _LIT[{value}])")
            elif types <= {"integer", "null"}:
                lines.append(f"{indent}    {parts}.append({key!r} + ('null' if {value} is None else "
                             f"str({value}) if type({value}) is _int else _exact({value})))")
            elif types == {"string"}:
                lines.append(f"{indent}    {parts}.append({key!r} + _str({value}))")
            else:
                raise ValueError(f"unsupported schema node {name!r}: {prop!r}")
        return parts

    top = walk(root, "doc", "    ")
    lines.append(f"    return '{{' + ','.join({top}) + '}}'")
    exec(compile("\n".join(lines), "<cdss.patient canonical>", "exec"), namespace)
    return namespace["canonical"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------- the input boundary (issue 16)

_SURROGATE = re.compile("[\ud800-\udfff]")


def plain_data(value: Any, depth: int = 0) -> Any:
    """The document as plain dicts and lists, read once: a Mapping whose `get` and `items` disagree
    cannot show one content to validation and another to the rules. Plain dicts are copied only
    when something below them is not plain."""
    if depth > 16:
        return value  # validation reports the nesting
    if type(value) is dict:
        changed = {key: plain_data(item, depth + 1) for key, item in value.items()}
        return value if all(changed[key] is value[key] for key in changed) else changed
    if isinstance(value, Mapping):
        return {key: plain_data(item, depth + 1) for key, item in list(value.items())}
    return value


def unpaired_surrogate_error(node: Any, path: str = "$", depth: int = 0) -> PatientDataError | None:
    """A lone surrogate (`"\\ud800"` in JSON) cannot be written as UTF-8: refuse it, with its path."""
    if depth > 16:
        return None
    if isinstance(node, str):
        if not node.isprintable() and _SURROGATE.search(node):
            return PatientDataError(path, "text (valid Unicode)", "an unpaired surrogate (\\ud800-\\udfff)")
        return None
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{_shown_key(key)}"
            if isinstance(key, str) and not key.isprintable() and _SURROGATE.search(key):
                return PatientDataError(where, "a key in valid Unicode", "an unpaired surrogate (\\ud800-\\udfff)")
            found = unpaired_surrogate_error(value, where, depth + 1)
            if found is not None:
                return found
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found = unpaired_surrogate_error(item, f"{path}[{i}]", depth + 1)
            if found is not None:
                return found
    return None
