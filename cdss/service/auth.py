"""CDS Hooks client authentication: verify the signed JWT in `Authorization: Bearer` (CDS Hooks 2.0, "Trusting CDS Clients").

What is refused, each with a reason in the 401: no token; `alg: none` and every symmetric
algorithm (a shared secret would let the service forge the client; only RS*, ES* and PS* are
accepted); `typ` other than JWT; no `kid`; an `iss` not configured; a `jku` not on that issuer's
allowlist; a bad signature; a missing exp / iat / jti; an expired token, one issued in the future,
or one living longer than `max_token_lifetime_seconds` (which also bounds the replay cache); an
`aud` that is not the exact URL called; a `jti` already seen from that issuer (replay).

The order matters: nothing from the token is trusted before its signature is checked against a
key chosen by the configured `iss` (the unverified header and `iss` are used only to pick the key).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import jwt
from jwt import PyJWK, PyJWKClient

from .config import Issuer, ServiceConfig

ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512")
"""Asymmetric only (the spec forbids `none` and symmetric algorithms); ES384 and RS384 are the spec's recommendation."""


class AuthError(Exception):
    """A request that is not authenticated; `reason` goes into the 401 body (it never contains the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReplayCache(Protocol):
    def first_use(self, iss: str, jti: str, expires: float) -> bool: ...


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Verifier:
    """Verifies CDS Hooks JWTs against the configured issuers; one per app."""

    def __init__(self, config: ServiceConfig, replay: ReplayCache) -> None:
        self._config = config
        self._replay = replay
        self._jku_clients: dict[str, PyJWKClient] = {}
        self._file_keys: dict[tuple[str, str], Any] = {}  # (iss, kid) -> key object, built once (not per request)
        for issuer in config.issuers:
            for jwk in (issuer.jwks or {}).get("keys", []):
                try:
                    self._file_keys[(issuer.iss, jwk["kid"])] = PyJWK(jwk).key
                except jwt.PyJWTError:
                    pass  # refused with a reason when a token names it

    def _key(self, issuer: Issuer, header: dict[str, Any]) -> Any:
        kid = header["kid"]
        jku = header.get("jku")
        if jku is not None:
            if jku not in issuer.jku:
                raise AuthError(f"jku {_short(jku)} is not on the allowlist of issuer {_short(issuer.iss)}")
            urls: tuple[str, ...] = (jku,)
        elif issuer.jwks is not None:
            cached = self._file_keys.get((issuer.iss, kid))
            if cached is not None:
                return cached
            for jwk in issuer.jwks["keys"]:
                if jwk.get("kid") == kid:
                    try:
                        return PyJWK(jwk).key
                    except jwt.PyJWTError as error:
                        raise AuthError(f"the configured key {_short(kid)} cannot be used ({error})") from None
            raise AuthError(f"no key with kid {_short(kid)} in the JWK Set configured for issuer {_short(issuer.iss)}")
        else:
            urls = issuer.jku
        last = "no URL"
        for url in urls:
            client = self._jku_clients.get(url)
            if client is None:
                client = self._jku_clients[url] = PyJWKClient(url, cache_jwk_set=True, lifespan=300, timeout=5)
            try:
                return client.get_signing_key(kid).key
            except jwt.PyJWKClientError as error:
                last = str(error)
        raise AuthError(f"no usable key with kid {_short(kid)} at the JWK Set URL of issuer {_short(issuer.iss)} ({last})")

    def may_fetch(self, authorization: str | None) -> bool:
        """Whether verifying this token may fetch a JWK Set over the network (then the app runs it off the event loop)."""
        if not authorization or not self._jku_clients and not any(i.jku for i in self._config.issuers):
            return False
        try:
            header = jwt.get_unverified_header(authorization.partition(" ")[2].strip())
        except jwt.PyJWTError:
            return False
        if header.get("jku") is not None:
            return True
        return any(i.jwks is None and i.jku for i in self._config.issuers)

    def verify(self, authorization: str | None, audience: str) -> dict[str, Any]:
        """The verified claims of the bearer token, or AuthError; `audience` is the exact URL called."""
        if not authorization:
            raise AuthError("no Authorization header: CDS Hooks clients send 'Authorization: Bearer <JWT>'")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("the Authorization header must be 'Bearer <JWT>'")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthError("the bearer token is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise AuthError(f"alg {_short(alg)} is refused: only asymmetric signatures ({', '.join(ALLOWED_ALGORITHMS)}); "
                            "'none' and symmetric (HS*) algorithms are forbidden by CDS Hooks")
        if header.get("typ") not in ("JWT", "jwt"):
            raise AuthError(f"typ {_short(header.get('typ'))} is refused: CDS Hooks tokens have typ 'JWT'")
        if not isinstance(header.get("kid"), str) or not header["kid"]:
            raise AuthError("the JWT header has no kid: CDS Hooks clients name the key that signed the token")
        iss = unverified.get("iss")
        issuer = self._config.issuer(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthError(f"iss {_short(iss)} is not a trusted CDS client of this service")
        key = self._key(issuer, header)
        skew = self._config.clock_skew_seconds
        try:
            claims = jwt.decode(token, key, algorithms=[alg], audience=audience, issuer=issuer.iss, leeway=skew,
                                options={"require": ["iss", "aud", "exp", "iat", "jti"]})
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired (exp is in the past)") from None
        except jwt.InvalidAudienceError:
            raise AuthError(f"aud {_short(unverified.get('aud'))} is not the URL called ({audience})") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("the token is not valid yet (iat or nbf is in the future)") from None
        except jwt.MissingRequiredClaimError as error:
            raise AuthError(f"the token has no '{error.claim}' claim (CDS Hooks requires iss, aud, exp, iat, jti)") from None
        except jwt.InvalidSignatureError:
            raise AuthError("the token's signature does not verify with the issuer's key") from None
        except jwt.PyJWTError as error:
            raise AuthError(f"the token is invalid ({' '.join(str(error).split())[:160]})") from None
        exp, iat, jti = claims["exp"], claims["iat"], claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise AuthError("jti must be a non-empty string")
        now = time.time()
        lifetime = self._config.max_token_lifetime_seconds
        if exp - now > lifetime + skew or exp - iat > lifetime + skew:
            raise AuthError(f"the token lives longer than this service accepts ({lifetime} s): use short-lived tokens")
        if not self._replay.first_use(issuer.iss, jti, float(exp) + skew):
            raise AuthError("this token's jti was already used: every request needs a fresh token (replay refused)")
        return claims
