"""A loaded, checked rule set as plain JSON data, and back: what the CLI's rule-set cache stores.

Data only, never code or pickles: every value is rebuilt through the same record types the
loader builds (fields are looked up in the patient-field catalogue, never trusted), and
anything unexpected raises, so a damaged snapshot is a cache miss. `dump` refuses (returns
None) a rule set whose snapshot would not read back equal, e.g. YAML keys that are not text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .conditions import All, AnyOf, Condition, Leaf, Not, ParamRef
from .errors import Problem
from .evidence import SourceDocument
from .fields import patient_fields
from .model import Conflict, GuidanceItem, Origin, Pack, Parameter, Question, Rationale, Rule, RuleSetInfo, Scope

VERSION = 3  # 2: issue 17 (rule relations and questions, rule-set conflicts and scope); 3: stands_alone


def dump(loaded: Any) -> str | None:
    """The JSON text of a LoadedRules, or None when it would not read back exactly."""
    data = {
        "snapshot": VERSION,
        "info": _record(loaded.info),
        "packs": [[p.id, p.title, p.version, p.status, p.metadata, _origin(p.where)] for p in loaded.packs],
        "rules": [_rule(r) for r in loaded.rules],
        "parameters": [_parameter(p) for p in loaded.parameters.values()],
        "guidance": [[g.id, g.kind, g.text, g.theme] for g in loaded.guidance.values()],
        "warnings": [[w.file, w.line, w.column, w.rule_id, w.message, w.severity] for w in loaded.warnings],
        "sources": [[d.id, d.title, str(d.path), d.text] for d in loaded.sources],
        "inventory": str(loaded.inventory) if loaded.inventory is not None else None,
        "conflicts": [[c.id, list(c.fields), c.message, _condition(c.when), c.when_data, _origin(c.where)]
                      for c in loaded.conflicts],
        "scope": [loaded.scope.statement, list(loaded.scope.not_covered)],
        "stands_alone": list(loaded.stands_alone),
    }
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=True, separators=(",", ":"))
        if load(text, loaded.root) != loaded:
            return None
    except (TypeError, ValueError, KeyError, RecursionError):
        return None
    return text


def load(text: str, root: Path) -> Any:
    """A LoadedRules from `dump`'s text; raises (ValueError, KeyError, TypeError, ...) on anything unexpected."""
    from .loader import LoadedRules

    data = json.loads(text)
    if not isinstance(data, dict) or data.get("snapshot") != VERSION:
        raise ValueError("not a rule-set snapshot of this version")
    info = RuleSetInfo(*_strings(data["info"], 5))
    packs = tuple(Pack(*_strings(p[:4], 4), _dict(p[4]), _read_origin(p[5])) for p in _list(data["packs"]))
    rules = tuple(_read_rule(r) for r in _list(data["rules"]))
    parameters = {p.name: p for p in (_read_parameter(p) for p in _list(data["parameters"]))}
    guidance = {g.id: g for g in (GuidanceItem(*_strings(g, 4)) for g in _list(data["guidance"]))}
    warnings = tuple(Problem(_str(w[0]), _opt_int(w[1]), _opt_int(w[2]), _opt_str(w[3]), _str(w[4]), _severity(w[5]))
                     for w in _list(data["warnings"]))
    sources = tuple(SourceDocument(*_strings(d[:2], 2), Path(_str(d[2])), _str(d[3])) for d in _list(data["sources"]))
    inventory = Path(_str(data["inventory"])) if data["inventory"] is not None else None
    conflicts = tuple(Conflict(_str(c[0]), tuple(_str(f) for f in _list(c[1])), _str(c[2]), _read_condition(c[3], 0),
                               c[4], _read_origin(c[5])) for c in _list(data["conflicts"]))
    statement, not_covered = _list(data["scope"])
    scope = Scope(_str(statement), tuple(_str(item) for item in _list(not_covered)))
    return LoadedRules(info, root, packs, rules, parameters, guidance, warnings, sources, inventory,
                       conflicts=conflicts, scope=scope,
                       stands_alone=tuple(_str(u) for u in _list(data["stands_alone"])))


# ---------------------------------------------------------------- writing


def _record(info: RuleSetInfo) -> list[str]:
    return [info.id, info.title, info.version, info.digest, info.source_title]


def _origin(origin: Origin) -> list[Any]:
    return [origin.file, origin.line]


def _rule(rule: Rule) -> list[Any]:
    return [rule.id, rule.title, rule.status, rule.category, rule.indicator, rule.urgency, rule.priority,
            list(rule.guidance), rule.section, rule.quote, [[r.guidance, r.text] for r in rule.rationale],
            _condition(rule.when), rule.when_data, rule.then, rule.pack, _origin(rule.where),
            list(rule.supersedes), [[q.field, q.reason] for q in rule.questions]]


def _condition(node: Condition) -> list[Any]:
    if isinstance(node, Leaf):
        operand = node.operand
        if isinstance(operand, ParamRef):
            written: Any = {"param": operand.name}
        elif isinstance(operand, tuple):
            written = {"in": list(operand)}
        else:
            written = {"value": operand}
        return ["leaf", node.field.path, node.op, written]
    if isinstance(node, Not):
        return ["not", _condition(node.child)]
    return ["all" if isinstance(node, All) else "any", [_condition(child) for child in node.children]]


def _parameter(p: Parameter) -> list[Any]:
    return [p.name, p.type, p.default, p.description, p.origin, p.unit, p.minimum, p.maximum,
            list(p.enum) if p.enum is not None else None, list(p.guidance), p.pack, _origin(p.where), p.at_most]


# ---------------------------------------------------------------- reading, strictly


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("expected a list")
    return value


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError("expected an object")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected text")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _opt_int(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("expected an integer")
    return value


def _strings(values: Any, count: int) -> list[str]:
    values = _list(values)
    if len(values) != count:
        raise ValueError(f"expected {count} values")
    return [_str(v) for v in values]


def _severity(value: Any) -> Any:
    if value not in ("error", "warning"):
        raise ValueError("bad severity")
    return value


def _read_origin(value: Any) -> Origin:
    file, line = _list(value)
    return Origin(_str(file), _opt_int(line))


def _read_rule(value: Any) -> Rule:
    (rule_id, title, status, category, indicator, urgency, priority, guidance, section, quote, rationale, when,
     when_data, then, pack, where, supersedes, questions) = _list(value)
    return Rule(id=_str(rule_id), title=_str(title), status=_str(status), category=_str(category),
                indicator=_str(indicator), urgency=_str(urgency), priority=_opt_int(priority),  # type: ignore[arg-type]
                guidance=tuple(_str(g) for g in _list(guidance)), section=_str(section), quote=_str(quote),
                rationale=tuple(Rationale(*_strings(r, 2)) for r in _list(rationale)),
                when=_read_condition(when, 0), when_data=when_data, then=_dict(then), pack=_str(pack),
                where=_read_origin(where), supersedes=tuple(_str(r) for r in _list(supersedes)),
                questions=tuple(Question(*_strings(q, 2)) for q in _list(questions)))


def _read_condition(value: Any, depth: int) -> Condition:
    if depth > 200:
        raise ValueError("condition nested too deeply")
    kind, *rest = _list(value)
    if kind == "leaf":
        path, op, written = rest
        field = patient_fields()[_str(path)]
        written = _dict(written)
        if set(written) == {"param"}:
            operand: Any = ParamRef(_str(written["param"]))
        elif set(written) == {"in"}:
            operand = tuple(_list(written["in"]))
        elif set(written) == {"value"}:
            operand = written["value"]
        else:
            raise ValueError("bad operand")
        return Leaf(field, _str(op), operand)
    if kind == "not":
        (child,) = rest
        return Not(_read_condition(child, depth + 1))
    if kind in ("all", "any"):
        (children,) = rest
        nodes = tuple(_read_condition(child, depth + 1) for child in _list(children))
        return All(nodes) if kind == "all" else AnyOf(nodes)
    raise ValueError(f"unknown condition node {kind!r}")


def _read_parameter(value: Any) -> Parameter:
    (name, kind, default, description, origin, unit, minimum, maximum, enum, guidance, pack, where,
     at_most) = _list(value)
    return Parameter(name=_str(name), type=_str(kind), default=default, description=_str(description),
                     origin=_str(origin), unit=_opt_str(unit), minimum=minimum, maximum=maximum,
                     enum=tuple(_list(enum)) if enum is not None else None,
                     guidance=tuple(_str(g) for g in _list(guidance)), pack=_str(pack), where=_read_origin(where),
                     at_most=_opt_str(at_most))
