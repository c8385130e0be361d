"""Load a rule set from YAML, check it against the schema and for meaning, report every problem.

A rule author gets `file:line:col: rule-id: message` for every problem at once, with the
nearest valid name for a typo. Nothing reaches the compiler unless this module accepts it.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .conditions import All, AnyOf, Condition, Leaf, Not, ParamRef, outcomes
from .errors import Problem, RuleFileError
from .evidence import SourceDocument, quote_problem, section_problem, source_for
from .fields import Field, patient_fields
from .model import (
    GATED_CATEGORIES,
    NO_SCOPE,
    PLACEHOLDER,
    Conflict,
    GuidanceItem,
    Origin,
    Pack,
    Parameter,
    Question,
    Rationale,
    Rule,
    RuleSetInfo,
    Scope,
)
from .resources import MAX_SOURCE_BYTES, read_rule_file, rules_dir, schema

if TYPE_CHECKING:  # imported when a file is read: a cached rule set needs no YAML (cold start)
    from .yaml_source import YamlDocument

Reader = Callable[[Path, int], bytes]
"""`read(path, limit)`: at most limit + 1 bytes of a file, as `resources.read_rule_file`; the CLI
cache passes one that remembers what was read, so its key covers exactly the bytes parsed."""

MANIFEST = "ruleset.yaml"
GUIDANCE = "guidance.yaml"
TEMPLATE_ANY = re.compile(r"\{\{(.*?)\}\}")
PY_TYPES: dict[str, tuple[type, ...]] = {"integer": (int,), "number": (int, float), "boolean": (bool,), "string": (str,)}


@dataclass
class LoadedRules:
    """Everything a valid rule set holds, ready to compile."""

    info: RuleSetInfo
    root: Path
    packs: tuple[Pack, ...]
    rules: tuple[Rule, ...]
    parameters: dict[str, Parameter]
    guidance: dict[str, GuidanceItem]
    warnings: tuple[Problem, ...] = ()
    sources: tuple[SourceDocument, ...] = ()  # declared in ruleset.yaml; empty: quotes not verified
    inventory: Path | None = None  # the guidance inventory file, when declared
    conflicts: tuple[Conflict, ...] = ()  # ruleset.yaml `conflicts:` (issue 17)
    scope: Scope = NO_SCOPE  # ruleset.yaml `scope:` (issue 17)
    stands_alone: tuple[str, ...] = ()  # ruleset.yaml `stands_alone:` urgencies whose result shows only their own cards


@dataclass
class _Collector:
    problems: list[Problem] = field(default_factory=list)

    def add(self, doc: YamlDocument | Path | str, path: Iterable[Any] | None, rule_id: str | None, message: str,
            severity: str = "error") -> None:
        if not isinstance(doc, (Path, str)):  # a YamlDocument
            where = doc.locate(tuple(path or ())) or (None, None)
            name = _display(doc.path)
        else:
            where, name = (None, None), _display(Path(doc))
        self.problems.append(Problem(name, where[0], where[1], rule_id, message, severity))  # type: ignore[arg-type]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def nearest(name: str, options: Iterable[str]) -> str:
    """' (did you mean X?)' for a likely typo, else ''."""
    import difflib  # only on the error path: not in a warm start

    near = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f"; did you mean '{near[0]}'?" if near else ""


# ---------------------------------------------------------------- entry points


def load(path: str | Path | None = None, *, schema_checked: bool = False, read: Reader | None = None) -> LoadedRules:
    """Load and check a rule set (directory with ruleset.yaml, or one pack file); raise RuleFileError.

    `schema_checked=True` skips the JSON Schema pass (and importing jsonschema) for files the
    caller knows, byte for byte, passed it before; every other check still runs. `read`
    replaces the bounded file read (`resources.read_rule_file`), once per file.
    """
    loaded, problems = collect(path, schema_checked=schema_checked, read=read)
    errors = [p for p in problems if p.severity == "error"]
    if errors or loaded is None:
        raise RuleFileError(errors or problems)
    return loaded


def collect(path: str | Path | None = None, *, schema_checked: bool = False,
            read: Reader | None = None) -> tuple[LoadedRules | None, list[Problem]]:
    """Load a rule set and return it with every problem found (errors first, then warnings)."""
    root = Path(path) if path is not None else rules_dir()
    out = _Collector()
    if not root.exists():
        out.add(root, None, None, "no such file or directory; give a rule set directory (with ruleset.yaml) or a rule pack file")
        return None, out.problems
    manifest_doc: YamlDocument | None = None
    if root.is_dir():
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            out.add(root, None, None, f"no {MANIFEST} in this directory; a rule set directory names itself in {MANIFEST}")
            return None, out.problems
        manifest_doc = _read(manifest_path, "rule-set", out, schema_checked, read)
        if manifest_doc is None:
            return None, out.problems
        pack_paths = _pack_paths(root, manifest_doc, out)
        declared = manifest_doc.data["rule_set"].get("guidance")
        guidance_path = (root / declared if declared else root / GUIDANCE if (root / GUIDANCE).is_file()
                         else rules_dir() / GUIDANCE)
        own = root / declared if declared else root / GUIDANCE  # the fallback is the bundled catalogue
        if _not_a_plain_file(root, own, out, manifest_doc):
            return None, out.problems
        sources, inventory = _evidence(root, manifest_doc, out, read)
    else:
        pack_paths = [root]
        guidance_path = root.parent / GUIDANCE if (root.parent / GUIDANCE).is_file() else rules_dir() / GUIDANCE
        sources, inventory = _evidence(root.parent, _beside(root.parent / MANIFEST, read), _Collector(), read)
    guidance_doc = _read(guidance_path, "guidance", out, schema_checked, read)
    guidance = _guidance(guidance_doc, out) if guidance_doc else {}
    docs = [doc for doc in (_read(p, "rule-pack", out, schema_checked, read) for p in pack_paths) if doc is not None]
    if len(docs) != len(pack_paths) or not guidance:
        return None, _sorted(out.problems)
    if sources:
        _check_quotes(docs, sources, out)
    loaded = _build(root, manifest_doc, docs, guidance_doc, guidance, out)
    problems = _sorted(out.problems)
    if out.errors:
        return None, problems
    assert loaded is not None
    loaded.warnings = tuple(p for p in problems if p.severity == "warning")
    loaded.sources, loaded.inventory = tuple(sources), inventory
    return loaded, problems


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.severity != "error", p.file, p.line or 0, p.column or 0))


def yaml_files(directory: Path) -> list[Path]:
    """The *.yaml and *.yml files of a directory, sorted: what a rule set or scenario directory holds."""
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def _pack_paths(root: Path, manifest: YamlDocument, out: _Collector) -> list[Path]:
    guidance_name = manifest.data["rule_set"].get("guidance") or GUIDANCE
    listed = manifest.data["rule_set"].get("packs")
    if listed is None:
        return [p for p in yaml_files(root) if p.name not in (MANIFEST, guidance_name)]
    for extra in yaml_files(root):  # a forgotten pack is silently not loaded: say so
        if extra.name not in (MANIFEST, guidance_name, *listed):
            out.problems.append(Problem(_display(extra), 1, 1, None, f"'{extra.name}' is in the rule-set directory but not "
                                        f"listed in {MANIFEST} packs: its rules are not loaded; add it to packs, or move "
                                        "it out of the directory", "warning"))
    paths = []
    for i, name in enumerate(listed):
        candidate = root / name
        if _not_a_plain_file(root, candidate, out, manifest, ("rule_set", "packs", i)):
            continue
        if not candidate.is_file():
            present = [p.name for p in yaml_files(root)]
            out.add(manifest, ("rule_set", "packs", i), None, f"pack file '{name}' does not exist{nearest(name, present)}")
        else:
            paths.append(candidate)
    return paths


def _beside(manifest_path: Path, read: Reader | None = None) -> YamlDocument | None:
    """The manifest next to a single pack file, for its declared sources; None if absent or unreadable."""
    from .yaml_source import YamlProblem, load_yaml

    try:
        doc = load_yaml(manifest_path, read) if manifest_path.is_file() else None
    except (YamlProblem, OSError):
        return None
    ok = doc is not None and isinstance(doc.data, dict) and isinstance(doc.data.get("rule_set"), dict)
    return doc if ok else None


def _evidence(root: Path, manifest: YamlDocument | None, out: _Collector,
              read: Reader | None = None) -> tuple[list[SourceDocument], Path | None]:
    """The source documents and guidance inventory the manifest declares, read and checked to exist."""
    if manifest is None:
        return [], None
    spec = manifest.data["rule_set"]
    sources: list[SourceDocument] = []
    inside = root.resolve()
    for i, item in enumerate(spec.get("sources") or ()):
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            continue  # the schema check reports it
        path = root / item["path"]
        where = ("rule_set", "sources", i, "path")
        if _not_a_plain_file(root, path, out, manifest, where):
            continue
        if not path.resolve().is_relative_to(inside):
            out.add(manifest, where, None, f"source '{item['path']}' lies outside the rule-set directory; keep the evidence inside it")
            continue
        try:
            raw = (read or read_rule_file)(path, MAX_SOURCE_BYTES)  # once, bounded; the CLI cache hashes these bytes
            if len(raw) > MAX_SOURCE_BYTES:
                out.add(manifest, where, None, f"source file '{item['path']}' is over {MAX_SOURCE_BYTES:,} bytes")
                continue
            text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as read_text() reads it
        except FileNotFoundError:
            out.add(manifest, where, None, f"source file '{item['path']}' does not exist; copy the source document there "
                    "or correct the path")
            continue
        except (OSError, UnicodeDecodeError) as error:
            out.add(manifest, where, None, f"source file '{item['path']}' cannot be read as UTF-8 text ({error})")
            continue
        sources.append(SourceDocument(str(item.get("id", "")), str(item.get("title", "")), path, text))
    inventory = spec.get("inventory")
    inventory_path = root / inventory if isinstance(inventory, str) else None
    if inventory_path is not None and not inventory_path.is_file():
        out.add(manifest, ("rule_set", "inventory"), None, f"guidance inventory '{inventory}' does not exist")
        inventory_path = None
    return sources, inventory_path


def _check_quotes(docs: list[YamlDocument], sources: list[SourceDocument], out: _Collector) -> None:
    """Every rule's quote verbatim in the source its pack cites, under the section it names."""
    for doc in docs:
        cited = (doc.data["pack"].get("source") or {}).get("file")
        source = source_for(sources, cited)
        text = source.text if source else "\n\n".join(s.text for s in sources)
        name = _display(source.path) if source else "the declared sources"
        for i, raw in enumerate(doc.data["rules"]):
            if raw.get("status") == "retired" or doc.data["pack"].get("status") == "retired":
                continue
            quote, section = raw["source"]["quote"], raw["source"]["section"]
            problem = quote_problem(quote, text, name)
            if problem:
                out.add(doc, ("rules", i, "source", "quote"), raw["id"], problem)
                continue
            problem = section_problem(section, quote, text, name)
            if problem:
                out.add(doc, ("rules", i, "source", "section"), raw["id"], problem)


def _read(path: Path, schema_name: str, out: _Collector, schema_checked: bool = False,
          read: Reader | None = None) -> YamlDocument | None:
    from .yaml_source import YamlProblem, load_yaml

    try:
        doc = load_yaml(path, read)
    except YamlProblem as problem:
        out.problems.append(Problem(_display(path), problem.line, problem.column, None, problem.message))
        return None
    except OSError as error:
        out.add(path, None, None, f"cannot read: {error.strerror or error}")
        return None
    before = len(out.errors)
    _strict_text_problems(doc, out)
    if len(out.errors) != before:
        return None
    if schema_checked:
        return doc
    _schema_problems(doc, schema_name, out)
    return doc if len(out.errors) == before else None


# ---------------------------------------------------------------- schema errors, in words


def _rule_id(doc: YamlDocument, path: tuple[Any, ...]) -> str | None:
    if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int) and isinstance(doc.data, dict):
        rules = doc.data.get("rules")
        if isinstance(rules, list) and path[1] < len(rules) and isinstance(rules[path[1]], dict):
            rule_id = rules[path[1]].get("id")
            return rule_id if isinstance(rule_id, str) else f"rules[{path[1]}]"
    return None


def _schema_problems(doc: YamlDocument, schema_name: str, out: _Collector) -> None:
    import jsonschema

    validator = _strict_validator_class()(schema(schema_name))
    for error in validator.iter_errors(doc.data):
        path = tuple(error.absolute_path)
        if schema_name == "rule-pack" and "when" in path[:3] and len(path) >= 3 and path[0] == "rules":
            continue  # conditions get precise messages from _parse_condition
        error = jsonschema.exceptions.best_match([error])
        path = tuple(error.absolute_path)
        rule_id = _rule_id(doc, path)
        for where, message in _explain(error, path):
            out.add(doc, where, rule_id, message)


def _explain(error: Any, path: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], str]]:
    keyword, value, instance = error.validator, error.validator_value, error.instance
    subschema = error.schema if isinstance(error.schema, dict) else {}
    here = ".".join(str(p) for p in path) or "the file"
    if keyword == "additionalProperties" and isinstance(instance, dict):
        allowed = list(subschema.get("properties", {}))
        return [((*path, key), f"unknown key '{key}' in {here}{nearest(str(key), allowed)} "
                 f"(allowed: {', '.join(allowed)})")
                for key in instance if key not in allowed]
    if keyword == "required":
        missing = [k for k in value if isinstance(instance, dict) and k not in instance]
        return [(path, f"{here} is missing the required key '{k}'") for k in missing]
    if keyword == "enum":
        options = ", ".join(str(v) for v in value)
        return [(path, f"{here} is {instance!r}; expected one of {options}{nearest(str(instance), [str(v) for v in value])}")]
    if keyword == "maxLength" and path and path[-1] == "summary":
        return [(path, f"card summary is {len(instance)} characters; CDS Hooks needs fewer than 140: shorten it "
                 "and move detail into `detail`")]
    if keyword == "type":
        return [(path, f"{here} should be {value if isinstance(value, str) else ' or '.join(value)}, "
                 f"found {type(instance).__name__} {instance!r}"[:300])]
    if keyword == "pattern":
        return [(path, f"{here} is {instance!r}, which does not match the required form {value}")]
    return [(path, f"{here}: {error.message}"[:300])]


# ---------------------------------------------------------------- meaning


def _guidance(doc: YamlDocument, out: _Collector) -> dict[str, GuidanceItem]:
    items: dict[str, GuidanceItem] = {}
    for i, item in enumerate(doc.data["guidance"]):
        if item["id"] in items:
            out.add(doc, ("guidance", i, "id"), None, f"guidance id {item['id']} appears twice")
        items[item["id"]] = GuidanceItem(item["id"], item["kind"], item["text"], item.get("theme", ""))
    return items


def _build(root: Path, manifest: YamlDocument | None, docs: list[YamlDocument], guidance_doc: YamlDocument | None,
           guidance: dict[str, GuidanceItem], out: _Collector) -> LoadedRules | None:
    packs: list[Pack] = []
    parameters: dict[str, Parameter] = {}
    param_docs: dict[str, tuple[YamlDocument, tuple[Any, ...]]] = {}
    for doc in docs:
        meta = doc.data["pack"]
        if any(p.id == meta["id"] for p in packs):
            out.add(doc, ("pack", "id"), None, f"pack id '{meta['id']}' is used by another pack of this rule set")
        packs.append(Pack(meta["id"], meta["title"], meta["version"], meta["status"], meta,
                          Origin(_display(doc.path), doc.locate(("pack",))[0] if doc.locate(("pack",)) else None)))
        if meta["status"] == "draft":
            out.add(doc, ("pack", "status"), None, f"pack '{meta['id']}' is still a draft", "warning")
        for name, spec in (doc.data.get("parameters") or {}).items():
            where = ("parameters", name)
            if name in parameters:
                out.add(doc, where, None, f"parameter '{name}' is already declared in pack '{parameters[name].pack}'")
                continue
            _check_parameter(doc, where, name, spec, guidance, out)
            line = doc.locate(where)
            parameters[name] = Parameter(
                name=name, type=spec["type"], default=spec["default"], description=spec["description"],
                origin=spec["origin"], unit=spec.get("unit"), minimum=spec.get("minimum"), maximum=spec.get("maximum"),
                enum=tuple(spec["enum"]) if "enum" in spec else None, guidance=tuple(spec.get("guidance", ())),
                pack=meta["id"], where=Origin(_display(doc.path), line[0] if line else None),
                at_most=spec["at_most"]["param"] if "at_most" in spec else None)
            param_docs[name] = (doc, where)
    for name, param in parameters.items():
        if param.at_most is None:
            continue
        doc, where = param_docs[name]
        other = parameters.get(param.at_most)
        if other is None:
            out.add(doc, (*where, "at_most"), None,
                    f"parameter '{name}': at_most names undeclared parameter '{param.at_most}'{nearest(param.at_most, parameters)}")
        elif other.type not in ("integer", "number") or param.type not in ("integer", "number"):
            out.add(doc, (*where, "at_most"), None, f"parameter '{name}': at_most compares numbers only")
        else:
            problem = parameter_constraint_problem(parameters, {n: p.default for n, p in parameters.items()}, name)
            if problem:
                out.add(doc, (*where, "default"), None, f"defaults break a constraint: {problem}")

    rules: list[Rule] = []
    rule_docs: dict[str, tuple[YamlDocument, tuple[Any, ...]]] = {}
    seen: dict[str, str] = {}
    used_params: set[str] = set()
    defaults = {name: p.default for name, p in parameters.items()}
    for doc in docs:
        meta = doc.data["pack"]
        for i, raw in enumerate(doc.data["rules"]):
            base = ("rules", i)
            rule_id = raw["id"]
            if rule_id in seen:
                out.add(doc, (*base, "id"), rule_id, f"rule id '{rule_id}' is already used in {seen[rule_id]}; ids are unique and never reused")
            seen[rule_id] = _display(doc.path)
            refs: set[str] = set()
            condition = _parse_condition(doc, (*base, "when"), raw["when"], rule_id, parameters, refs, out)
            for j, gid in enumerate(raw["guidance"]):
                if gid not in guidance:
                    out.add(doc, (*base, "guidance", j), rule_id, f"guidance id '{gid}' is not in the catalogue{nearest(gid, guidance)}")
            for j, item in enumerate(raw.get("rationale", [])):
                gid = item["guidance"]
                if gid not in guidance:
                    out.add(doc, (*base, "rationale", j, "guidance"), rule_id, f"guidance id '{gid}' is not in the catalogue{nearest(gid, guidance)}")
            _check_outputs(doc, base, raw, rule_id, parameters, refs, out)
            _check_safety_shape(doc, base, raw, rule_id, out)
            _check_plain_words(doc, base, raw, rule_id, out)
            supersedes, questions = _rule_relations(doc, base, raw, rule_id, condition, parameters, refs, out)
            used_params |= refs
            status = raw.get("status", "active")
            if status == "draft":
                out.add(doc, (*base, "status"), rule_id, "rule is still a draft: it runs, but has not been signed off", "warning")
            if condition is not None and not out.errors:
                possible = outcomes(condition, defaults)
                if possible == {False}:
                    out.add(doc, (*base, "when"), rule_id, "this condition can never hold: the rule can never fire", "warning")
                elif possible == {True}:
                    out.add(doc, (*base, "when"), rule_id, "this condition always holds: the rule fires for every patient", "warning")
            if status == "retired" or meta["status"] == "retired" or condition is None:
                continue
            line = doc.locate(base)
            rules.append(Rule(
                id=rule_id, title=raw["title"], status=status, category=raw["category"], indicator=raw["indicator"],
                urgency=raw["urgency"], priority=raw["priority"], guidance=tuple(raw["guidance"]),
                section=raw["source"]["section"], quote=raw["source"]["quote"],
                rationale=tuple(Rationale(r["guidance"], r["text"]) for r in raw.get("rationale", [])),
                when=condition, when_data=raw["when"], then=raw["then"], pack=meta["id"],
                where=Origin(_display(doc.path), line[0] if line else None), supersedes=supersedes, questions=questions))
            rule_docs[rule_id] = (doc, base)
    _check_supersedes(rules, rule_docs, set(seen), out)
    conflicts, scope = _rule_set_coherence(manifest, parameters, used_params, out)
    for name in parameters:
        if name not in used_params:
            doc, where = param_docs[name]
            out.add(doc, where, None, f"parameter '{name}' is declared but no rule uses it", "warning")
    if not out.errors:
        _engine_limit_problems(rules, defaults, out)
    if out.errors:
        return None
    if manifest is not None:
        rs = manifest.data["rule_set"]
        rs_id, rs_title, rs_version = rs["id"], rs["title"], rs["version"]
    else:
        rs_id, rs_title, rs_version = packs[0].id, packs[0].title, packs[0].version
    canonical = {
        "rule_set": manifest.data if manifest else None,
        "guidance": guidance_doc.data if guidance_doc else None,
        "packs": [doc.data for doc in docs],
    }
    from .result import canonical as canonical_json

    digest = hashlib.sha256(canonical_json(canonical).encode()).hexdigest()
    source_title = packs[0].metadata["source"]["title"]
    info = RuleSetInfo(rs_id, rs_title, rs_version, f"sha256:{digest}", source_title)
    stands_alone = tuple(manifest.data.get("stands_alone") or ()) if manifest is not None else ()
    return LoadedRules(info, root, tuple(packs), tuple(rules), parameters, guidance, conflicts=conflicts, scope=scope,
                       stands_alone=stands_alone)


def _check_parameter(doc: YamlDocument, where: tuple[Any, ...], name: str, spec: dict[str, Any],
                     guidance: dict[str, GuidanceItem], out: _Collector) -> None:
    kind = spec["type"]
    default = spec["default"]
    if not isinstance(default, PY_TYPES[kind]) or (kind in ("integer", "number") and isinstance(default, bool)):
        out.add(doc, (*where, "default"), None, f"parameter '{name}' is {kind} but its default is {default!r}")
        return
    problem = check_parameter_value(spec, default)
    if problem:
        out.add(doc, (*where, "default"), None, f"parameter '{name}': default {problem}")
    for j, gid in enumerate(spec.get("guidance", [])):
        if gid not in guidance:
            out.add(doc, (*where, "guidance", j), None, f"guidance id '{gid}' is not in the catalogue{nearest(gid, guidance)}")


def parameter_constraint_problem(parameters: dict[str, Parameter], values: dict[str, Any], name: str) -> str | None:
    """Why `name`'s value breaks its `at_most` constraint under these values, or None."""
    param = parameters[name]
    if param.at_most is None or param.at_most not in values:
        return None
    if values[name] > values[param.at_most]:
        return f"{name} ({values[name]}) may not exceed {param.at_most} ({values[param.at_most]})"
    return None


def check_parameter_value(spec: dict[str, Any] | Parameter, value: Any) -> str | None:
    """Why a value is out of a parameter's declared bounds, or None when it is allowed."""
    get = spec.get if isinstance(spec, dict) else (lambda k, d=None: getattr(spec, k, d))
    minimum, maximum, enum = get("minimum"), get("maximum"), get("enum")
    if minimum is not None and value < minimum:
        return f"{value!r} is below the minimum {minimum}"
    if maximum is not None and value > maximum:
        return f"{value!r} is above the maximum {maximum}"
    if enum is not None and value not in enum:
        return f"{value!r} is not one of {', '.join(map(str, enum))}"
    return None


def _parse_condition(doc: YamlDocument, path: tuple[Any, ...], node: Any, rule_id: str,
                     parameters: dict[str, Parameter], refs: set[str], out: _Collector) -> Condition | None:
    """Turn a `when` tree into a Condition, reporting every problem with its line."""
    if not isinstance(node, dict) or not node:
        out.add(doc, path, rule_id, "a condition must be a mapping: all / any / not, or field + operator")
        return None
    for combinator in ("all", "any"):
        if combinator in node:
            extra = [k for k in node if k != combinator]
            if extra:
                out.add(doc, (*path, extra[0]), rule_id, f"'{combinator}' stands alone in its mapping; found also '{extra[0]}' (wrap each in its own list item)")
                return None
            items = node[combinator]
            if not isinstance(items, list) or not items:
                out.add(doc, (*path, combinator), rule_id, f"'{combinator}' needs a non-empty list of conditions")
                return None
            children = [_parse_condition(doc, (*path, combinator, i), child, rule_id, parameters, refs, out)
                        for i, child in enumerate(items)]
            if any(c is None for c in children):
                return None
            return (All if combinator == "all" else AnyOf)(tuple(children))  # type: ignore[arg-type]
    if "not" in node:
        if len(node) != 1:
            out.add(doc, path, rule_id, "'not' stands alone in its mapping")
            return None
        child = _parse_condition(doc, (*path, "not"), node["not"], rule_id, parameters, refs, out)
        return None if child is None else Not(child)
    if "field" not in node:
        key = next(iter(node))
        out.add(doc, (*path, key), rule_id, f"unknown condition key '{key}'{nearest(str(key), ['all', 'any', 'not', 'field'])}; "
                "a condition is all / any / not, or field + one operator")
        return None
    from .conditions import OPERATORS

    ops = [k for k in node if k != "field"]
    unknown = [k for k in ops if k not in OPERATORS]
    if unknown:
        out.add(doc, (*path, unknown[0]), rule_id, f"unknown operator '{unknown[0]}'{nearest(str(unknown[0]), OPERATORS)} "
                f"(operators: {', '.join(OPERATORS)})")
        return None
    if len(ops) != 1:
        out.add(doc, path, rule_id, f"a field condition takes exactly one operator, found {len(ops)}: {', '.join(ops) or 'none'}")
        return None
    op = ops[0]
    name = node["field"]
    fields = patient_fields()
    if not isinstance(name, str) or name not in fields:
        out.add(doc, (*path, "field"), rule_id, f"'{name}' is not a patient field{nearest(str(name), fields)} "
                "(fields are defined by schemas/patient.schema.json)")
        return None
    fld = fields[name]
    operand = node[op]
    if isinstance(operand, dict):
        if set(operand) != {"param"} or not isinstance(operand["param"], str):
            out.add(doc, (*path, op), rule_id, "an operand is a literal or {param: NAME}")
            return None
        pname = operand["param"]
        if pname not in parameters:
            out.add(doc, (*path, op, "param"), rule_id, f"parameter '{pname}' is not declared{nearest(pname, parameters)}")
            return None
        refs.add(pname)
        operand = ParamRef(pname)
    problem = _operator_problem(fld, op, operand, parameters)
    if problem:
        out.add(doc, (*path, op), rule_id, problem)
        return None
    if op == "in":
        operand = tuple(operand)
    return Leaf(fld, op, operand)


def _operator_problem(fld: Field, op: str, operand: Any, parameters: dict[str, Parameter]) -> str | None:
    if isinstance(operand, ParamRef):
        ptype = parameters[operand.name].type
        if op in ("gte", "gt", "lte", "lt") and ptype not in ("integer", "number"):
            return f"'{op}' needs a number, but parameter '{operand.name}' is {ptype}"
        if op == "equals" and fld.kind == "integer" and ptype not in ("integer", "number"):
            return f"{fld.path} is a number, but parameter '{operand.name}' is {ptype}"
        if op == "equals" and fld.kind != "integer":
            return "compare enum fields with literal values, not parameters"
        if op in ("is", "in"):
            return f"'{op}' takes a literal, not a parameter"
    if op == "is":
        allowed: list[Any] = [True, False, "unknown", "known"] if fld.kind == "tristate" else ["unknown", "known"]
        if not any(operand is a or (isinstance(a, str) and operand == a) for a in allowed):
            shown = ", ".join(str(a).lower() for a in allowed)
            return f"{fld.path} is {fld.kind}: 'is' takes {shown}, found {operand!r}"
        return None
    if fld.kind == "tristate":
        return f"{fld.path} is a yes/no question: use 'is: true', 'is: false' or 'is: unknown', not '{op}'"
    if fld.kind == "enum":
        if op not in ("equals", "in"):
            return f"{fld.path} takes one of {', '.join(fld.values)}: use 'equals', 'in' or 'is: unknown', not '{op}'"
        values = operand if op == "in" else [operand]
        if not isinstance(values, list):
            return "'in' takes a list of values"
        for v in values:
            if v not in fld.values:
                return f"{v!r} is not a value of {fld.path} (values: {', '.join(fld.values)}){nearest(str(v), fld.values)}"
        return None
    # integer
    if op == "in":
        return f"{fld.path} is a number: use gte / gt / lte / lt / equals"
    if not isinstance(operand, ParamRef) and (isinstance(operand, bool) or not isinstance(operand, (int, float))):
        return f"{fld.path} is a number: compare it with a number, found {operand!r}"
    return None


def _check_safety_shape(doc: YamlDocument, base: tuple[Any, ...], raw: dict[str, Any], rule_id: str,
                        out: _Collector) -> None:
    """Shapes that would hide or dilute a safety message are errors, not style.

    An emergency rule is critical and asks for emergency care; exercise advice (`exercise`,
    `plan`) lives only in the categories the engine withholds while a red flag is present or
    unanswered, so it can never ride along on, or suppress, an emergency or screening card.
    """
    category = raw["category"]
    if category == "emergency":
        if raw["indicator"] != "critical":
            out.add(doc, (*base, "indicator"), rule_id, f"an emergency rule must be indicator critical, not {raw['indicator']}")
        if raw["urgency"] != "emergency":
            out.add(doc, (*base, "urgency"), rule_id, f"an emergency rule must ask for urgency emergency, not {raw['urgency']}")
    for output in ("exercise", "plan"):
        if output in raw["then"] and category not in GATED_CATEGORIES:
            out.add(doc, (*base, "then", output), rule_id,
                    f"'{output}' outputs belong to {' or '.join(GATED_CATEGORIES)} rules (withheld while screening is "
                    f"not negative); this rule is category {category}")


def _check_outputs(doc: YamlDocument, base: tuple[Any, ...], raw: dict[str, Any], rule_id: str,
                   parameters: dict[str, Parameter], refs: set[str], out: _Collector) -> None:
    then = raw["then"]
    texts: list[tuple[tuple[Any, ...], str]] = []
    for section, keys in (("card", ("summary", "detail")), ("finding", ("text",)), ("plan", ("note",)),
                          ("referral", ("reason", "within")), ("exercise", ("instructions",))):
        for key in keys:
            if section in then and key in then[section]:
                texts.append(((*base, "then", section, key), then[section][key]))
    for where, text in texts:
        for match in TEMPLATE_ANY.finditer(text):
            m = PLACEHOLDER.fullmatch(match.group(0))
            if not m:
                out.add(doc, where, rule_id, f"'{match.group(0)}' is not a valid placeholder; write {{{{ params.NAME }}}}")
            elif m.group(1) not in parameters:
                out.add(doc, where, rule_id, f"placeholder names undeclared parameter '{m.group(1)}'{nearest(m.group(1), parameters)}")
            else:
                refs.add(m.group(1))
    weeks = (then.get("referral") or {}).get("weeks")
    if isinstance(weeks, dict):
        pname = weeks["param"]
        if pname not in parameters:
            out.add(doc, (*base, "then", "referral", "weeks", "param"), rule_id,
                    f"parameter '{pname}' is not declared{nearest(pname, parameters)}")
        elif parameters[pname].type != "integer":
            out.add(doc, (*base, "then", "referral", "weeks"), rule_id, f"parameter '{pname}' must be an integer")
        else:
            refs.add(pname)
    exercise = then.get("exercise")
    if exercise:
        for rng in ("sets", "reps"):
            bounds = {}
            for end in ("min", "max"):
                value = exercise[rng][end]
                if isinstance(value, dict):
                    pname = value["param"]
                    if pname not in parameters:
                        out.add(doc, (*base, "then", "exercise", rng, end, "param"), rule_id,
                                f"parameter '{pname}' is not declared{nearest(pname, parameters)}")
                        continue
                    if parameters[pname].type != "integer":
                        out.add(doc, (*base, "then", "exercise", rng, end), rule_id, f"parameter '{pname}' must be an integer")
                        continue
                    refs.add(pname)
                    value = parameters[pname].default
                bounds[end] = value
            if len(bounds) == 2 and bounds["min"] > bounds["max"]:
                out.add(doc, (*base, "then", "exercise", rng), rule_id, f"{rng}: min {bounds['min']} is above max {bounds['max']}")


# ---------------------------------------------------------------- clinical coherence (issue 17)

PLAIN_WORDS_BANNED = ("source says", "this rule", "fires", "policy")
"""Internal words that must not reach a person or clinician: the why lives in `source`, the rulebook and --explain."""


def _check_plain_words(doc: YamlDocument, base: tuple[Any, ...], raw: dict[str, Any], rule_id: str,
                       out: _Collector) -> None:
    """Card, plan, referral and finding texts speak to people: no "source says", "this rule", "fires", "policy".

    A warning (`cdss validate --strict` fails on it); tests/test_safety_properties.py holds the bundled rules to it."""
    then = raw["then"]
    for section, keys in (("card", ("summary", "detail")), ("plan", ("note",)), ("referral", ("reason", "within")),
                          ("finding", ("text",))):
        for key in keys:
            text = then.get(section, {}).get(key)
            if not isinstance(text, str):
                continue
            lowered = text.lower()
            for word in PLAIN_WORDS_BANNED:
                if word in lowered:
                    out.add(doc, (*base, "then", section, key), rule_id,
                            f"{section}.{key} contains '{word}': texts shown to people speak plainly; put the why "
                            "(source, policy, how a rule decides) in `source`, `rationale` or the file's comments",
                            "warning")  # a warning so rule sets written before issue 17 still load (cdss diff)


def _rule_relations(doc: YamlDocument, base: tuple[Any, ...], raw: dict[str, Any], rule_id: str,
                    condition: Condition | None, parameters: dict[str, Parameter], refs: set[str],
                    out: _Collector) -> tuple[tuple[str, ...], tuple[Question, ...]]:
    """`supersedes` and `questions` of one rule; a question must name a field the rule's condition reads."""
    supersedes = tuple(raw.get("supersedes", ()))
    for j, other in enumerate(supersedes):
        if other == rule_id:
            out.add(doc, (*base, "supersedes", j), rule_id, "a rule cannot supersede itself")
    if len(set(supersedes)) != len(supersedes):
        out.add(doc, (*base, "supersedes"), rule_id, "supersedes lists a rule twice")
    referral = raw["then"].get("referral") or {}
    if referral.get("timeframe") == "soon":
        out.add(doc, (*base, "then", "referral", "timeframe"), rule_id,
                "timeframe soon says nothing concrete: write `timeframe: within-weeks` with `weeks: {param: NAME}` "
                "and `within` (e.g. \"within {{ params.NAME }} weeks\")", "warning")
    if (referral.get("timeframe") == "within-weeks") != ("weeks" in referral):
        out.add(doc, (*base, "then", "referral"), rule_id,
                "timeframe within-weeks and `weeks` go together: give both (the deadline in weeks) or neither")
    questions = []
    read = {leaf.field.path for leaf in _leaves(condition)} if condition is not None else set()
    fields = patient_fields()
    for j, item in enumerate(raw.get("questions", ())):
        name = item["field"]
        if name not in fields:
            out.add(doc, (*base, "questions", j, "field"), rule_id, f"'{name}' is not a patient field{nearest(name, fields)}")
        elif condition is not None and name not in read:
            out.add(doc, (*base, "questions", j, "field"), rule_id,
                    f"question on '{name}', which this rule's condition does not read (it reads: {', '.join(sorted(read))}); "
                    "an answer to it could never make the rule fire")
        for match in TEMPLATE_ANY.finditer(item["reason"]):
            m = PLACEHOLDER.fullmatch(match.group(0))
            if not m or m.group(1) not in parameters:
                out.add(doc, (*base, "questions", j, "reason"), rule_id,
                        f"'{match.group(0)}' is not a placeholder of a declared parameter; write {{{{ params.NAME }}}}")
            else:
                refs.add(m.group(1))
        questions.append(Question(name, item["reason"]))
    if len({q.field for q in questions}) != len(questions):
        out.add(doc, (*base, "questions"), rule_id, "questions names a field twice")
    return supersedes, tuple(questions)


def _leaves(condition: Condition) -> list[Leaf]:
    from .conditions import leaves

    return leaves(condition)


def _check_supersedes(rules: list[Rule], rule_docs: dict[str, tuple[YamlDocument, tuple[Any, ...]]],
                      declared: set[str], out: _Collector) -> None:
    """Every superseded id names an active rule, and no chain of `supersedes` comes back to where it started."""
    active = {rule.id: rule for rule in rules}
    for rule in rules:
        doc, base = rule_docs[rule.id]
        for j, other in enumerate(rule.supersedes):
            if other == rule.id:
                continue
            if other in declared and other not in active:  # retiring a rule must not break the rules that outrank it
                out.add(doc, (*base, "supersedes", j), rule.id, f"supersedes '{other}', which is retired: no effect",
                        "warning")
            elif other not in active:
                out.add(doc, (*base, "supersedes", j), rule.id,
                        f"supersedes '{other}', which is not a rule of this rule set{nearest(other, active)}")
    # cycles: depth-first search over the active relation, each cycle reported once at its first rule
    state: dict[str, int] = {}
    reported: set[frozenset[str]] = set()

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for nxt in active[node].supersedes:
            if nxt not in active or nxt == node:
                continue
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    doc, base = rule_docs[nxt]
                    out.add(doc, (*base, "supersedes"), nxt,
                            f"supersedes forms a cycle: {' -> '.join(cycle)}; a rule can only give way to a heavier one")
            elif nxt not in state:
                visit(nxt, path)
        path.pop()
        state[node] = 2

    for rule in rules:
        if rule.id not in state:
            visit(rule.id, [])


def _rule_set_coherence(manifest: YamlDocument | None, parameters: dict[str, Parameter], refs: set[str],
                        out: _Collector) -> tuple[tuple[Conflict, ...], Scope]:
    """The manifest's `conflicts:` (contradictory answers, read as unknown) and `scope:` (what is not covered)."""
    if manifest is None:
        return (), NO_SCOPE
    data = manifest.data
    scope = NO_SCOPE
    if "scope" in data:
        scope = Scope(data["scope"]["statement"].strip(), tuple(item.strip() for item in data["scope"]["not_covered"]))
    conflicts: list[Conflict] = []
    ids: set[str] = set()
    for i, item in enumerate(data.get("conflicts") or ()):
        where = ("conflicts", i)
        if item["id"] in ids:
            out.add(manifest, (*where, "id"), None, f"conflict id '{item['id']}' appears twice")
        ids.add(item["id"])
        condition = _parse_condition(manifest, (*where, "when"), item["when"], item["id"], parameters, refs, out)
        fields = patient_fields()
        for j, name in enumerate(item["fields"]):
            if name not in fields:
                out.add(manifest, (*where, "fields", j), item["id"], f"'{name}' is not a patient field{nearest(name, fields)}")
            elif name.startswith("red_flags."):
                out.add(manifest, (*where, "fields", j), item["id"],
                        "a red-flag answer is never discarded as contradictory: a yes must always reach the emergency rules")
        if condition is not None:
            read = {leaf.field.path for leaf in _leaves(condition)}
            stray = [name for name in item["fields"] if name not in read]
            if stray:
                out.add(manifest, (*where, "fields"), item["id"],
                        f"conflict fields {stray} are not read by its `when`; list the contradicting answers it tests")
            line = manifest.locate(where)
            conflicts.append(Conflict(item["id"], tuple(item["fields"]), item["message"].strip(), condition, item["when"],
                                      Origin(_display(manifest.path), line[0] if line else None)))
    return tuple(conflicts), scope


# ---------------------------------------------------------------- reliability checks (issue 16)


def _engine_limit_problems(rules: list[Rule], values: dict[str, Any], out: _Collector) -> None:
    """Refuse what durable-rules could not run: the engine's fixed limits, named, at the rule's line."""
    from .compiler import limit_problems

    for rule, message in limit_problems(rules, values):
        where = rule.where if rule is not None else None
        out.problems.append(Problem(where.file if where else "rules", where.line if where else None, None,
                                    rule.id if rule is not None else None, f"engine limit: {message}"))


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _strict_text_problems(doc: YamlDocument, out: _Collector) -> None:
    """NUL, control characters, lone surrogates and non-finite numbers in a rule file are errors.

    They cannot be shown safely in a terminal, an HTML page or a CDS Hooks card, and .inf /
    .nan compare with nothing the way an author means. Tabs and newlines stay allowed.
    """
    def walk(node: Any, path: tuple[Any, ...]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and _CONTROL.search(key):
                    out.add(doc, path, _rule_id(doc, path), f"a key holds a control character "
                            f"({_control_shown(key)}); remove it")
                walk(value, (*path, key))
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, (*path, i))
        elif isinstance(node, str):
            bad = _CONTROL.search(node)
            if bad:
                out.add(doc, path, _rule_id(doc, path), f"text holds the control character {_control_shown(bad.group())} "
                        "(NUL, escape and other control characters are not allowed in rule files); remove it")
        elif isinstance(node, float) and not math.isfinite(node):
            out.add(doc, path, _rule_id(doc, path), f"{node!r} is not a usable number: write a finite number")

    walk(doc.data, ())


def _control_shown(text: str) -> str:
    bad = _CONTROL.search(text)
    char = bad.group() if bad else text
    return f"U+{ord(char):04X}"


def _pattern_fullmatch(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    """JSON Schema `pattern`, but `$` means the end of the text (Python's `$` also matches before a final newline)."""
    if not validator.is_type(instance, "string"):
        return
    strict = pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith("\\$") else pattern
    if not re.search(strict, instance):
        import jsonschema

        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _strict_validator_class() -> Any:
    """Draft 2020-12 with `pattern` anchored at the very end of the text (ids match in full)."""
    import jsonschema

    return jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _pattern_fullmatch})


def _not_a_plain_file(root: Path, candidate: Path, out: _Collector, manifest: YamlDocument | None,
                      where: tuple[Any, ...] = ()) -> bool:
    """A listed pack or guidance.yaml that exists but is not a regular file inside the rule-set
    directory is an error: a FIFO would block or be skipped silently, and a symlink to a file
    elsewhere would have the loader quote that file's lines in its messages."""
    if not os.path.lexists(candidate):
        return False
    message = None
    if candidate.exists() and not candidate.is_file():
        message = f"'{candidate.name}' is not a regular file (a directory, FIFO or device); a rule set reads files only"
    else:
        try:
            candidate.resolve(strict=True).relative_to(root.resolve(strict=True))
        except ValueError:
            message = f"'{candidate.name}' points outside the rule-set directory; copy the file into it instead"
        except OSError:
            return False  # a dangling link: reported as a missing file
    if message is None:
        return False
    if manifest is not None:
        out.add(manifest, where, None, message)
    else:
        out.add(candidate, None, None, message)
    return True
