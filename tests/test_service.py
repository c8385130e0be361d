"""`cdss serve`, the CDS Hooks 2.0 service, tested as an EHR would use it: the real server (uvicorn in a
subprocess on a free port), real signed JWTs (RSA and EC keys made here), httpx calls."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

import cdss
from cdss.errors import PatientDataError

from .conftest import ROOT
from .service_helpers import ISS, KID_EC, KID_RSA, Keys, Server, free_port, hook_request, token, unsigned_token

PATIENTS = sorted((ROOT / "examples" / "patients").glob("*.json"))
RULES = cdss.load_rules()
SERVICE = RULES.info.id
SECRET_PATIENT_ID = "zz-secret-patient-4711"
SECRET_COMMENT = "zz-secret-comment about Mrs Example"
ALLOWED_ORIGIN = "https://app.example.org"


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Any:
    tmp = tmp_path_factory.mktemp("service")
    (tmp / "ehr.jwks.json").write_text(json.dumps(keys.jwks()))
    port = free_port()  # known before the config is written: it is in the audience URL
    (tmp / "service.toml").write_text(f"""
audience_base_url = "http://127.0.0.1:{port}"
cors_origins = ["{ALLOWED_ORIGIN}"]
feedback_db = "feedback.sqlite3"

[[issuers]]
iss = "{ISS}"
jwks_file = "ehr.jwks.json"
jku = ["https://ehr.example.org/jwks.json"]
""")
    srv = Server(["--config", str(tmp / "service.toml")], tmp, port=port)
    yield srv
    srv.stop()


def _url(server: Server, path: str) -> str:
    return f"{server.base}{path}"


def _call(server: Server, keys: Keys, body: Any, *, service: str = SERVICE, **token_args: Any) -> httpx.Response:
    path = f"/cds-services/{service}"
    bearer = token(keys, _url(server, path), **token_args)
    return httpx.post(_url(server, path), json=body, headers={"Authorization": f"Bearer {bearer}"}, timeout=30)


def _no_null_or_empty(value: Any, where: str = "$") -> list[str]:
    bad = [where] if value is None or value in ("", [], {}) else []
    if isinstance(value, dict):
        for key, item in value.items():
            bad += _no_null_or_empty(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            bad += _no_null_or_empty(item, f"{where}[{index}]")
    return bad


# ---------------------------------------------------------------- discovery


def test_discovery_lists_one_patient_view_service(server: Server, keys: Keys) -> None:
    url = _url(server, "/cds-services")
    response = httpx.get(url, headers={"Authorization": f"Bearer {token(keys, url)}"})
    assert response.status_code == 200
    services = response.json()["services"]
    assert [(s["id"], s["hook"]) for s in services] == [(SERVICE, "patient-view")]
    service = services[0]
    assert service["description"] and service["title"] and "cdssPatient" in service["usageRequirements"]
    assert _no_null_or_empty(response.json()) == []
    assert service["extension"]["invalid.cdss"]["rule_set"]["digest"] == RULES.info.digest


def test_discovery_needs_a_token_too(server: Server) -> None:
    response = httpx.get(_url(server, "/cds-services"))
    assert response.status_code == 401
    assert "Authorization" in response.json()["message"]


def test_healthz_and_openapi_docs_need_no_token(server: Server) -> None:
    assert httpx.get(_url(server, "/healthz")).json()["rule_set"]["digest"] == RULES.info.digest
    assert httpx.get(_url(server, "/docs")).status_code == 200
    paths = httpx.get(_url(server, "/openapi.json")).json()["paths"]
    assert "/cds-services/{service_id}" in paths and "/cds-services/{service_id}/feedback" in paths


# ---------------------------------------------------------------- the hook


@pytest.mark.parametrize("path", PATIENTS, ids=lambda p: p.stem)
def test_every_example_patient_gets_exactly_the_to_cds_hooks_cards(server: Server, keys: Keys, path: Path) -> None:
    patient = json.loads(path.read_text())
    response = _call(server, keys, hook_request(patient, patient_id=patient.get("patient_id", "p-1")))
    assert response.status_code == 200, response.text
    assert response.json() == RULES.evaluate(patient).to_cds_hooks()
    assert response.headers["content-type"] == "application/json"
    for card in response.json()["cards"]:
        assert _no_null_or_empty(card) == [], card
        assert len(card["summary"]) < 140 and card["indicator"] in ("info", "warning", "critical")
        assert card["source"]["label"] and card["source"]["topic"]["system"] and card["source"]["topic"]["code"]
        assert card["extension"]["invalid.cdss"]["rule_set"]["digest"] == RULES.info.digest


def test_a_red_flag_gives_a_critical_card(server: Server, keys: Keys) -> None:
    patient = {"red_flags": {"significant_leg_weakness": True}}
    cards = _call(server, keys, hook_request(patient)).json()["cards"]
    assert cards and cards[0]["indicator"] == "critical"


def test_responses_are_byte_identical_for_the_same_request(server: Server, keys: Keys) -> None:
    patient = json.loads(PATIENTS[0].read_text())
    body = hook_request(patient, patient_id=patient.get("patient_id", "p-1"))
    assert _call(server, keys, body).content == _call(server, keys, body).content


# ---------------------------------------------------------------- 412 / 400 / 404 / 413


@pytest.mark.parametrize("prefetch", [..., None, {"otherKey": {}}], ids=["no-prefetch", "null", "other-key"])
def test_no_usable_prefetch_is_412_with_a_reason(server: Server, keys: Keys, prefetch: Any) -> None:
    body = hook_request(...)
    if prefetch is None:
        body["prefetch"] = {"cdssPatient": None}  # the spec: a key the client could not fill is null
    elif prefetch is not ...:
        body["prefetch"] = prefetch
    response = _call(server, keys, body)
    assert response.status_code == 412
    assert response.json()["error"] == "prefetch-missing" and "cdssPatient" in response.json()["message"]
    assert "cards" not in response.json()


def test_a_questionnaire_response_needs_the_fhir_integration(server: Server, keys: Keys) -> None:
    response = _call(server, keys, hook_request({"resourceType": "QuestionnaireResponse", "status": "completed"},
                                                key="questionnaireResponse"))
    try:
        import cdss.fhir  # noqa: F401
    except ModuleNotFoundError:
        assert response.status_code == 412
        assert response.json()["error"] == "fhir-unsupported" and "cdssPatient" in response.json()["message"]
    else:  # with cdss.fhir installed the key is advertised and used (a bare resource is then invalid, not 412)
        assert response.status_code in (200, 400)


@pytest.mark.parametrize("patient", [
    {"red_flags": {"significant_leg_weakness": "ja"}},
    {"exercise": {"weeks_consistent": -3}},
    {"back_pain": {"present": True, "no_such_field": True}},
    ["not", "an", "object"],
], ids=["bad-enum", "negative-weeks", "unknown-field", "array"])
def test_an_invalid_patient_is_400_with_the_clis_path_expected_found(server: Server, keys: Keys, patient: Any) -> None:
    response = _call(server, keys, hook_request(patient))
    assert response.status_code == 400
    with pytest.raises(PatientDataError) as raised:
        RULES.evaluate(patient)
    error = response.json()
    assert error["error"] == "invalid-patient" and error["document"] == "$.prefetch.cdssPatient"
    assert (error["path"], error["expected"], error["found"]) == (raised.value.path, raised.value.expected, raised.value.found)
    assert "cards" not in error


@pytest.mark.parametrize("mutate, path", [
    (lambda b: b.pop("hookInstance"), "$.hookInstance"),
    (lambda b: b.update(hookInstance="not-a-uuid"), "$.hookInstance"),
    (lambda b: b.update(hook="order-sign"), "$.hook"),
    (lambda b: b.pop("context"), "$.context"),
    (lambda b: b["context"].pop("patientId"), "$.context.patientId"),
    (lambda b: b.update(prefetch=[]), "$.prefetch"),
    (lambda b: b["prefetch"]["cdssPatient"].update(patient_id="someone-else"), "$.prefetch.cdssPatient.patient_id"),
], ids=["no-hookInstance", "bad-hookInstance", "wrong-hook", "no-context", "no-patientId", "prefetch-array",
        "patient-mismatch"])
def test_an_invalid_request_is_400_naming_the_field(server: Server, keys: Keys, mutate: Any, path: str) -> None:
    body = hook_request({"red_flags": {"significant_leg_weakness": True}})
    mutate(body)
    response = _call(server, keys, body)
    assert response.status_code == 400, response.text
    assert response.json()["path"] == path


@pytest.mark.parametrize("raw", [b"{", b'{"hook": NaN}', b'{"hook": 1, "hook": 2}', b"\xff", b""],
                         ids=["truncated", "nan", "duplicate-key", "not-utf8", "empty"])
def test_malformed_json_is_400(server: Server, keys: Keys, raw: bytes) -> None:
    url = _url(server, f"/cds-services/{SERVICE}")
    response = httpx.post(url, content=raw, headers={"Authorization": f"Bearer {token(keys, url)}",
                                                     "Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == "invalid-json"


def test_an_unknown_service_is_404(server: Server, keys: Keys) -> None:
    response = _call(server, keys, hook_request({}), service="no-such-service")
    assert response.status_code == 404 and SERVICE in response.json()["message"]


def test_a_body_over_1_mib_is_413(server: Server, keys: Keys) -> None:
    body = hook_request({"patient_id": "x" * (1024 * 1024)})
    response = _call(server, keys, body)
    assert response.status_code == 413 and response.json()["error"] == "too-large"


def test_a_chunked_body_over_1_mib_is_413_too(server: Server, keys: Keys) -> None:
    url = _url(server, f"/cds-services/{SERVICE}")

    def chunks() -> Any:
        for _ in range(20):
            yield b" " * 65536

    response = httpx.post(url, content=chunks(), headers={"Authorization": f"Bearer {token(keys, url)}"})
    assert response.status_code == 413


# ---------------------------------------------------------------- the patient check, every way in


def _qr(patient: dict[str, Any], subject: str | None = "Patient/patient-1") -> dict[str, Any]:
    from cdss.fhir import questionnaire_response_from_patient

    resource = questionnaire_response_from_patient(patient, RULES)
    if subject is not None:
        resource["subject"] = {"reference": subject}
    return resource


RED_FLAG = {"red_flags": {"significant_leg_weakness": True}}


def test_a_questionnaire_response_under_cdss_patient_is_refused_naming_the_right_key(server: Server, keys: Keys) -> None:
    """RuleSet.evaluate converts a QuestionnaireResponse itself: under cdssPatient it would skip the subject check."""
    for resource in (_qr({"patient_id": "someone-else", **RED_FLAG}, subject="Patient/someone-else"), _qr(RED_FLAG)):
        response = _call(server, keys, hook_request(resource))
        assert response.status_code == 400, response.text
        error = response.json()
        assert error["error"] == "wrong-prefetch-key" and "questionnaireResponse" in error["message"]
        assert error["path"] == "$.prefetch.cdssPatient.resourceType" and "cards" not in error


@pytest.mark.parametrize("patient, subject, path", [
    ({"patient_id": "someone-else", **RED_FLAG}, "Patient/patient-1", "$.prefetch.questionnaireResponse.item[linkId=patient_id]"),
    ({"patient_id": "someone-else", **RED_FLAG}, None, "$.prefetch.questionnaireResponse.item[linkId=patient_id]"),
    (RED_FLAG, "Patient/someone-else", "$.prefetch.questionnaireResponse.subject.reference"),
    ({"patient_id": "patient-1", **RED_FLAG}, "Patient/someone-else", "$.prefetch.questionnaireResponse.subject.reference"),
], ids=["answer-differs", "answer-differs-no-subject", "subject-differs", "subject-differs-answer-same"])
def test_a_questionnaire_response_for_another_patient_is_400(server: Server, keys: Keys, patient: dict[str, Any],
                                                             subject: str | None, path: str) -> None:
    resource = _qr(patient, subject)
    for value in (resource, {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": resource}]}):
        response = _call(server, keys, hook_request(value, key="questionnaireResponse"))
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "patient-mismatch" and response.json()["path"] == path
        assert "cards" not in response.json()


def test_a_questionnaire_response_for_this_patient_gets_its_cards(server: Server, keys: Keys) -> None:
    patient = {"patient_id": "patient-1", **RED_FLAG}
    response = _call(server, keys, hook_request(_qr(patient), key="questionnaireResponse"))
    assert response.status_code == 200, response.text
    assert response.json() == RULES.evaluate(patient).to_cds_hooks()
    assert response.json()["cards"][0]["indicator"] == "critical"


# ---------------------------------------------------------------- the web pages take no token: off with auth on


@pytest.mark.parametrize("method, path", [("GET", "/"), ("GET", "/rulebook"), ("GET", "/static/try.js"),
                                          ("POST", "/try/evaluate")])
def test_with_auth_on_and_the_default_config_the_web_pages_are_not_served(server: Server, keys: Keys, method: str,
                                                                          path: str) -> None:
    body = json.dumps({"red_flags": {"significant_leg_weakness": True}}).encode() if method == "POST" else None
    response = httpx.request(method, _url(server, path), content=body)
    assert response.status_code == 404, response.text
    assert "red_flags" not in response.text and "result" not in response.json()
    assert "web pages" not in server.stderr()  # no warning: nothing unauthenticated is served
    cards = _call(server, keys, hook_request({"red_flags": {"significant_leg_weakness": True}})).json()["cards"]
    assert cards[0]["indicator"] == "critical"  # the hook itself still works


# ---------------------------------------------------------------- authentication


def _bearer_status(server: Server, bearer: str, path: str = f"/cds-services/{SERVICE}") -> httpx.Response:
    return httpx.post(_url(server, path), json=hook_request({"red_flags": {"significant_leg_weakness": True}}),
                      headers={"Authorization": f"Bearer {bearer}"})


@pytest.mark.parametrize("alg, kid", [("RS384", KID_RSA), ("RS256", KID_RSA), ("PS384", KID_RSA), ("ES384", KID_EC)])
def test_asymmetric_tokens_are_accepted(server: Server, keys: Keys, alg: str, kid: str) -> None:
    url = _url(server, f"/cds-services/{SERVICE}")
    assert _bearer_status(server, token(keys, url, alg=alg, kid=kid)).status_code == 200


def test_the_aud_may_be_a_list_holding_the_url(server: Server, keys: Keys) -> None:
    url = _url(server, f"/cds-services/{SERVICE}")
    assert _bearer_status(server, token(keys, url, claims={"aud": [url]})).status_code == 200


def _bad_tokens(server: Server, keys: Keys) -> dict[str, tuple[str, str]]:
    url = _url(server, f"/cds-services/{SERVICE}")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "alg-none": (unsigned_token(url), "alg 'none' is refused"),
        "hs256": (jwt.encode({"iss": ISS, "aud": url, "exp": 2**31, "iat": 0, "jti": "x"}, "shared-secret-0123456789abcdef-0123456789",
                             algorithm="HS256", headers={"kid": KID_RSA}), "alg 'HS256' is refused"),
        "expired": (token(keys, url, exp_in=-120, iat_ago=300), "expired"),
        "wrong-aud": (token(keys, "http://127.0.0.1:1/cds-services/" + SERVICE), "is not the URL called"),
        "discovery-aud-on-service": (token(keys, _url(server, "/cds-services")), "is not the URL called"),
        "unknown-iss": (token(keys, url, iss="https://evil.example.org"), "not a trusted CDS client"),
        "bad-signature": (token(keys, url, key=other), "signature does not verify"),
        "unknown-kid": (token(keys, url, kid="nobody"), "no key with kid"),
        "no-kid": (token(keys, url, kid=None), "no kid"),
        "jku-not-allowed": (token(keys, url, headers={"jku": "https://evil.example.org/jwks.json"}), "not on the allowlist"),
        "too-long-lived": (token(keys, url, exp_in=86400), "lives longer"),
        "issued-in-future": (token(keys, url, iat_ago=-3600), "not valid yet"),
        "no-jti": (token(keys, url, claims={"jti": None}), "jti"),
        "not-bearer": ("", "Authorization"),
    }


@pytest.mark.parametrize("case", ["alg-none", "hs256", "expired", "wrong-aud", "discovery-aud-on-service", "unknown-iss",
                                  "bad-signature", "unknown-kid", "no-kid", "jku-not-allowed", "too-long-lived",
                                  "issued-in-future", "no-jti"])
def test_bad_tokens_are_401_with_a_reason(server: Server, keys: Keys, case: str) -> None:
    bearer, reason = _bad_tokens(server, keys)[case]
    response = _bearer_status(server, bearer)
    assert response.status_code == 401, response.text
    assert reason in response.json()["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "cards" not in response.json()


def test_no_token_is_401(server: Server) -> None:
    response = httpx.post(_url(server, f"/cds-services/{SERVICE}"), json=hook_request({}))
    assert response.status_code == 401 and "no Authorization header" in response.json()["message"]


def test_a_replayed_jti_is_401(server: Server, keys: Keys) -> None:
    url = _url(server, f"/cds-services/{SERVICE}")
    bearer = token(keys, url)
    assert _bearer_status(server, bearer).status_code == 200
    replay = _bearer_status(server, bearer)
    assert replay.status_code == 401 and "already used" in replay.json()["message"]


# ---------------------------------------------------------------- CORS


def test_cors_only_for_the_configured_origins(server: Server, keys: Keys) -> None:
    url = _url(server, "/cds-services")
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    allowed = httpx.options(url, headers={"Origin": ALLOWED_ORIGIN, **preflight})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    refused = httpx.options(url, headers={"Origin": "https://evil.example.org", **preflight})
    assert "access-control-allow-origin" not in refused.headers
    simple = httpx.get(url, headers={"Origin": "https://evil.example.org", "Authorization": f"Bearer {token(keys, url)}"})
    assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers
    ok = httpx.get(url, headers={"Origin": ALLOWED_ORIGIN, "Authorization": f"Bearer {token(keys, url)}"})
    assert ok.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


# ---------------------------------------------------------------- concurrency


def test_64_parallel_calls_give_the_same_cards_as_sequential_ones(server: Server, keys: Keys) -> None:
    documents = [json.loads(p.read_text()) for p in PATIENTS]
    bodies = [hook_request(d, patient_id=d.get("patient_id", "p-1")) for d in (documents * 3)[:64]]
    sequential = [_call(server, keys, body).content for body in bodies]
    with ThreadPoolExecutor(max_workers=64) as pool:
        parallel = list(pool.map(lambda body: _call(server, keys, body), bodies))
    assert [r.status_code for r in parallel] == [200] * 64
    assert [r.content for r in parallel] == sequential
    assert [json.loads(c) for c in sequential] == [RULES.evaluate(d).to_cds_hooks() for d in (documents * 3)[:64]]


# ---------------------------------------------------------------- feedback


def _feedback(server: Server, keys: Keys, body: Any) -> httpx.Response:
    path = f"/cds-services/{SERVICE}/feedback"
    return httpx.post(_url(server, path), json=body, headers={"Authorization": f"Bearer {token(keys, _url(server, path))}"})


def test_feedback_is_stored_without_patient_data_and_reported_per_rule(server: Server, keys: Keys) -> None:
    patient = {"patient_id": SECRET_PATIENT_ID, "red_flags": {"significant_leg_weakness": True}}
    cards = _call(server, keys, hook_request(patient, patient_id=SECRET_PATIENT_ID)).json()["cards"]
    assert len(cards) >= 1
    first = cards[0]
    reason = {"system": "https://ehr.example.org/override-reasons", "code": "already-referred", "display": "Already referred"}
    body = {"feedback": [
        {"card": first["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-27T01:00:00Z",
         "overrideReason": {"reason": reason, "userComment": SECRET_COMMENT}},
        {"card": first["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-27T01:05:00Z"},
        {"card": first["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-27T01:06:00Z"},
    ]}
    response = _feedback(server, keys, body)
    assert response.status_code == 200 and response.json() == {"stored": 3}

    db = server.tmp / "feedback.sqlite3"
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT card_uuid, rule_id, rule_set_digest, outcome, reason_code, user_comment "
                                  "FROM feedback WHERE card_uuid = ? ORDER BY id", (first["uuid"],)).fetchall()
    rule = first["extension"]["invalid.cdss"]["rule"]
    assert rows == [(first["uuid"], rule, RULES.info.digest, "overridden", "already-referred", None),
                    (first["uuid"], rule, RULES.info.digest, "overridden", None, None),
                    (first["uuid"], rule, RULES.info.digest, "accepted", None, None)]
    for file in db.parent.glob("feedback.sqlite3*"):  # the database, its WAL and shared memory
        content = file.read_bytes()
        assert SECRET_PATIENT_ID.encode() not in content and SECRET_COMMENT.encode() not in content

    report = subprocess.run([sys.executable, "-c", "from cdss.cli import main; main()", "feedback", "report", "--db", str(db),
                             "--format", "json"], capture_output=True, text=True, check=True)
    entry = next(e for e in json.loads(report.stdout)["rules"] if e["rule"] == rule)
    assert (entry["overridden"], entry["accepted"]) == (2, 1)
    assert entry["reasons"] == [{"reason": "(no reason given)", "count": 1},
                                {"reason": "Already referred [already-referred]", "count": 1}]
    text = subprocess.run([sys.executable, "-c", "from cdss.cli import main; main()", "feedback", "report", "--db", str(db)],
                          capture_output=True, text=True, check=True).stdout
    assert f"{rule}: overridden 2 of 3" in text and "Already referred [already-referred]" in text


@pytest.mark.parametrize("body, path", [
    ({}, "$.feedback"),
    ({"feedback": []}, "$.feedback"),
    ({"feedback": [{"card": "x", "outcome": "overridden", "outcomeTimestamp": "2026-11-27T01:00:00Z"}]}, "$.feedback[0].card"),
    ({"feedback": [{"card": str(uuid.uuid4()), "outcome": "ignored", "outcomeTimestamp": "2026-11-27T01:00:00Z"}]},
     "$.feedback[0].outcome"),
    ({"feedback": [{"card": str(uuid.uuid4()), "outcome": "accepted", "outcomeTimestamp": "yesterday"}]},
     "$.feedback[0].outcomeTimestamp"),
], ids=["no-feedback", "empty", "bad-card", "bad-outcome", "bad-timestamp"])
def test_invalid_feedback_is_400(server: Server, keys: Keys, body: Any, path: str) -> None:
    response = _feedback(server, keys, body)
    assert response.status_code == 400 and response.json()["path"] == path


def test_feedback_needs_a_token_for_its_own_url(server: Server, keys: Keys) -> None:
    url = _url(server, f"/cds-services/{SERVICE}/feedback")
    bearer = token(keys, _url(server, f"/cds-services/{SERVICE}"))  # a token for the hook, not for feedback
    response = httpx.post(url, json={"feedback": []}, headers={"Authorization": f"Bearer {bearer}"})
    assert response.status_code == 401


# ---------------------------------------------------------------- logs (keep last: it reads everything above)


def test_logs_hold_no_patient_data_only_the_access_fields(server: Server, keys: Keys) -> None:
    hook_instance = str(uuid.uuid4())
    bad = hook_request({"patient_id": SECRET_PATIENT_ID, "red_flags": {"significant_leg_weakness": SECRET_PATIENT_ID}},
                       patient_id=SECRET_PATIENT_ID)
    assert _call(server, keys, bad).status_code == 400
    assert _call(server, keys, hook_request({"patient_id": SECRET_PATIENT_ID}, patient_id=SECRET_PATIENT_ID,
                                            hook_instance=hook_instance)).status_code == 200
    expected = f"hookInstance={hook_instance} service={SERVICE} status=200 latency_ms="
    deadline = time.monotonic() + 10  # the line is written just after the response is sent
    while expected not in server.stderr() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.stderr()
    assert SECRET_PATIENT_ID not in log and SECRET_COMMENT not in log
    assert "Practitioner/example" not in log and "red_flags" not in log
    assert expected in log
    access = [line for line in log.splitlines() if "cdss.service.access" in line]
    assert access and all(line.split(": ", 1)[1].split(" ")[0].startswith("hookInstance=") for line in access)
    assert "status=401" in log and "status=413" in log and "status=412" in log
