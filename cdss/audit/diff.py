"""What changed in meaning between two versions of a rule set, for the re-sign-off of the new one.

A reviewer who signed off version 1.0.0 needs to read only what differs: rules added, retired
or changed (condition in plain English before and after, outputs, urgency, quotes), parameters
and defaults, the guidance catalogue and the sources. Each change says which semver bump it
needs, and the diff says whether the version number moved that far: a changed condition or
urgency shipped without a version bump would let results of different meaning carry the same
version, so it is an error.

Semver policy for a rule set (docs/RULE-LANGUAGE.md, "Versions"):
- major: a rule retired or removed; a rule's condition, urgency, indicator, category or
  priority changed; a parameter removed, its default or bounds changed; a pack removed;
- minor: a rule or parameter added; a rule's outputs, quote, section, guidance ids or other
  keys of a rule, pack or the manifest (e.g. relations between rules) changed; the guidance
  catalogue changed;
- patch: wording only (titles, rationale, parameter descriptions), pack metadata (reviewer,
  status, dates) and the evidence files
  (sources declared or their text changed: quotes are re-verified, results do not change).
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .build import describe_condition, describe_outputs

if TYPE_CHECKING:
    from ..loader import LoadedRules
    from ..model import Rule

BUMPS = ("none", "patch", "minor", "major")
SEMVER = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:-([0-9A-Za-z.-]+))?$")
FORMATS = ("markdown", "html")

# rule keys compared one by one (everything else a rule holds is compared as "other")
_MAJOR_KEYS = ("urgency", "indicator", "category", "priority")
_HANDLED = {"id", "title", "status", "when", "then", "source", "guidance", "rationale", *_MAJOR_KEYS}


class RevisionError(Exception):
    """OLD or NEW is neither a rule-set directory nor a git revision holding one."""


@dataclass(frozen=True)
class Change:
    """One difference in meaning. `before`/`after` are plain-text lines (empty: absent)."""

    kind: str  # rule-added, rule-retired, rule-removed, condition, urgency, outputs, quote, parameter-default...
    subject: str  # the rule id, parameter name, guidance id, pack id or source
    bump: str  # the semver bump this change needs: major, minor or patch
    summary: str
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    where: str = ""  # file:line in the new rule set (the old one for a removal)


@dataclass(frozen=True)
class Side:
    """One of the two rule sets compared."""

    label: str  # what the user named: a directory or a git revision
    id: str
    version: str
    digest: str


@dataclass
class RuleSetDiff:
    """The changes between OLD and NEW and the verdict on the version number."""

    old: Side
    new: Side
    changes: list[Change] = field(default_factory=list)

    @property
    def required(self) -> str:
        """The bump the changes need: the largest of theirs ('none' without changes)."""
        return max((c.bump for c in self.changes), key=BUMPS.index, default="none")

    @property
    def actual(self) -> str:
        """How the version moved: none, patch, minor, major, or 'backwards' / 'invalid'."""
        return version_bump(self.old.version, self.new.version)

    @property
    def ok(self) -> bool:
        actual = self.actual
        if actual in ("backwards", "invalid"):
            return False
        return BUMPS.index(actual) >= BUMPS.index(self.required)

    @property
    def verdict(self) -> str:
        """One sentence: whether the version moved as semver says, and if not, what is needed."""
        old, new, required, actual = self.old.version, self.new.version, self.required, self.actual
        if actual == "invalid":
            return f"version {old} → {new}: not semantic versions (MAJOR.MINOR.PATCH)"
        if actual == "backwards":
            return f"version {old} → {new} goes backwards: the new version must be greater than {old}"
        if not self.changes:
            moved = "unchanged" if actual == "none" else f"a {actual} bump"
            return f"no change in meaning; version {old} → {new} ({moved})"
        if self.ok:
            return f"version {old} → {new} is a {actual} bump; the changes need at least {required}: ok"
        moved = "not bumped" if actual == "none" else f"only a {actual} bump"
        return (f"version {old} → {new} is {moved}, but the changes need a {required} bump: "
                f"set version: {next_version(old, required)} in ruleset.yaml")

    def count(self, bump: str) -> int:
        return sum(c.bump == bump for c in self.changes)


# ---------------------------------------------------------------- versions


def _parse(version: str) -> tuple[int, int, int] | None:
    m = SEMVER.match(version)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def version_bump(old: str, new: str) -> str:
    """The semver bump from old to new: none, patch, minor, major; backwards or invalid otherwise."""
    a, b = _parse(old), _parse(new)
    if a is None or b is None:
        return "invalid"
    if b < a:
        return "backwards"
    if b == a:
        return "none" if old == new else "patch"  # a changed pre-release tag counts as a patch
    if b[0] > a[0]:
        return "major"
    if b[1] > a[1]:
        return "minor"
    return "patch"


def next_version(old: str, bump: str) -> str:
    """The smallest version after `old` that is a `bump` bump."""
    parsed = _parse(old)
    if parsed is None:
        return "1.0.0"
    major, minor, patch = parsed
    if bump == "major":
        return f"{major + 1}.0.0"
    if bump == "minor":
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


# ---------------------------------------------------------------- OLD / NEW from a directory or git


def materialize(spec: str, workdir: Path, *, default_path: str = "rules", cwd: Path | None = None) -> Path:
    """The rule-set directory `spec` names: an existing directory as is; otherwise a git revision
    (`HEAD~3`, or `HEAD~3:path/to/rules`, path from the repository root, default `default_path`)
    exported with `git archive` into `workdir`. Raises RevisionError when it is neither."""
    if Path(spec).is_dir():
        return Path(spec)
    revision, _, inner = spec.partition(":")
    inner = (inner or default_path).strip("/") or "."
    here = str(cwd or Path.cwd())

    def git(*args: str) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(["git", "-C", here, *args], capture_output=True, check=False, timeout=120)
        except FileNotFoundError:
            raise RevisionError(f"'{spec}' is not a directory, and git is not installed to read it as a revision") from None

    top = git("rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise RevisionError(f"'{spec}' is not a directory, and {here} is not inside a git repository to read it as a revision")
    if not revision or git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}").returncode != 0:
        raise RevisionError(f"'{spec}' is neither a directory nor a git revision (e.g. HEAD~1, v1.0.0, HEAD~3:rules)")
    root = top.stdout.decode().strip()
    archive = subprocess.run(["git", "-C", root, "archive", "--format=tar", revision, "--", inner],
                             capture_output=True, check=False, timeout=120)
    if archive.returncode != 0:
        raise RevisionError(f"revision {revision} has no '{inner}' ({archive.stderr.decode(errors='replace').strip()[:200]})")
    target = workdir / re.sub(r"[^A-Za-z0-9_.-]+", "_", revision)
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")  # no absolute paths, no links out, no devices
    found = target / inner
    if not found.is_dir():
        raise RevisionError(f"revision {revision}: '{inner}' is not a directory")
    return found


# ---------------------------------------------------------------- comparing


def diff(old: LoadedRules, new: LoadedRules, *, old_label: str = "OLD", new_label: str = "NEW") -> RuleSetDiff:
    """Every change in meaning from `old` to `new`, most serious first within each kind of subject."""
    result = RuleSetDiff(Side(old_label, old.info.id, old.info.version, old.info.digest),
                         Side(new_label, new.info.id, new.info.version, new.info.digest))
    out = result.changes
    old_raw, new_raw = _raw_rules(old), _raw_rules(new)
    old_rules = {r.id: r for r in old.rules}
    new_rules = {r.id: r for r in new.rules}
    old_params, new_params = _param_values(old), _param_values(new)

    if old.info.id != new.info.id:
        out.append(Change("rule-set-id", new.info.id, "major", f"the rule set id changed from '{old.info.id}' to '{new.info.id}'",
                          (old.info.id,), (new.info.id,)))
    old_packs, new_packs = {p.id: p for p in old.packs}, {p.id: p for p in new.packs}
    for pid in sorted(old_packs.keys() - new_packs.keys()):
        out.append(Change("pack-removed", pid, "major", f"pack '{pid}' was removed", (old_packs[pid].title,), (),
                          _short(old_packs[pid].where.file)))
    for pid in sorted(new_packs.keys() - old_packs.keys()):
        out.append(Change("pack-added", pid, "minor", f"pack '{pid}' was added", (), (new_packs[pid].title,),
                          _short(new_packs[pid].where.file)))

    for rid, rule in old_rules.items():
        if rid in new_rules:
            continue
        retired = new_raw.get(rid, {}).get("status") == "retired"
        out.append(Change("rule-retired" if retired else "rule-removed", rid, "major",
                          f"rule '{rid}' was {'retired' if retired else 'removed'}: it no longer fires",
                          _rule_lines(rule, old_params, old), (), _where(new.rules, rid) if retired else _at(rule)))
    for rid, rule in new_rules.items():
        if rid not in old_rules:
            out.append(Change("rule-added", rid, "minor", f"rule '{rid}' was added ({rule.urgency}, {rule.indicator})",
                              (), _rule_lines(rule, new_params, new), _at(rule)))
    for rid in (r for r in new_rules if r in old_rules):
        out += _rule_changes(old_rules[rid], new_rules[rid], old_raw.get(rid, {}), new_raw.get(rid, {}),
                             old, new, old_params, new_params)

    out += _parameter_changes(old, new)
    out += _structure_changes(old, new)
    out += _guidance_changes(old, new)
    out += _source_changes(old, new)
    return result


def _at(rule: Rule) -> str:
    """`rules/pack.yaml:LINE`: the file relative to its rule-set directory's parent (no temporary paths)."""
    return _short(rule.where.file) + (f":{rule.where.line}" if rule.where.line else "")


def _short(file: str) -> str:
    """A rule file's path from the directory holding its rule set (`rules/escalation.yaml`)."""
    path = Path(file).resolve()
    for parent in path.parents:
        if (parent / "ruleset.yaml").is_file():
            return str(path.relative_to(parent.parent))
    return file


def _where(rules: Iterable[Rule], rid: str) -> str:
    return next((_at(r) for r in rules if r.id == rid), "")


def _param_values(loaded: LoadedRules) -> dict[str, Any]:
    return {name: p.default for name, p in loaded.parameters.items()}


def _units(loaded: LoadedRules) -> dict[str, str | None]:
    return {name: p.unit for name, p in loaded.parameters.items()}


def _condition_lines(rule: Rule, params: dict[str, Any], loaded: LoadedRules) -> tuple[str, ...]:
    return tuple(describe_condition(rule.when, params, _units(loaded)).lines())


def _output_lines(rule: Rule, params: dict[str, Any]) -> tuple[str, ...]:
    lines: list[str] = []
    for output in describe_outputs(rule, params):
        lines.append(f"{output.kind}:")
        lines += [f"  {label}: {' '.join(str(text).split())}" for label, text in output.items]
    return tuple(lines)


def _rule_lines(rule: Rule, params: dict[str, Any], loaded: LoadedRules) -> tuple[str, ...]:
    return (f"{rule.title} ({rule.category}, urgency {rule.urgency}, indicator {rule.indicator})", "when:",
            *("  " + line for line in _condition_lines(rule, params, loaded)), "then:",
            *("  " + line for line in _output_lines(rule, params)))


def _raw_rules(loaded: LoadedRules) -> dict[str, dict[str, Any]]:
    """Every rule of every pack as written (retired ones included), by id: for keys the loader
    does not model (relations...) and for the status of rules it drops."""
    out: dict[str, dict[str, Any]] = {}
    for data in _raw_packs(loaded).values():
        for raw in data.get("rules") or ():
            if isinstance(raw, dict) and isinstance(raw.get("id"), str):
                out[raw["id"]] = raw
    return out


def _raw_packs(loaded: LoadedRules) -> dict[str, dict[str, Any]]:
    """Every loaded pack file as written, by pack id."""
    from ..yaml_source import YamlProblem, load_yaml

    out: dict[str, dict[str, Any]] = {}
    for pack in loaded.packs:
        path = Path(pack.where.file)
        for candidate in (path, loaded.root / path.name, loaded.root.parent / path.name):
            if candidate.is_file():
                try:
                    data = load_yaml(candidate).data
                except (YamlProblem, OSError):
                    break
                if isinstance(data, dict):
                    out[pack.id] = data
                break
    return out


def _raw_manifest(loaded: LoadedRules) -> dict[str, Any]:
    from ..loader import MANIFEST
    from ..yaml_source import YamlProblem, load_yaml

    path = loaded.root / MANIFEST if loaded.root.is_dir() else loaded.root.parent / MANIFEST
    try:
        data = load_yaml(path).data if path.is_file() else {}
    except (YamlProblem, OSError):
        return {}
    if not isinstance(data, dict):
        return {}
    spec = data.get("rule_set")
    out = dict(spec) if isinstance(spec, dict) else {}
    # rule-set data declared beside `rule_set:` (scope, conflicts, stands_alone) changes meaning too
    out.update({key: value for key, value in data.items() if key != "rule_set" and key not in out})
    return out


_MANIFEST_HANDLED = {"id", "title", "version", "description", "packs", "guidance", "inventory", "sources"}
_PACK_HANDLED = {"pack", "parameters", "rules"}


def _structure_changes(old: LoadedRules, new: LoadedRules) -> list[Change]:
    """Keys of the manifest and of the packs that no other comparison covers (e.g. relations between
    rules, wherever they are declared): minor; a pack's metadata (reviewer, status, dates): patch."""
    out: list[Change] = []
    a, b = _raw_manifest(old), _raw_manifest(new)
    for key in sorted((a.keys() | b.keys()) - _MANIFEST_HANDLED):
        if a.get(key) != b.get(key):
            out.append(Change("rule-set-" + key, key, "minor", f"rule set: {key} changed",
                              _yaml_lines(a.get(key)), _yaml_lines(b.get(key)), "ruleset.yaml"))
    old_packs, new_packs = _raw_packs(old), _raw_packs(new)
    for pid in sorted(old_packs.keys() & new_packs.keys()):
        pa, pb = old_packs[pid], new_packs[pid]
        for key in sorted((pa.keys() | pb.keys()) - _PACK_HANDLED):
            if pa.get(key) != pb.get(key):
                out.append(Change("pack-" + key, pid, "minor", f"pack '{pid}': {key} changed",
                                  _yaml_lines(pa.get(key)), _yaml_lines(pb.get(key))))
        ma = {k: v for k, v in (pa.get("pack") or {}).items() if k != "version"}
        mb = {k: v for k, v in (pb.get("pack") or {}).items() if k != "version"}
        if ma != mb:
            out.append(Change("pack-metadata", pid, "patch", f"pack '{pid}': metadata changed (title, status, authors, "
                              "reviewer, dates or source)", _yaml_lines(ma), _yaml_lines(mb)))
    return out


def _rule_changes(a: Rule, b: Rule, raw_a: dict[str, Any], raw_b: dict[str, Any], old: LoadedRules, new: LoadedRules,
                  pa: dict[str, Any], pb: dict[str, Any]) -> list[Change]:
    out: list[Change] = []
    where = _at(b)
    if a.when_data != b.when_data:
        out.append(Change("condition", b.id, "major", f"rule '{b.id}': the condition changed (who it fires for)",
                          _condition_lines(a, pa, old), _condition_lines(b, pb, new), where))
    for key in _MAJOR_KEYS:
        before, after = getattr(a, key), getattr(b, key)
        if before != after:
            out.append(Change(key, b.id, "major", f"rule '{b.id}': {key} {before} → {after}", (str(before),), (str(after),), where))
    if a.then != b.then:
        out.append(Change("outputs", b.id, "minor", f"rule '{b.id}': what it produces changed",
                          _output_lines(a, pa), _output_lines(b, pb), where))
    if a.quote != b.quote or a.section != b.section:
        out.append(Change("quote", b.id, "minor", f"rule '{b.id}': the source it cites changed",
                          (f"section: {a.section}", f"quote: “{a.quote}”"), (f"section: {b.section}", f"quote: “{b.quote}”"),
                          where))
    if a.guidance != b.guidance:
        out.append(Change("guidance", b.id, "minor", f"rule '{b.id}': guidance ids changed",
                          (", ".join(a.guidance),), (", ".join(b.guidance),), where))
    if a.status != b.status:
        out.append(Change("status", b.id, "minor", f"rule '{b.id}': status {a.status} → {b.status}", (a.status,), (b.status,), where))
    for key in sorted((raw_a.keys() | raw_b.keys()) - _HANDLED):
        if raw_a.get(key) != raw_b.get(key):
            out.append(Change("rule-" + key, b.id, "minor", f"rule '{b.id}': {key} changed",
                              _yaml_lines(raw_a.get(key)), _yaml_lines(raw_b.get(key)), where))
    if a.title != b.title or a.rationale != b.rationale:
        out.append(Change("wording", b.id, "patch", f"rule '{b.id}': title or rationale reworded",
                          (a.title, *(f"{r.guidance}: {r.text}" for r in a.rationale)),
                          (b.title, *(f"{r.guidance}: {r.text}" for r in b.rationale)), where))
    return out


def _yaml_lines(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    import json

    return tuple(json.dumps(value, ensure_ascii=False, sort_keys=True, indent=1).splitlines())


def _param_line(p: Any) -> str:
    bounds = [f"{k} {getattr(p, k)}" for k in ("minimum", "maximum") if getattr(p, k) is not None]
    if p.enum is not None:
        bounds.append("one of " + ", ".join(map(str, p.enum)))
    if p.at_most:
        bounds.append(f"at most {p.at_most}")
    unit = f" {p.unit}" if p.unit else ""
    return f"{p.default}{unit} ({p.origin}{'; ' + ', '.join(bounds) if bounds else ''})"


def _parameter_changes(old: LoadedRules, new: LoadedRules) -> list[Change]:
    out: list[Change] = []
    for name, gone in old.parameters.items():
        if name not in new.parameters:
            out.append(Change("parameter-removed", name, "major", f"parameter '{name}' was removed", (_param_line(gone),), (),
                              f"{_short(gone.where.file)}:{gone.where.line}"))
    for name, q in new.parameters.items():
        where = f"{_short(q.where.file)}:{q.where.line}"
        p = old.parameters.get(name)
        if p is None:
            out.append(Change("parameter-added", name, "minor", f"parameter '{name}' was added", (), (_param_line(q),), where))
            continue
        if p.default != q.default:
            out.append(Change("parameter-default", name, "major", f"parameter '{name}': default {p.default} → {q.default}",
                              (_param_line(p),), (_param_line(q),), where))
        elif (p.type, p.minimum, p.maximum, p.enum, p.at_most, p.origin, p.unit) != \
                (q.type, q.minimum, q.maximum, q.enum, q.at_most, q.origin, q.unit):
            out.append(Change("parameter-bounds", name, "major", f"parameter '{name}': type, bounds, unit or origin changed",
                              (_param_line(p),), (_param_line(q),), where))
        elif p.description != q.description or p.guidance != q.guidance:
            out.append(Change("parameter-wording", name, "patch", f"parameter '{name}': description or guidance ids changed",
                              (p.description.strip(),), (q.description.strip(),), where))
    return out


def _guidance_changes(old: LoadedRules, new: LoadedRules) -> list[Change]:
    out: list[Change] = []
    for gid, item in old.guidance.items():
        other = new.guidance.get(gid)
        if other is None:
            out.append(Change("guidance-removed", gid, "minor", f"guidance {gid} was removed from the catalogue", (item.text,)))
        elif (item.kind, item.text) != (other.kind, other.text):
            out.append(Change("guidance-changed", gid, "minor", f"guidance {gid} changed",
                              (f"{item.kind}: {item.text}",), (f"{other.kind}: {other.text}",)))
    for gid, item in new.guidance.items():
        if gid not in old.guidance:
            out.append(Change("guidance-added", gid, "minor", f"guidance {gid} was added to the catalogue", (), (item.text,)))
    return out


def _source_changes(old: LoadedRules, new: LoadedRules) -> list[Change]:
    def digests(loaded: LoadedRules) -> dict[str, str]:
        return {s.id or s.name: hashlib.sha256(s.text.encode()).hexdigest()[:16] for s in loaded.sources}

    a, b = digests(old), digests(new)
    out: list[Change] = []
    for sid in sorted(a.keys() | b.keys()):
        if a.get(sid) != b.get(sid):
            what = "declared" if sid not in a else "no longer declared" if sid not in b else "changed (text differs)"
            out.append(Change("source", sid, "patch", f"source '{sid}' {what}",
                              (f"sha256 {a[sid]}…",) if sid in a else (), (f"sha256 {b[sid]}…",) if sid in b else ()))
    return out


# ---------------------------------------------------------------- rendering


def to_markdown(d: RuleSetDiff) -> str:
    """The diff as GitHub-flavoured Markdown."""
    from .render import _md_cell, _md_table

    status = "✓" if d.ok else "✗ ERROR:"
    lines = [f"# Rule set changes: {_md_cell(d.old.id)} {_md_cell(d.old.version)} → {_md_cell(d.new.version)}", "",
             *_md_table(["", "OLD", "NEW"], [
                 ["From", f"`{d.old.label}`", f"`{d.new.label}`"],
                 ["Rule set", f"`{d.old.id}`", f"`{d.new.id}`"],
                 ["Version", d.old.version, d.new.version],
                 ["Digest", f"`{d.old.digest}`", f"`{d.new.digest}`"]]),
             f"**Version check** {status} {_md_cell(d.verdict)}", "",
             f"Changes: {len(d.changes)} ({d.count('major')} major, {d.count('minor')} minor, {d.count('patch')} patch).", ""]
    if not d.changes:
        lines += ["No change in meaning: the same rules, parameters, catalogue and sources.", ""]
    for c in d.changes:
        lines += [f"## {_md_cell(c.summary)}", "",
                  f"*{c.kind}* · needs a **{c.bump}** bump" + (f" · `{_md_cell(c.where)}`" if c.where else ""), ""]
        if c.before:
            lines += ["Before:", "", "```text", *(_fence(line) for line in c.before), "```", ""]
        if c.after:
            lines += ["After:", "", "```text", *(_fence(line) for line in c.after), "```", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _fence(line: str) -> str:
    return line.replace("```", "`\u200b``")  # a fence inside rule text must not close the block


def to_html(d: RuleSetDiff) -> str:
    """The diff as one self-contained HTML page (the rulebook's style; every text escaped)."""
    from .render import CSS, _e, _kv, _table

    title = f"Rule set changes: {d.old.id} {d.old.version} → {d.new.version}"
    verdict_cls = "ok" if d.ok else "bad"
    out = ['<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
           '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
           f"<title>{_e(title)}</title>\n<style>{CSS}"
           ".diff-before{background:var(--crit-bg)}.diff-after{background:var(--ok-bg)}"
           "pre.diff{white-space:pre-wrap;padding:.5rem;border-radius:6px;margin:.25rem 0}</style>\n</head>\n<body>\n<main>\n",
           f"<h1>{_e(title)}</h1>",
           _table(["", "OLD", "NEW"], [
               ["From", f"<code>{_e(d.old.label)}</code>", f"<code>{_e(d.new.label)}</code>"],
               ["Rule set", f"<code>{_e(d.old.id)}</code>", f"<code>{_e(d.new.id)}</code>"],
               ["Version", _e(d.old.version), _e(d.new.version)],
               ["Digest", f"<code>{_e(d.old.digest)}</code>", f"<code>{_e(d.new.digest)}</code>"]]),
           f'<p><strong>Version check</strong> <span class="{verdict_cls}">{"✓" if d.ok else "✗ ERROR:"}</span> '
           f"{_e(d.verdict)}</p>",
           f"<p>Changes: {len(d.changes)} ({d.count('major')} major, {d.count('minor')} minor, {d.count('patch')} patch).</p>"]
    if not d.changes:
        out.append("<p>No change in meaning: the same rules, parameters, catalogue and sources.</p>")
    for c in d.changes:
        rows = [("Kind", _e(c.kind)), ("Needs", f"a <strong>{_e(c.bump)}</strong> bump")]
        if c.where:
            rows.append(("Where", f"<code>{_e(c.where)}</code>"))
        out.append(f'<section class="change"><h2>{_e(c.summary)}</h2>{_kv(rows)}')
        if c.before:
            out.append('<p>Before:</p><pre class="diff diff-before">' + _e("\n".join(c.before)) + "</pre>")
        if c.after:
            out.append('<p>After:</p><pre class="diff diff-after">' + _e("\n".join(c.after)) + "</pre>")
        out.append("</section>")
    out.append("</main>\n</body>\n</html>\n")
    return "\n".join(out)


def render_diff(d: RuleSetDiff, fmt: str = "markdown") -> str:
    """The diff in one of FORMATS."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown diff format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return to_html(d) if fmt == "html" else to_markdown(d)


__all__ = ["BUMPS", "FORMATS", "Change", "RevisionError", "RuleSetDiff", "Side", "diff", "materialize",
           "next_version", "render_diff", "to_html", "to_markdown", "version_bump"]
