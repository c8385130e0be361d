"""Start the real `cdss serve` (uvicorn in a subprocess, free port) and sign CDS Hooks JWTs for it."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISS = "https://ehr.example.org"
KID_RSA = "ehr-rsa-1"
KID_EC = "ehr-ec-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Keys:
    """An RSA and an EC (P-384) key pair of one CDS client, and its public JWK Set."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP384R1())

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key, alg in ((KID_RSA, self.rsa, "RS384"), (KID_EC, self.ec, "ES384")):
            jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
            jwk.update({"kid": kid, "use": "sig"})
            keys.append(jwk)
        return {"keys": keys}


def token(keys: Keys, aud: str, *, alg: str = "RS384", kid: str | None = KID_RSA, iss: str = ISS,
          exp_in: float = 120, iat_ago: float = 0, jti: str | None = None, headers: dict[str, Any] | None = None,
          key: Any = None, claims: dict[str, Any] | None = None) -> str:
    """A CDS Hooks client JWT; every argument can be bent to make a bad one."""
    now = int(time.time())
    payload: dict[str, Any] = {"iss": iss, "aud": aud, "exp": now + exp_in, "iat": now - iat_ago,
                               "jti": jti or str(uuid.uuid4())}
    payload.update(claims or {})
    if key is None:
        key = keys.ec if alg.startswith("ES") else keys.rsa
    header = {"kid": kid} if kid is not None else {}
    header.update(headers or {})
    return jwt.encode(payload, key, algorithm=alg, headers=header)


def unsigned_token(aud: str, kid: str = KID_RSA) -> str:
    """alg: none, which the spec forbids (built by hand: PyJWT will not make one with a kid)."""
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    now = int(time.time())
    return (part({"alg": "none", "typ": "JWT", "kid": kid}) + "."
            + part({"iss": ISS, "aud": aud, "exp": now + 60, "iat": now, "jti": str(uuid.uuid4())}) + ".")


class Server:
    """`cdss serve ...` in a subprocess; stderr goes to a file the tests read (the logs)."""

    def __init__(self, args: list[str], tmp: Path, *, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.stderr_path = tmp / f"serve-{self.port}.stderr"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-c", "from cdss.cli import main; main()", "serve", "--port", str(self.port), *args]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self._stderr, cwd=tmp,
                                        env={**os.environ, "XDG_STATE_HOME": str(tmp / "state"), **(env or {})})
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"cdss serve exited {self.process.returncode}: {self.stderr()}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"cdss serve did not answer /healthz within 60 s: {self.stderr()}")
            time.sleep(0.1)

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stderr.close()


def hook_request(patient: Any, *, patient_id: str = "patient-1", hook_instance: str | None = None,
                 key: str = "cdssPatient") -> dict[str, Any]:
    body: dict[str, Any] = {"hook": "patient-view", "hookInstance": hook_instance or str(uuid.uuid4()),
                            "context": {"userId": "Practitioner/example", "patientId": patient_id}}
    if patient is not ...:
        body["prefetch"] = {key: patient}
    return body
