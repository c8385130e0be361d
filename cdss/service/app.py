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
import os
from collections.abc import Callable
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
from .middleware import AccessLog, BodyLimit
from .requests import RequestProblem, feedback_items, field, is_uuid, kind, nonempty_str, parse_json, patient_problem

HOOK = "patient-view"
PATIENT_KEY = "cdssPatient"
QR_KEY = "questionnaireResponse"
QR_PREFETCH = "QuestionnaireResponse?subject={{context.patientId}}&status=completed&_sort=-authored&_count=1"

log = logging.getLogger("cdss.service")


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


def _same_patient(document: Any, resource: Any, key: str, patient_id: str) -> None:
    """The one patient check, on the document that will be evaluated (a QuestionnaireResponse already
    converted): its patient_id, and the response's subject, must name context.patientId, or a 400."""
    if isinstance(resource, dict) and isinstance(resource.get("subject"), dict):
        subject = resource["subject"].get("reference")
        if isinstance(subject, str) and subject not in (patient_id, f"Patient/{patient_id}"):
            raise RequestProblem(400, "patient-mismatch", f"prefetch.{key}.subject is not context.patientId: the "
                                 "answers may belong to another patient; nothing was evaluated",
                                 path=f"$.prefetch.{key}.subject.reference", expected=f"Patient/{patient_id}"[:80],
                                 found="a different reference")
    if isinstance(document, dict) and "patient_id" in document and document["patient_id"] != patient_id:
        where = "patient_id" if resource is None else "item[linkId=patient_id]"
        raise RequestProblem(400, "patient-mismatch", f"the patient_id in prefetch.{key} is not context.patientId: "
                             "the answers may belong to another patient; nothing was evaluated",
                             path=f"$.prefetch.{key}.{where}", expected="the same id as context.patientId",
                             found="a different id")


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
            raise RequestProblem(400, "invalid-request", f"$: expected a CDS Hooks request object, found {kind(body)}",
                                 path="$", expected="a JSON object", found=kind(body))
        hook_instance = field(body, "$", "hookInstance", "a UUID string", is_uuid)
        request.state.hook_instance = hook_instance
        field(body, "$", "hook", f"'{HOOK}'", lambda v: v == HOOK)
        context = field(body, "$", "context", "an object", lambda v: isinstance(v, dict))
        patient_id = field(context, "$.context", "patientId", "a non-empty string", nonempty_str)
        field(context, "$.context", "userId", "a non-empty string", nonempty_str)
        field(body, "$", "fhirServer", "a URL string", nonempty_str, required=False)
        prefetch = field(body, "$", "prefetch", "an object", lambda v: isinstance(v, dict), required=False) or {}
        # the conversion, the evaluation and the SQLite write are blocking: off the event loop, so one slow
        # call does not stall every other request (/healthz included)
        return await run_in_threadpool(_answer, prefetch, patient_id)

    def _answer(prefetch: dict[str, Any], patient_id: str) -> Response:
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
            if isinstance(document, dict) and "resourceType" in document:
                # RuleSet.evaluate would convert a QuestionnaireResponse itself, past the subject check below:
                # a FHIR resource is only ever read under its own key, where its subject is checked too
                where = (f"send a FHIR QuestionnaireResponse as prefetch.{QR_KEY}" if fhir_adapter is not None
                         else "this server was installed without FHIR support (cdss.fhir)")
                raise RequestProblem(400, "wrong-prefetch-key", f"prefetch.{PATIENT_KEY} holds a FHIR resource "
                                     f"(resourceType); it takes a cdss patient document only: {where}; nothing was "
                                     "evaluated", path=f"$.prefetch.{PATIENT_KEY}.resourceType",
                                     expected="a cdss patient document (no resourceType)", found="a FHIR resource")
            _same_patient(document, None, PATIENT_KEY, patient_id)
            return document, PATIENT_KEY
        if has_qr:
            if fhir_adapter is None:
                raise RequestProblem(412, "fhir-unsupported", f"prefetch.{QR_KEY} was sent, but this server was installed "
                                     f"without FHIR support (cdss.fhir); send the answers as prefetch.{PATIENT_KEY}")
            resource = _questionnaire_response(prefetch[QR_KEY])
            try:
                document = fhir_adapter(resource, rules)
            except PatientDataError as error:
                raise patient_problem(error, QR_KEY) from None
            except CdssError as error:  # whatever else the FHIR adapter refuses: still the caller's data
                raise RequestProblem(400, "invalid-patient", f"prefetch.{QR_KEY}: {' '.join(str(error).split())[:300]}",
                                     document=f"$.prefetch.{QR_KEY}", path=getattr(error, "path", None),
                                     expected=getattr(error, "expected", None), found=getattr(error, "found", None)) from None
            _same_patient(document, resource, QR_KEY, patient_id)
            return document, QR_KEY
        keys = f"prefetch.{PATIENT_KEY}" + (f" or prefetch.{QR_KEY}" if fhir_adapter is not None else "")
        raise RequestProblem(412, "prefetch-missing", f"no {keys} in the request (or it was null): this service cannot "
                             "fetch the answers from the FHIR server, so it has nothing to evaluate")

    def _evaluate(document: Any, key: str) -> Response:
        try:
            assessment = rules.evaluate(document)
        except PatientDataError as error:
            raise patient_problem(error, key) from None
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
        items = feedback_items(parse_json(await request.body()), config.store_user_comments)
        stored = await run_in_threadpool(store.record_feedback, service_id, items)  # SQLite blocks
        return {"stored": stored}

    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], allow_credentials=False, max_age=600)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(AccessLog)

    if config.pages_served:
        web = _web_router(rules)
        if web is not None:
            app.include_router(web)
    return app


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
