"""The service's parts that a running server cannot be made to show: a failing evaluation (must be a 500,
never an empty card list), configuration errors, `cdss serve` refusing to start, the insecure warning,
and two workers sharing one replay cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

import cdss
from cdss.cli import cli
from cdss.errors import EngineError
from cdss.ruleset import RuleSet
from cdss.service import create_app, load_config
from cdss.service.config import ConfigError, ServiceConfig

from .service_helpers import ISS, Keys, Server, hook_request, token

RULES = cdss.load_rules()
SERVICE = RULES.info.id


class _Failing(RuleSet):
    """A rule set whose evaluation fails as a broken engine would."""

    def __init__(self, error: Exception) -> None:
        super().__init__(RULES.loaded)
        self._error = error

    def evaluate(self, patient: Any, *, trace: bool = False) -> Any:
        raise self._error


@pytest.mark.parametrize("error", [EngineError("durable-rules fired rules that do not exist"), RuntimeError("boom")])
def test_a_failed_evaluation_is_500_and_never_an_empty_card_list(tmp_path: Path, error: Exception) -> None:
    app = create_app(_Failing(error), ServiceConfig(auth=False, feedback_db=tmp_path / "f.sqlite3"))
    with TestClient(app) as client:
        response = client.post(f"/cds-services/{SERVICE}", json=hook_request({"red_flags": {}}))
    assert response.status_code == 500
    assert "cards" not in response.json() and "not an all-clear" in response.json()["message"]


def test_the_web_pages_router_is_optional(tmp_path: Path) -> None:
    app = create_app(RULES, ServiceConfig(auth=False, feedback_db=tmp_path / "f.sqlite3", web_pages=True))
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("text, message", [
    ("", "audience_base_url is required"),
    ('audience_base_url = "https://cds.example.org"', "no [[issuers]]"),
    ('audience_base_url = "cds.example.org"\n', "absolute http(s) URL"),
    ('audience_base_url = "https://cds.example.org"\n[[issuers]]\niss = "x"\n', "give jwks_file and/or jku"),
    ('audience_base_url = "https://cds.example.org"\n[[issuers]]\niss = "x"\njwks_file = "missing.json"\n', "cannot read"),
    ('cors_origins = ["*"]\n', "'*' is refused"),
    ('colour = "blue"\n', "unknown setting(s) colour"),
    ("this is = not toml [", "not valid TOML"),
])
def test_config_errors_name_the_setting(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "service.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert message in str(raised.value)


def test_a_private_key_in_the_jwks_file_is_refused(tmp_path: Path) -> None:
    keys = Keys()
    jwks = keys.jwks()
    jwks["keys"][0]["d"] = "private"
    (tmp_path / "k.json").write_text(json.dumps(jwks))
    (tmp_path / "s.yaml").write_text(f"audience_base_url: https://cds.example.org\nissuers:\n- iss: {ISS}\n  jwks_file: k.json\n")
    with pytest.raises(ConfigError, match="PRIVATE key"):
        load_config(tmp_path / "s.yaml")


def test_serve_refuses_to_start_without_auth_configuration() -> None:
    result = CliRunner().invoke(cli, ["serve", "--port", "1"])
    assert result.exit_code == 2
    assert "audience_base_url is required" in result.output and "--insecure-no-auth" in result.output


def test_feedback_report_without_a_database_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["feedback", "report", "--db", str(tmp_path / "none.sqlite3")])
    assert result.exit_code == 2 and "no such feedback database" in result.output


def test_two_workers_without_auth_warn_at_start_and_answer(tmp_path: Path) -> None:
    server = Server(["--workers", "2", "--insecure-no-auth"], tmp_path)
    try:
        patient = {"red_flags": {"significant_leg_weakness": True}}
        responses = [httpx.post(f"{server.base}/cds-services/{SERVICE}", json=hook_request(patient)) for _ in range(8)]
        assert [r.json() for r in responses] == [RULES.evaluate(patient).to_cds_hooks()] * 8
        assert "WARNING: authentication is OFF" in server.stderr()
        state = tmp_path / "state" / "cdss"  # the default: $XDG_STATE_HOME/cdss, private to the user
        assert (state / "feedback.sqlite3").is_file() and (state.stat().st_mode & 0o777) == 0o700
        assert not list(tmp_path.glob("*.sqlite3"))  # nothing in the working directory
        preflight = httpx.options(f"{server.base}/cds-services", headers={
            "Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers  # no cors_origins: no CORS at all
    finally:
        server.stop()


def test_two_workers_share_the_replay_cache(tmp_path: Path) -> None:
    keys = Keys()
    (tmp_path / "jwks.json").write_text(json.dumps(keys.jwks()))
    from .service_helpers import free_port

    port = free_port()
    (tmp_path / "s.json").write_text(json.dumps({"audience_base_url": f"http://127.0.0.1:{port}",
                                                 "issuers": [{"iss": ISS, "jwks_file": "jwks.json"}]}))
    server = Server(["--workers", "2", "--config", str(tmp_path / "s.json")], tmp_path, port=port)
    try:
        url = f"{server.base}/cds-services"
        bearer = token(keys, url)
        statuses = [httpx.get(url, headers={"Authorization": f"Bearer {bearer}"}, timeout=10).status_code for _ in range(6)]
        assert statuses == [200] + [401] * 5  # new connections: uvicorn's workers take turns accepting them
        assert "WARNING" not in server.stderr()
    finally:
        server.stop()


def test_an_unexpected_failure_outside_evaluation_is_a_json_500(tmp_path: Path) -> None:
    app = create_app(RULES, ServiceConfig(auth=False, feedback_db=tmp_path / "f.sqlite3"))
    app.state.store.close()  # the feedback database goes away under the running app
    with TestClient(app) as client:
        response = client.post(f"/cds-services/{SERVICE}/feedback", json={"feedback": [
            {"card": "0b7b4e1a-5b1f-5f1e-9c51-0a6c1f7b2e11", "outcome": "accepted", "outcomeTimestamp": "2026-11-27T01:00:00Z"}]})
    assert response.status_code == 500 and response.json()["error"] == "internal-error"


def test_with_a_fhir_adapter_the_questionnaire_response_is_used_and_advertised(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Until cdss.fhir (issue 10) merges, a stand-in with its documented signature shows the wiring."""
    import types

    seen: list[Any] = []

    def patient_from_questionnaire_response(doc: Any, rules: Any) -> Any:
        seen.append(doc["id"])
        if doc["id"] == "bad":
            raise cdss.PatientDataError("item[linkId=red_flags.significant_leg_weakness]", "a LOINC answer", "a string")
        return {"red_flags": {"significant_leg_weakness": True}}

    monkeypatch.setitem(sys.modules, "cdss.fhir", types.SimpleNamespace(
        patient_from_questionnaire_response=patient_from_questionnaire_response))
    app = create_app(RULES, ServiceConfig(auth=False, feedback_db=tmp_path / "f.sqlite3"))
    qr = {"resourceType": "QuestionnaireResponse", "id": "qr-1", "subject": {"reference": "Patient/p-1"}}
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": qr}]}
    expected = RULES.evaluate({"red_flags": {"significant_leg_weakness": True}}).to_cds_hooks()
    with TestClient(app) as client:
        service = client.get("/cds-services").json()["services"][0]
        assert "questionnaireResponse" in service["prefetch"]
        for value in (qr, bundle):
            response = client.post(f"/cds-services/{SERVICE}", json=hook_request(value, patient_id="p-1",
                                                                               key="questionnaireResponse"))
            assert response.json() == expected
        other = client.post(f"/cds-services/{SERVICE}", json=hook_request(qr, patient_id="p-2", key="questionnaireResponse"))
        assert other.status_code == 400 and other.json()["error"] == "patient-mismatch"
        bad = client.post(f"/cds-services/{SERVICE}", json=hook_request({**qr, "id": "bad"}, patient_id="p-1",
                                                                         key="questionnaireResponse"))
        assert bad.status_code == 400 and bad.json()["path"] == "item[linkId=red_flags.significant_leg_weakness]"
        empty = client.post(f"/cds-services/{SERVICE}", json=hook_request({"resourceType": "Bundle", "entry": []},
                                                                           patient_id="p-1", key="questionnaireResponse"))
        assert empty.status_code == 412
        both = hook_request(qr, patient_id="p-1", key="questionnaireResponse")
        both["prefetch"]["cdssPatient"] = {}
        assert client.post(f"/cds-services/{SERVICE}", json=both).json()["error"] == "ambiguous-prefetch"
    assert seen == ["qr-1", "qr-1", "qr-1", "bad"]  # converted first, then the one patient check


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_a_usage_error_not_exit_3(tmp_path: Path, workers: str) -> None:
    import socket
    import subprocess

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-c", "from cdss.cli import main; main()", "serve", "--insecure-no-auth",
                               "--port", str(port), "--workers", workers], check=False, cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"could not start on 127.0.0.1:{port}" in done.stderr


def test_keys_from_an_allowlisted_jku_url(tmp_path: Path) -> None:
    """A client that publishes its JWK Set at a URL: the jku header must be on the allowlist, then the key is fetched."""
    import http.server
    import threading

    from cdss.service.config import Issuer

    keys = Keys()
    payload = json.dumps(keys.jwks()).encode()

    class JwksHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = (200, payload) if self.path == "/jwks.json" else (404, b"{}")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    jwks_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), JwksHandler)
    threading.Thread(target=jwks_server.serve_forever, daemon=True).start()
    jku = f"http://127.0.0.1:{jwks_server.server_address[1]}/jwks.json"
    try:
        config = ServiceConfig(audience_base_url="https://cds.example.org", issuers=(Issuer(ISS, None, (jku,)),),
                               feedback_db=tmp_path / "f.sqlite3")
        with TestClient(create_app(RULES, config)) as client:
            def status(bearer: str) -> Any:
                return client.get("/cds-services", headers={"Authorization": f"Bearer {bearer}"})

            aud = "https://cds.example.org/cds-services"
            assert status(token(keys, aud, headers={"jku": jku})).status_code == 200
            assert status(token(keys, aud)).status_code == 200  # no jku header: the issuer's configured URL
            assert status(token(keys, aud, alg="ES384", kid="ehr-ec-1", headers={"jku": jku})).status_code == 200
            other = status(token(keys, aud, headers={"jku": jku.replace("jwks.json", "other.json")}))
            assert other.status_code == 401 and "not on the allowlist" in other.json()["message"]
            unknown = status(token(keys, aud, kid="rotated-away", headers={"jku": jku}))
            assert unknown.status_code == 401 and "no usable key" in unknown.json()["message"]
    finally:
        jwks_server.shutdown()


def test_to_cds_hooks_omits_a_detail_a_parameter_renders_empty(tmp_path: Path) -> None:
    """CDS Hooks forbids "" values: an optional text that renders empty is left out, the topic has a system."""
    from .helpers import patient, write_rule_set

    body = """\
parameters:
  local_note:
    type: string
    default: ""
    origin: policy
    guidance: [G-SIGN-1]
    description: An optional local note shown on the card.
rules:
  - id: note-card
    title: note-card
    category: sign
    indicator: info
    urgency: self-care
    priority: 10
    guidance: [G-SIGN-1]
    source: {section: Signs That Glute Weakness Is Contributing to Pain, quote: pain that intensifies}
    when: {field: back_pain.present, is: true}
    then:
      card: {summary: "A card", detail: "{{ params.local_note }}"}
"""
    rules = cdss.load_rules(write_rule_set(tmp_path, body))
    def rule_card(assessment: cdss.Assessment) -> dict:
        return next(c for c in assessment.to_cds_hooks()["cards"] if c["source"]["topic"]["code"] == "note-card")

    card = rule_card(rules.evaluate(patient(back_pain={"present": True})))
    assert "detail" not in card and card["summary"] == "A card"
    assert card["source"]["topic"] == {"system": "https://cdss.invalid/rules", "code": "note-card",
                                       "display": "Signs That Glute Weakness Is Contributing to Pain"}
    with_note = rules.with_parameters({"local_note": "Call the clinic"}).evaluate(patient(back_pain={"present": True}))
    assert rule_card(with_note)["detail"] == "Call the clinic"


def _hook_client(tmp_path: Path) -> TestClient:
    return TestClient(create_app(RULES, ServiceConfig(auth=False, feedback_db=tmp_path / "f.sqlite3")))


def test_property_any_valid_patient_gets_exactly_its_to_cds_hooks_cards(tmp_path: Path) -> None:
    from hypothesis import given

    from .strategies import valid_patients

    with _hook_client(tmp_path) as client:
        @given(valid_patients())
        def check(patient: dict[str, Any]) -> None:
            response = client.post(f"/cds-services/{SERVICE}",
                                   json=hook_request(patient, patient_id=patient.get("patient_id") or "p-1"))
            if patient.get("patient_id") == "":  # an empty patient_id cannot equal a (non-empty) context.patientId
                assert response.status_code == 400
                return
            assert response.status_code == 200, response.text
            assert response.json() == RULES.evaluate(patient).to_cds_hooks()

        check()


def test_property_anything_in_cdss_patient_is_cards_or_a_400_never_an_empty_200_by_mistake(tmp_path: Path) -> None:
    """Whatever arrives under prefetch.cdssPatient: 200 exactly when evaluate() succeeds (with its cards), else 400
    with evaluate()'s own path / expected / found."""
    from hypothesis import given
    from hypothesis import strategies as st

    json_values = st.recursive(st.none() | st.booleans() | st.integers(-5, 60) | st.text(max_size=5),
                               lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=3), max_leaves=8)
    sections = st.sampled_from(["red_flags", "back_pain", "exercise", "symptoms", "observations", "risk_factors", "x"])
    documents = json_values | st.dictionaries(sections, json_values, max_size=3)

    with _hook_client(tmp_path) as client:
        @given(documents)
        def check(document: Any) -> None:
            body = hook_request(document)
            if isinstance(document, dict) and "patient_id" in document:
                body["context"]["patientId"] = document["patient_id"] if isinstance(document["patient_id"], str) and \
                    document["patient_id"] else "p-1"
            response = client.post(f"/cds-services/{SERVICE}", json=body)
            if document is None:  # a null prefetch value is the spec's "could not prefetch"
                assert response.status_code == 412
                return
            try:
                expected = RULES.evaluate(document).to_cds_hooks()
            except cdss.PatientDataError as error:
                if response.status_code == 400 and response.json()["error"] == "patient-mismatch":
                    return
                assert response.status_code == 400, response.text
                assert (response.json()["path"], response.json()["expected"], response.json()["found"]) == \
                    (error.path, error.expected, error.found)
                return
            if response.status_code == 400:
                assert response.json()["error"] == "patient-mismatch"
                return
            assert response.status_code == 200 and response.json() == expected

        check()


def test_web_pages_true_with_auth_on_serves_them_and_warns_at_start(tmp_path: Path) -> None:
    keys = Keys()
    (tmp_path / "ehr.jwks.json").write_text(json.dumps(keys.jwks()))
    from .service_helpers import free_port

    port = free_port()
    (tmp_path / "service.toml").write_text(f'audience_base_url = "http://127.0.0.1:{port}"\nweb_pages = true\n'
                                           f'feedback_db = "f.sqlite3"\n[[issuers]]\niss = "{ISS}"\njwks_file = "ehr.jwks.json"\n')
    server = Server(["--config", str(tmp_path / "service.toml")], tmp_path, port=port)
    try:
        assert httpx.get(f"{server.base}/").status_code == 200
        assert "web pages (/, /rulebook, /try/evaluate) take NO token" in server.stderr()
        url = f"{server.base}/cds-services/{SERVICE}"
        assert httpx.post(url, json=hook_request({})).status_code == 401  # the hook still needs its token
        assert httpx.post(url, json=hook_request({}), headers={"Authorization": f"Bearer {token(keys, url)}"}).status_code == 200
    finally:
        server.stop()


def test_the_pages_default_to_off_with_auth_and_on_without(tmp_path: Path) -> None:
    assert ServiceConfig(auth=True).pages_served is False
    assert ServiceConfig(auth=False).pages_served is True
    assert ServiceConfig(auth=False, web_pages=False).pages_served is False
    assert ServiceConfig(auth=True, web_pages=True).pages_served is True
    app = create_app(RULES, ServiceConfig(auth=False, feedback_db=tmp_path / "f.sqlite3", web_pages=False))
    with TestClient(app) as client:
        assert client.get("/").status_code == 404


def test_feedback_report_reads_the_per_user_state_file_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cdss.service.config import default_feedback_db
    from cdss.service.feedback import FeedbackStore

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    path = default_feedback_db()
    assert path == tmp_path / "state" / "cdss" / "feedback.sqlite3"
    runner = CliRunner()
    missing = runner.invoke(cli, ["feedback", "report"])
    assert missing.exit_code == 2 and str(path) in missing.output
    assert "XDG_STATE_HOME" in runner.invoke(cli, ["feedback", "report", "--help"]).output
    assert "XDG_STATE_HOME" in runner.invoke(cli, ["serve", "--help"]).output
    FeedbackStore(path).close()  # what cdss serve opens: the directory is made private to the user
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    assert runner.invoke(cli, ["feedback", "report"]).exit_code == 0
    monkeypatch.setenv("XDG_STATE_HOME", "relative/dir")  # the XDG spec: a relative path is ignored
    assert default_feedback_db() == Path.home() / ".local" / "state" / "cdss" / "feedback.sqlite3"


class _Slow(RuleSet):
    """A rule set whose evaluation blocks until released, as a slow engine call would."""

    def __init__(self) -> None:
        super().__init__(RULES.loaded)
        import threading

        self.started = threading.Event()
        self.release = threading.Event()

    def evaluate(self, patient: Any, *, trace: bool = False) -> Any:
        self.started.set()
        self.release.wait(timeout=60)
        return RULES.evaluate(patient, trace=trace)


@pytest.mark.parametrize("path", [f"/cds-services/{SERVICE}", "/try/evaluate"])
def test_a_slow_evaluation_does_not_stall_healthz(tmp_path: Path, path: str) -> None:
    """The evaluation runs off the event loop: while one is in flight, /healthz still answers."""
    from concurrent.futures import ThreadPoolExecutor

    rules = _Slow()
    patient = {"red_flags": {"significant_leg_weakness": True}}
    app = create_app(rules, ServiceConfig(auth=False, feedback_db=tmp_path / "f.sqlite3"))
    with TestClient(app) as client, ThreadPoolExecutor(1) as pool:
        body = hook_request(patient) if path.startswith("/cds") else patient
        pending = pool.submit(client.post, path, json=body)
        assert rules.started.wait(timeout=60)
        try:
            assert client.get("/healthz").status_code == 200
            assert not pending.done()  # answered while the evaluation was still blocked, not after it
        finally:
            rules.release.set()
        assert pending.result(timeout=60).status_code == 200


def test_the_try_page_500_says_nothing_was_evaluated_and_is_no_all_clear(tmp_path: Path) -> None:
    app = create_app(_Failing(EngineError("boom")), ServiceConfig(auth=False, feedback_db=tmp_path / "f.sqlite3"))
    with TestClient(app) as client:
        response = client.post("/try/evaluate", json={"red_flags": {}})
    assert response.status_code == 500 and "result" not in response.json()
    message = response.json()["error"]["message"]
    assert "nothing was evaluated" in message and "NOT an all-clear" in message
