"""The web pages of `cdss serve`: "Try a patient" (`/`) and the rulebook (`/rulebook`).

Server-rendered with Jinja2 plus one small plain-JavaScript file, every asset served by cdss
itself (no CDN, no build step), so the pages work offline and inside a hospital network.
The form is generated from schemas/patient.schema.json, so a field added to the contract
appears on the page without touching this module. The page posts the patient document to
`/try/evaluate` and renders the answer with DOM text nodes only: rule texts and patient ids
are data, never markup. Nothing a user typed is stored or logged here: the document lives
only in the request, and every answer is marked `no-store`.

    app.include_router(cdss.service.web.router(rules))   # what cdss.service.create_app does
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response

if TYPE_CHECKING:
    import jinja2

    from ..ruleset import RuleSet

_HERE = Path(__file__).resolve().parent
STATIC_DIR = _HERE / "static"
TEMPLATES_DIR = _HERE / "templates"
MAX_DOCUMENT_BYTES = 1024 * 1024
DRAIN_LIMIT = 16 * MAX_DOCUMENT_BYTES  # read and discarded at most, to answer 413 rather than reset
"""Same cap as the command line: a patient document is a few hundred bytes."""

_STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".svg": "image/svg+xml"}
_COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                   "X-Frame-Options": "DENY"}
_NO_STORE = {"Cache-Control": "no-store", **_COMMON_HEADERS}
# the Try page loads only its own script, style and icon, and talks only to its own server
_TRY_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
            "form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
# the rulebook is one self-contained page: inline CSS, no scripts, nothing loaded
_RULEBOOK_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'"

SECTION_TITLES = {"back_pain": "Back pain", "red_flags": "Red flags", "risk_factors": "Risk factors"}


# ================================================================ the form, from the schema


@dataclass(frozen=True)
class Control:
    """One answer on the form; `name` is the patient field's dotted path."""

    name: str
    kind: str  # "tristate" | "enum" | "integer" | "string"
    label: str
    hint: str = ""
    values: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    max_length: int | None = None

    @property
    def dom_id(self) -> str:
        return "q-" + self.name


@dataclass(frozen=True)
class Group:
    """A section of the patient document (a schema object), possibly nested."""

    key: str
    title: str
    items: tuple[Control | Group, ...] = field(default_factory=tuple)

    @property
    def dom_id(self) -> str:
        return "s-" + self.key

    def controls(self) -> list[Control]:
        out: list[Control] = []
        for item in self.items:
            out.extend(item.controls() if isinstance(item, Group) else [item])
        return out


def humanize(key: str) -> str:
    """`worse_with_prolonged_standing_or_walking` → `Worse with prolonged standing or walking`."""
    words = key.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = dict(root["$defs"][ref.removeprefix("#/$defs/")])
        target.update({k: v for k, v in node.items() if k != "$ref"})  # the field's own description wins
        return target
    return node


def _control(path: str, key: str, node: Mapping[str, Any]) -> Control:
    hint = str(node.get("description", ""))
    kinds = node.get("type")
    kinds = set(kinds) if isinstance(kinds, list) else {kinds}
    if "enum" in node:
        return Control(path, "enum", humanize(key), hint, tuple(str(v) for v in node["enum"] if v is not None))
    if kinds <= {"boolean", "null"} and "boolean" in kinds:
        return Control(path, "tristate", humanize(key), hint)
    if "integer" in kinds:
        return Control(path, "integer", humanize(key), hint, minimum=node.get("minimum"), maximum=node.get("maximum"))
    if "string" in kinds:
        return Control(path, "string", humanize(key).replace(" id", " ID"), hint, max_length=node.get("maxLength"))
    raise ValueError(f"patient schema field '{path}': no form control for type {node.get('type')!r}")


def _group(path: str, key: str, node: Mapping[str, Any], root: Mapping[str, Any]) -> Group:
    items: list[Control | Group] = []
    for child_key, child in node.get("properties", {}).items():
        child = _resolve(child, root)
        child_path = f"{path}.{child_key}" if path else child_key
        if child.get("type") == "object":
            items.append(_group(child_path, child_key, child, root))
        else:
            items.append(_control(child_path, child_key, child))
    return Group(path or key, SECTION_TITLES.get(key, humanize(key)), tuple(items))


def form_sections(schema: Mapping[str, Any]) -> list[Group]:
    """The form's sections, in schema order: top-level scalars (the patient id) first as "Patient"."""
    whole = _group("", "patient", schema, schema)
    scalars = tuple(item for item in whole.items if isinstance(item, Control))
    sections = [item for item in whole.items if isinstance(item, Group)]
    return ([Group("patient", "Patient", scalars)] if scalars else []) + sections


def condition_shape(condition: Any, params: Mapping[str, Any], units: Mapping[str, str | None]) -> dict[str, Any]:
    """A rule's condition tree for the page's "why": composites by kind, leaves in plain words.

    The trace lists every leaf, in this tree's depth-first order (no short cut), so the page
    can put each value seen beside its words and show how all / any / not combine them.
    """
    from ..audit import describe_condition
    from ..conditions import All, AnyOf, Not

    if isinstance(condition, Not):
        return {"op": "not", "children": [condition_shape(condition.child, params, units)]}
    if isinstance(condition, (All, AnyOf)):
        return {"op": "all" if isinstance(condition, All) else "any",
                "children": [condition_shape(child, params, units) for child in condition.children]}
    return {"op": "leaf", "text": describe_condition(condition, params, units).text}


# ================================================================ the pages


@cache
def _environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _static_files() -> dict[str, tuple[bytes, str]]:
    """Every shipped asset, read once: a fixed list, so no request path ever reaches the file system."""
    return {p.name: (p.read_bytes(), _STATIC_TYPES[p.suffix]) for p in sorted(STATIC_DIR.iterdir())
            if p.is_file() and p.suffix in _STATIC_TYPES}


def _examples() -> dict[str, Any]:
    from ..resources import examples_dir

    directory = examples_dir() / "patients"
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(directory.glob("*.json"))}


def _error(status: int, path: str, expected: str, found: str, message: str, hint: str | None = None) -> JSONResponse:
    record = {"path": path, "expected": expected, "found": found, "message": message}
    if hint:
        record["hint"] = hint
    return JSONResponse({"error": record}, status_code=status, headers=_NO_STORE)


class Pages:
    """The state behind the routes: the rule set, the rendered Try page, the rulebook (made on first use)."""

    def __init__(self, rules: RuleSet, source: Path | None) -> None:
        from ..resources import schema

        self.rules = rules
        self.source = source  # None: the sources the rule set declares (cdss.audit.rulebook)
        self.sections = form_sections(schema("patient"))
        self.static = _static_files()
        info = rules.info
        controls = [c for s in self.sections for c in s.controls()]
        units = {name: p.unit for name, p in rules.parameters.items()}
        page_data = {
            "fields": {c.name: {"label": c.label, "section": s.title} for s in self.sections for c in s.controls()},
            "rules": {r.id: r.title for r in rules.rules},
            "conditions": {r.id: condition_shape(r.when, rules.parameter_values, units) for r in rules.rules},
            "examples": _examples(),
            "maxBytes": MAX_DOCUMENT_BYTES,
        }
        self.try_html = _environment().get_template("try.html").render(
            info=info, sections=self.sections, controls=controls, page_data=page_data,
            examples=list(page_data["examples"]))
        self._rulebook: str | None = None
        self._lock = threading.Lock()

    def rulebook_html(self) -> str:
        if self._rulebook is None:
            with self._lock:
                if self._rulebook is None:
                    from ..audit import rulebook

                    self._rulebook = rulebook(self.rules, source=self.source, fmt="html")
        return self._rulebook

    # ------------------------------------------------------------ routes
    def try_page(self) -> HTMLResponse:
        return HTMLResponse(self.try_html, headers={"Content-Security-Policy": _TRY_CSP, **_COMMON_HEADERS})

    def rulebook_page(self) -> Response:
        from ..errors import CdssError

        try:
            page = self.rulebook_html()
        except (CdssError, OSError) as error:  # e.g. an invalid scenario file beside the rule set: say where
            return Response(f"The rulebook could not be built: {error}\n", status_code=500, media_type="text/plain",
                            headers=_COMMON_HEADERS)
        return HTMLResponse(page, headers={"Content-Security-Policy": _RULEBOOK_CSP, **_COMMON_HEADERS})

    def static_file(self, name: str) -> Response:
        found = self.static.get(name)
        if found is None:
            return Response("not found\n", status_code=404, media_type="text/plain", headers=_COMMON_HEADERS)
        body, media_type = found
        return Response(body, media_type=media_type, headers={"Cache-Control": "no-cache", **_COMMON_HEADERS})

    async def evaluate(self, request: Request) -> JSONResponse:
        """One patient document in, `{result, cds_hooks, trace}` out; 400 names path/expected/found."""
        from ..cli.input import InputProblem, parse_document, patient_problem
        from ..errors import CdssError, PatientDataError

        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_DOCUMENT_BYTES:
            return _too_large()
        raw = bytearray()
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > MAX_DOCUMENT_BYTES:
                # Keep reading (and discarding) a bounded amount, so a client still sending its body
                # gets the 413 instead of a connection reset; past DRAIN_LIMIT the connection is dropped.
                if received > DRAIN_LIMIT:
                    break
                continue
            raw.extend(chunk)
        if received > MAX_DOCUMENT_BYTES:
            return _too_large()
        try:
            document = parse_document(bytes(raw))
        except InputProblem as problem:
            return _error(400, problem.path, problem.expected, problem.found, problem.message, problem.hint)
        try:
            # blocking work, off the event loop: a slow evaluation must not stall the service's other requests
            assessment = await run_in_threadpool(self.rules.evaluate, document, trace=True)
        except PatientDataError as error:
            problem = patient_problem(error, document)
            return _error(400, problem.path, problem.expected, problem.found, problem.message, problem.hint)
        except CdssError as error:  # the engine failed: a bug, never the caller's fault, never an empty answer
            return JSONResponse({"error": {"message": "The rule engine failed (a bug in cdss), so nothing was evaluated. "
                                           "This is NOT an all-clear: assess the patient without this tool."}},
                                status_code=500, headers=_NO_STORE)
        result = assessment.to_dict()
        trace = result.pop("trace", [])
        return JSONResponse({"result": result, "cds_hooks": assessment.to_cds_hooks(), "trace": trace},
                            headers=_NO_STORE)


def _too_large() -> JSONResponse:
    return _error(413, "$", f"a patient document (at most {MAX_DOCUMENT_BYTES // 1024} KiB)",
                  f"more than {MAX_DOCUMENT_BYTES:,} bytes",
                  f"input is larger than {MAX_DOCUMENT_BYTES // 1024} KiB; a patient document is far smaller")


def router(rules: RuleSet, *, source: Path | None = None) -> APIRouter:
    """The pages for one rule set: `/`, `/rulebook`, `/static/<name>`, `POST /try/evaluate`.

    `source`: the source document the rulebook checks quotes against; by default the sources
    the rule set declares in its ruleset.yaml.
    """
    pages = Pages(rules, source)
    api = APIRouter()
    api.add_api_route("/", pages.try_page, methods=["GET"], response_class=HTMLResponse, include_in_schema=False)
    api.add_api_route("/rulebook", pages.rulebook_page, methods=["GET"], response_class=HTMLResponse,
                      include_in_schema=False)
    api.add_api_route("/static/{name}", pages.static_file, methods=["GET", "HEAD"], include_in_schema=False)
    api.add_api_route("/try/evaluate", pages.evaluate, methods=["POST"], summary="Evaluate one patient document",
                      description="Body: a patient document (JSON). Answer: the result, the CDS Hooks response "
                                  "and the trace of every rule. 400: invalid document (path, expected, found).")
    return api
