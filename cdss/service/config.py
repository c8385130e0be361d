"""ServiceConfig: who may call the CDS Hooks service and where it keeps its feedback, read from one file.

The file is TOML, YAML or JSON (by extension). Relative paths in it are relative to the file,
so a deployment directory can be moved as a whole. Every mistake is a `ConfigError` naming the
file and the key, raised before the server starts: a service that runs with a half-read trust
list would either refuse every EHR or, worse, trust the wrong one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import CdssError

def default_feedback_db() -> Path:
    """The per-user state file ($XDG_STATE_HOME/cdss/feedback.sqlite3, else ~/.local/state/...): never the
    working directory, where a file of card uuids and token ids would be left behind or committed."""
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"  # XDG: relative is ignored
    return base / "cdss" / "feedback.sqlite3"


class ConfigError(CdssError):
    """The service configuration file is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class Issuer:
    """One trusted CDS client: its `iss`, and where its public keys come from (a JWKS file and/or jku URLs)."""

    iss: str
    jwks: dict[str, Any] | None = None
    jku: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServiceConfig:
    """Everything `create_app` needs besides the rules; the defaults are the safe ones (auth on, no CORS)."""

    audience_base_url: str | None = None
    issuers: tuple[Issuer, ...] = ()
    auth: bool = True
    cors_origins: tuple[str, ...] = ()
    feedback_db: Path = field(default_factory=default_feedback_db)
    web_pages: bool | None = None  # None: the default, served only when authentication is off (see pages_served)
    store_user_comments: bool = False
    max_token_lifetime_seconds: int = 600
    clock_skew_seconds: int = 30
    max_body_bytes: int = 1024 * 1024

    @property
    def pages_served(self) -> bool:
        """Whether the web pages (/, /rulebook, /try/evaluate, /static) are mounted. They take no token, so
        with authentication on they are off unless the config says `web_pages = true` explicitly."""
        return self.web_pages if self.web_pages is not None else not self.auth

    def issuer(self, iss: str) -> Issuer | None:
        for issuer in self.issuers:
            if issuer.iss == iss:
                return issuer
        return None

    def check(self) -> None:
        """Refuse a configuration that cannot authenticate anyone while auth is on."""
        if not self.auth:
            return
        if not self.audience_base_url:
            raise ConfigError("audience_base_url is required when authentication is on: a token's aud must equal "
                              "the exact URL called (e.g. https://cds.example.org), and cdss cannot trust the "
                              "Host header to build it; or start with --insecure-no-auth for a local trial")
        if not self.issuers:
            raise ConfigError("no [[issuers]] configured: with authentication on, every request would be refused; "
                              "add each trusted CDS client (iss plus jwks_file and/or jku)")


_KNOWN = {"audience_base_url", "issuers", "cors_origins", "feedback_db", "web_pages", "store_user_comments",
          "max_token_lifetime_seconds", "clock_skew_seconds"}
_ISSUER_KNOWN = {"iss", "jwks_file", "jku"}


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        if suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        if suffix == ".json":
            return json.loads(text)
    except Exception as error:  # noqa: BLE001 - each parser has its own error type; all mean "fix the file"
        raise ConfigError(f"{path}: not valid {suffix[1:].upper()}: {' '.join(str(error).split())[:200]}") from None
    raise ConfigError(f"{path}: unknown config format '{suffix}' (use .toml, .yaml, .yml or .json)")


def _url(where: str, value: Any) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
        raise ConfigError(f"{where}: expected an absolute http(s) URL, found {value!r}"[:300])
    return value


def _load_jwks(where: str, path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{where}: cannot read {path} ({error.strerror or error})") from None
    except ValueError as error:
        raise ConfigError(f"{where}: {path} is not JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list) or not data["keys"]:
        raise ConfigError(f"{where}: {path} is not a JWK Set (expected an object with a non-empty 'keys' array)")
    for index, key in enumerate(data["keys"]):
        if not isinstance(key, dict) or not isinstance(key.get("kid"), str) or not key["kid"]:
            raise ConfigError(f"{where}: {path}: keys[{index}] has no 'kid' (CDS Hooks clients must name their keys)")
        if "d" in key:
            raise ConfigError(f"{where}: {path}: keys[{index}] holds a PRIVATE key ('d'); give only the public JWK Set")
    return data


def load_config(path: str | Path | None, *, auth: bool = True) -> ServiceConfig:
    """The configuration from a file (None: defaults); `auth=False` is `--insecure-no-auth`."""
    if path is None:
        config = ServiceConfig(auth=auth)
        config.check()
        return config
    path = Path(path)
    data = _read(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table/object of settings at the top level")
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(_KNOWN))})")
    base = path.parent
    values: dict[str, Any] = {"auth": auth}
    if "audience_base_url" in data:
        values["audience_base_url"] = _url(f"{path}: audience_base_url", data["audience_base_url"]).rstrip("/")
    issuers: list[Issuer] = []
    raw_issuers = data.get("issuers", [])
    if not isinstance(raw_issuers, list):
        raise ConfigError(f"{path}: issuers: expected a list of tables ([[issuers]] in TOML)")
    for index, raw in enumerate(raw_issuers):
        where = f"{path}: issuers[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a table with iss, jwks_file and/or jku")
        extra = sorted(set(raw) - _ISSUER_KNOWN)
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)} (known: iss, jwks_file, jku)")
        iss = raw.get("iss")
        if not isinstance(iss, str) or not iss:
            raise ConfigError(f"{where}: iss is required (the exact 'iss' claim of that client's tokens)")
        jwks = None
        if "jwks_file" in raw:
            if not isinstance(raw["jwks_file"], str):
                raise ConfigError(f"{where}: jwks_file: expected a path")
            jwks = _load_jwks(where, base / raw["jwks_file"])
        jku = raw.get("jku", [])
        if isinstance(jku, str):
            jku = [jku]
        if not isinstance(jku, list):
            raise ConfigError(f"{where}: jku: expected a list of URLs")
        jku_urls = tuple(_url(f"{where}: jku", u) for u in jku)
        if jwks is None and not jku_urls:
            raise ConfigError(f"{where} ({iss}): give jwks_file and/or jku, or no token of it can be verified")
        if any(i.iss == iss for i in issuers):
            raise ConfigError(f"{where}: iss {iss!r} is listed twice")
        issuers.append(Issuer(iss, jwks, jku_urls))
    values["issuers"] = tuple(issuers)
    origins = data.get("cors_origins", [])
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise ConfigError(f"{path}: cors_origins: expected a list of origins like \"https://app.example.org\"")
    if "*" in origins:
        raise ConfigError(f"{path}: cors_origins: '*' is refused; list each origin that may call the service")
    values["cors_origins"] = tuple(o.rstrip("/") for o in origins)
    if "feedback_db" in data:
        if not isinstance(data["feedback_db"], str) or not data["feedback_db"]:
            raise ConfigError(f"{path}: feedback_db: expected a file path")
        values["feedback_db"] = base / data["feedback_db"]
    for flag in ("web_pages", "store_user_comments"):
        if flag in data:
            if not isinstance(data[flag], bool):
                raise ConfigError(f"{path}: {flag}: expected true or false, found {data[flag]!r}"[:200])
            values[flag] = data[flag]
    for number in ("max_token_lifetime_seconds", "clock_skew_seconds"):
        if number in data:
            value = data[number]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value > 86400:
                raise ConfigError(f"{path}: {number}: expected whole seconds between 0 and 86400, found {value!r}"[:200])
            values[number] = value
    config = ServiceConfig(**values)
    config.check()
    return config
