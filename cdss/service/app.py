"""The CDS Hooks 2.0 service as an ASGI app: `create_app(rules, config)` (served by `cdss serve`).

A thin translation at the edge: the request is checked, the patient document is taken from the
prefetch, `RuleSet.evaluate` runs, and the response is exactly `Assessment.to_cds_hooks()`. The
one rule this module exists to keep: a failure is never an empty card list. `{"cards": []}`
means "nothing to say" and an EHR shows nothing, so every failure is an HTTP error with a JSON
reason (`{"error": code, "message": ..., ...}`): 400 invalid request or patient document (with
the CLI's path / expected / found), 401 not authenticated, 404 unknown service, 412 no usable
prefetch (this service never fetches from the EHR's FHIR server), 413 body over 1 MiB, 500 the
evaluation failed.

Nothing from a request body reaches a log: the access log line holds hookInstance (only when
it is a UUID), the service, the status and the latency.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import CdssError, PatientDataError
from ..result import EXTENSION_KEY, compact
from ..ruleset import RuleSet
from .auth import AuthError, Verifier
from .config import ServiceConfig, load_config
from .feedback import FeedbackStore

HOOK = "patient-view"
PATIENT_KEY = "cdssPatient"
QR_KEY = "questionnaireResponse"
QR_PREFETCH = "QuestionnaireResponse?subject={{context.patientId}}&status=completed&_sort=-authored&_count=1"

log = logging.getLogger("cdss.service")
access_log = logging.getLogger("cdss.service.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestProblem(Exception):
    """An HTTP error answer: status, a machine code, a message for a person, and optional fields."""

    def __init__(self, status: int, code: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = {k: v for k, v in fields.items() if v is not None}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if self.status == 401 else None
        return JSONResponse({"error": self.code, "message": self.message, **self.fields}, status_code=self.status,
                            headers=headers)


# ---------------------------------------------------------------- ASGI middlewares


def _json_error(status: int, code: str, message: str) -> tuple[Message, Message]:
    body = json.dumps({"error": code, "message": message}).encode()
    return ({"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]},
            {"type": "http.response.body", "body": body})


class BodyLimit:
    """413 for a request body over `limit` bytes, by Content-Length or by counting, before any parsing."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    await self._refuse(send)
                    return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        start, body = _json_error(413, "too-large", f"request body over {self.limit // 1024} KiB; a CDS Hooks request "
                                  "with one patient document is far smaller")
        await send(start)
        await send(body)


class AccessLog:
    """One line per request: hookInstance, service, status, latency. Never a path, a body or a header.

    Also the last guard: an unexpected exception becomes a JSON 500 here and is logged by type only, so
    neither Starlette nor uvicorn prints a traceback whose message could quote request data."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        scope.setdefault("state", {})

        started_response = False

        async def sending(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as error:  # noqa: BLE001 - answered here so no traceback (it may quote request data) is logged
            log.error("internal error: %s (no details logged: they may hold request data)", type(error).__name__)
            if not started_response:
                start, body = _json_error(500, "internal-error", "internal error in cdss; nothing was evaluated. "
                                          "This is a bug: please report it.")
                await sending(start)
                await send(body)
        finally:
            state = scope.get("state", {})
            access_log.info("hookInstance=%s service=%s status=%d latency_ms=%.2f", state.get("hook_instance", "-"),
                            state.get("service", "-"), status, (time.perf_counter() - started) * 1000)


# ---------------------------------------------------------------- request parsing


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(f"duplicate key '{key[:40]}' in one object (the second would silently replace the first)")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise _Duplicate(f"{name} is not allowed (use null for an unknown value)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Duplicate("a number too large to represent")
    return value


def parse_json(raw: bytes) -> Any:
    """Strict JSON (no NaN, no duplicate keys), like the CLI; RequestProblem 400 with line and column."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestProblem(400, "invalid-json", "the request body is not UTF-8 text", path="$",
                             expected="UTF-8 JSON", found="bytes that are not UTF-8") from None
    if not text.strip():
        raise RequestProblem(400, "invalid-json", "empty request body: expected a JSON object", path="$",
                             expected="a JSON object", found="empty input")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as error:
        found = f"{error.msg} at line {error.lineno}, column {error.colno}"
        raise RequestProblem(400, "invalid-json", f"not valid JSON: {found}", path="$", expected="valid JSON",
                             found=found) from None
    except (_Duplicate, ValueError, RecursionError) as error:
        found = str(error)[:200] if not isinstance(error, RecursionError) else "JSON nested too deeply"
        raise RequestProblem(400, "invalid-json", f"not valid JSON: {found}", path="$", expected="valid JSON",
                             found=found) from None


def _kind(value: Any) -> str:
    from ..errors import describe_value

    return describe_value(value)


def _field(document: Any, path: str, key: str, expected: str, check: Callable[[Any], bool], *,
           required: bool = True) -> Any:
    where = f"{path}.{key}"
    if key not in document:
        if required:
            raise RequestProblem(400, "invalid-request", f"{where}: expected {expected}, found nothing (it is required)",
                                 path=where, expected=expected, found="missing")
        return None
    value = document[key]
    if not check(value):
        found = _kind(value)
        raise RequestProblem(400, "invalid-request", f"{where}: expected {expected}, found {found}", path=where,
                             expected=expected, found=found)
    return value


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


# ---------------------------------------------------------------- the app


def _fhir_adapter() -> Callable[[Any, RuleSet], Any] | None:
    """`cdss.fhir.patient_from_questionnaire_response` if the FHIR integration is installed, else None."""
    try:
        module = importlib.import_module("cdss.fhir")
    except ModuleNotFoundError as error:
        if error.name in ("cdss.fhir",):
            return None
        raise
    return getattr(module, "patient_from_questionnaire_response", None)


def _web_router(rules: RuleSet) -> Any:
    try:
        module = importlib.import_module("cdss.service.web")
    except ModuleNotFoundError as error:
        if error.name == "cdss.service.web":
            return None
        raise
    return module.router(rules)


def discovery_document(rules: RuleSet, fhir: bool) -> dict[str, Any]:
    """`GET /cds-services`: one patient-view service per rule set, its id the rule set id."""
    info = rules.info
    usage = (f"Send the answers as a cdss patient document (schema: `cdss schema patient`) in prefetch.{PATIENT_KEY}"
             + (f", or a FHIR QuestionnaireResponse (or a searchset Bundle holding one) in prefetch.{QR_KEY}" if fhir else "")
             + ". This service does not read the FHIR server: without that prefetch it answers 412. "
             "Cards support, never replace, clinical judgement; a critical card means seek immediate medical attention.")
    service: dict[str, Any] = {
        "hook": HOOK,
        "title": info.title,
        "description": f"{info.title}: rule set {info.id} {info.version}, from '{info.source_title}'. "
                       "Returns cards for red flags, escalation and the exercise plan.",
        "id": info.id,
    }
    if fhir:
        service["prefetch"] = {QR_KEY: QR_PREFETCH}
    service["usageRequirements"] = usage
    service["extension"] = {EXTENSION_KEY: {"rule_set": {"id": info.id, "version": info.version, "digest": info.digest},
                                            "cdss_version": __version__, "prefetch_keys": [PATIENT_KEY] + ([QR_KEY] if fhir else [])}}
    return {"services": [service]}


def _questionnaire_response(value: Any) -> Any:
    """The QuestionnaireResponse itself, from the resource or from a searchset Bundle (the first entry: the
    prefetch template asks for the most recent completed one)."""
    if isinstance(value, dict) and value.get("resourceType") == "Bundle":
        entries = [e.get("resource") for e in value.get("entry") or [] if isinstance(e, dict)]
        responses = [r for r in entries if isinstance(r, dict) and r.get("resourceType") == "QuestionnaireResponse"]
        if not responses:
            raise RequestProblem(412, "prefetch-missing", f"prefetch.{QR_KEY} is a Bundle with no QuestionnaireResponse: "
                                 "this patient has no completed questionnaire; ask the questions first")
        return responses[0]
    return value


def create_app(rules: RuleSet, config: ServiceConfig) -> FastAPI:
    """The CDS Hooks app for one rule set; `config` says who may call it and where feedback is stored."""
    config.check()
    info = rules.info
    store = FeedbackStore(config.feedback_db)
    verifier = Verifier(config, store) if config.auth else None
    fhir_adapter = _fhir_adapter()
    discovery = compact(discovery_document(rules, fhir_adapter is not None)).encode()

    app = FastAPI(title=f"cdss CDS Hooks service: {info.id}", version=__version__, docs_url="/docs", redoc_url=None,
                  description="CDS Hooks 2.0 service (discovery, patient-view hook, feedback). Every failure is an "
                              "HTTP error with a JSON reason, never an empty card list.")
    app.state.store = store
    app.state.rules = rules
    app.state.config = config

    async def authenticate(request: Request) -> None:
        if verifier is None:
            return
        audience = f"{config.audience_base_url}{request.url.path}"
        authorization = request.headers.get("authorization")
        try:
            if verifier.may_fetch(authorization):  # a JWK Set fetch must not stall every other request
                await run_in_threadpool(verifier.verify, authorization, audience)
            else:
                verifier.verify(authorization, audience)
        except AuthError as error:
            raise RequestProblem(401, "unauthorized", error.reason) from None

    def service_or_404(service_id: str) -> None:
        if service_id != info.id:
            raise RequestProblem(404, "unknown-service", f"no CDS service '{service_id[:80]}' here; "
                                 f"GET /cds-services lists them (this server has '{info.id}')")

    @app.exception_handler(RequestProblem)
    async def _problem(_: Request, problem: RequestProblem) -> JSONResponse:
        return problem.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not-found", 405: "method-not-allowed"}.get(error.status_code, "http-error")
        return JSONResponse({"error": code, "message": str(error.detail)}, status_code=error.status_code)

    @app.get("/healthz", summary="Liveness: the rule set is loaded")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "cdss_version": __version__,
                "rule_set": {"id": info.id, "version": info.version, "digest": info.digest}}

    @app.get("/cds-services", summary="CDS Hooks discovery")
    async def cds_services(request: Request) -> Response:
        request.state.service = "discovery"
        await authenticate(request)
        return Response(discovery, media_type="application/json")

    @app.post("/cds-services/{service_id}", summary="Call the patient-view service",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"example": {
                  "hook": HOOK, "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                  "context": {"userId": "Practitioner/example", "patientId": "1288992"},
                  "prefetch": {PATIENT_KEY: {"red_flags": {"significant_leg_weakness": True}}}}}}}})
    async def call_service(service_id: str, request: Request) -> Response:
        request.state.service = service_id if service_id == info.id else "-"
        await authenticate(request)
        service_or_404(service_id)
        body = parse_json(await request.body())
        if not isinstance(body, dict):
            raise RequestProblem(400, "invalid-request", f"$: expected a CDS Hooks request object, found {_kind(body)}",
                                 path="$", expected="a JSON object", found=_kind(body))
        hook_instance = _field(body, "$", "hookInstance", "a UUID string", _is_uuid)
        request.state.hook_instance = hook_instance
        _field(body, "$", "hook", f"'{HOOK}'", lambda v: v == HOOK)
        context = _field(body, "$", "context", "an object", lambda v: isinstance(v, dict))
        patient_id = _field(context, "$.context", "patientId", "a non-empty string", _nonempty_str)
        _field(context, "$.context", "userId", "a non-empty string", _nonempty_str)
        _field(body, "$", "fhirServer", "a URL string", _nonempty_str, required=False)
        prefetch = _field(body, "$", "prefetch", "an object", lambda v: isinstance(v, dict), required=False) or {}
        document, key = _patient_document(prefetch, patient_id)
        return _evaluate(document, key)

    def _patient_document(prefetch: dict[str, Any], patient_id: str) -> tuple[Any, str]:
        """The patient document and the prefetch key it came from, or a 400 / 412."""
        has_patient = prefetch.get(PATIENT_KEY) is not None
        has_qr = prefetch.get(QR_KEY) is not None
        if has_patient and has_qr:
            raise RequestProblem(400, "ambiguous-prefetch", f"both prefetch.{PATIENT_KEY} and prefetch.{QR_KEY} were sent; "
                                 "send one, so there is no doubt which answers the cards are based on")
        if has_patient:
            document = prefetch[PATIENT_KEY]
            if isinstance(document, dict) and "patient_id" in document and document["patient_id"] != patient_id:
                raise RequestProblem(400, "patient-mismatch", f"prefetch.{PATIENT_KEY}.patient_id is not context.patientId: "
                                     "the answers may belong to another patient; nothing was evaluated",
                                     path=f"$.prefetch.{PATIENT_KEY}.patient_id", expected="the same id as context.patientId",
                                     found="a different id")
            return document, PATIENT_KEY
        if has_qr:
            if fhir_adapter is None:
                raise RequestProblem(412, "fhir-unsupported", f"prefetch.{QR_KEY} was sent, but this server was installed "
                                     f"without FHIR support (cdss.fhir); send the answers as prefetch.{PATIENT_KEY}")
            resource = _questionnaire_response(prefetch[QR_KEY])
            subject = resource.get("subject", {}).get("reference") if isinstance(resource, dict) and isinstance(
                resource.get("subject"), dict) else None
            if isinstance(subject, str) and subject not in (patient_id, f"Patient/{patient_id}"):
                raise RequestProblem(400, "patient-mismatch", f"prefetch.{QR_KEY}.subject is not context.patientId: the "
                                     "answers may belong to another patient; nothing was evaluated",
                                     path=f"$.prefetch.{QR_KEY}.subject.reference", expected=f"Patient/{patient_id}"[:80],
                                     found="a different reference")
            try:
                return fhir_adapter(resource, rules), QR_KEY
            except PatientDataError as error:
                raise _patient_problem(error, QR_KEY) from None
            except CdssError as error:  # whatever else the FHIR adapter refuses: still the caller's data
                raise RequestProblem(400, "invalid-patient", f"prefetch.{QR_KEY}: {' '.join(str(error).split())[:300]}",
                                     document=f"$.prefetch.{QR_KEY}", path=getattr(error, "path", None),
                                     expected=getattr(error, "expected", None), found=getattr(error, "found", None)) from None
        keys = f"prefetch.{PATIENT_KEY}" + (f" or prefetch.{QR_KEY}" if fhir_adapter is not None else "")
        raise RequestProblem(412, "prefetch-missing", f"no {keys} in the request (or it was null): this service cannot "
                             "fetch the answers from the FHIR server, so it has nothing to evaluate")

    def _evaluate(document: Any, key: str) -> Response:
        try:
            assessment = rules.evaluate(document)
        except PatientDataError as error:
            raise _patient_problem(error, key) from None
        except CdssError as error:
            log.error("evaluation failed: %s", type(error).__name__)
            raise RequestProblem(500, "evaluation-failed", "the rule engine failed; no cards could be computed. "
                                 "This is not an all-clear: assess the patient without this service.") from None
        except Exception as error:  # noqa: BLE001 - any failure must be a 500, never an empty card list
            log.error("evaluation failed: %s", type(error).__name__)
            raise RequestProblem(500, "evaluation-failed", "internal error while evaluating; no cards could be computed. "
                                 "This is not an all-clear: assess the patient without this service.") from None
        hooks = assessment.to_cds_hooks()
        try:
            store.record_cards((card["extension"][EXTENSION_KEY] | {"uuid": card["uuid"]} for card in hooks["cards"]),
                               info.id, info.digest)
        except Exception as error:  # noqa: BLE001 - the cards are still right; only feedback mapping is lost
            log.warning("could not record served cards for feedback: %s", type(error).__name__)
        return Response(compact(hooks), media_type="application/json")

    @app.post("/cds-services/{service_id}/feedback", summary="Card outcomes (accepted / overridden)")
    async def feedback(service_id: str, request: Request) -> dict[str, Any]:
        request.state.service = f"{service_id}/feedback" if service_id == info.id else "-"
        await authenticate(request)
        service_or_404(service_id)
        items = _feedback_items(parse_json(await request.body()), config.store_user_comments)
        stored = store.record_feedback(service_id, items)
        return {"stored": stored}

    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], allow_credentials=False, max_age=600)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(AccessLog)

    if config.web_pages:
        web = _web_router(rules)
        if web is not None:
            app.include_router(web)
    return app


def _patient_problem(error: PatientDataError, key: str) -> RequestProblem:
    """The CLI's path / expected / found, for the document under prefetch.<key>."""
    return RequestProblem(400, "invalid-patient", f"prefetch.{key}: {error}", document=f"$.prefetch.{key}",
                          path=error.path, expected=error.expected, found=error.found, hint=error.hint)


def _timestamp(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        datetime.fromisoformat(value)  # Python 3.11 reads a trailing Z
    except ValueError:
        return False
    return True


def _feedback_items(body: Any, keep_comments: bool) -> list[dict[str, Any]]:
    """Check a feedback body (CDS Hooks 2.0 "Feedback") and keep only what the store may hold."""
    if not isinstance(body, dict):
        raise RequestProblem(400, "invalid-request", f"$: expected an object with a feedback array, found {_kind(body)}",
                             path="$", expected="an object", found=_kind(body))
    entries = _field(body, "$", "feedback", "a non-empty array", lambda v: isinstance(v, list) and bool(v))
    items = []
    for index, entry in enumerate(entries):
        path = f"$.feedback[{index}]"
        if not isinstance(entry, dict):
            raise RequestProblem(400, "invalid-request", f"{path}: expected an object, found {_kind(entry)}", path=path,
                                 expected="an object", found=_kind(entry))
        item: dict[str, Any] = {
            "card": _field(entry, path, "card", "the card's uuid", _is_uuid),
            "outcome": _field(entry, path, "outcome", "'accepted' or 'overridden'", lambda v: v in ("accepted", "overridden")),
            "outcomeTimestamp": _field(entry, path, "outcomeTimestamp", "an ISO 8601 timestamp", _timestamp),
        }
        override = _field(entry, path, "overrideReason", "an object", lambda v: isinstance(v, dict), required=False)
        if override is not None:
            if item["outcome"] != "overridden":
                raise RequestProblem(400, "invalid-request", f"{path}.overrideReason: only an overridden card has one",
                                     path=f"{path}.overrideReason", expected="no overrideReason", found="an object")
            reason = _field(override, f"{path}.overrideReason", "reason", "a Coding object",
                            lambda v: isinstance(v, dict), required=False)
            if reason is not None:
                where = f"{path}.overrideReason.reason"
                item["reason_code"] = _field(reason, where, "code", "a non-empty string", _nonempty_str)
                item["reason_system"] = _field(reason, where, "system", "a non-empty string", _nonempty_str, required=False)
                display = _field(reason, where, "display", "a string", lambda v: isinstance(v, str), required=False)
                item["reason_display"] = display[:200] if display else None
            comment = _field(override, f"{path}.overrideReason", "userComment", "a string", lambda v: isinstance(v, str),
                             required=False)
            if comment and keep_comments:
                item["user_comment"] = comment[:2000]
        items.append(item)
    return items


# ---------------------------------------------------------------- for `uvicorn --factory` (cdss serve --workers N)

ENV_RULES = "CDSS_SERVICE_RULES"
ENV_CONFIG = "CDSS_SERVICE_CONFIG"
ENV_INSECURE = "CDSS_SERVICE_INSECURE_NO_AUTH"
ENV_PARAMS = "CDSS_SERVICE_PARAMS"


def app_from_environment() -> FastAPI:
    """Build the app in a uvicorn worker process from what `cdss serve` put in the environment."""
    from ..cli.commands import load_rule_set

    rules_path = os.environ.get(ENV_RULES) or None
    params = json.loads(os.environ.get(ENV_PARAMS) or "{}")
    rules = load_rule_set(Path(rules_path) if rules_path else None, params)
    config = load_config(os.environ.get(ENV_CONFIG) or None, auth=os.environ.get(ENV_INSECURE) != "1")
    return create_app(rules, config)
