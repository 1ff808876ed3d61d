"""Verification of Firebase ID tokens, as Firebase specifies it.

RS256 only; the header's ``kid`` must name a current certificate of the configured
certificate map (Google's securetoken x509 endpoint in production, a file written by the
local stack in development); ``iss``/``aud`` must name the project; ``sub`` is the user
id. Certificates are cached for the response's ``Cache-Control: max-age`` and refreshed
early when an unknown ``kid`` appears, at most once per ``min_refresh_interval`` so a
flood of made-up kids cannot hammer the endpoint. A failed refresh with a warm cache
keeps serving the cached certificates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.x509 import load_pem_x509_certificate

log = logging.getLogger(__name__)

MAX_SUBJECT_LENGTH = 128
_MAX_AGE = re.compile(r"max-age=(\d+)")


class InvalidTokenError(Exception):
    """The token must not be trusted; ``reason`` is safe to show to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CertificateFetchError(Exception):
    """The certificate map could not be fetched or parsed."""


@dataclass(frozen=True)
class VerifiedToken:
    user_id: str
    expires_at: float
    claims: Mapping[str, Any]


class CertificateSource:
    """The ``kid -> public key`` map behind a URL, cached per Cache-Control max-age."""

    def __init__(
        self,
        url: str,
        *,
        default_max_age: float = 300.0,
        min_refresh_interval: float = 10.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._default_max_age = default_max_age
        self._min_refresh_interval = min_refresh_interval
        self._timeout = timeout
        self._clock = clock
        self._keys: dict[str, RSAPublicKey] = {}
        self._expires = 0.0
        self._last_attempt = float("-inf")
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        """Whether a certificate map is in hand (cached, possibly stale): tokens can be verified."""
        return bool(self._keys)

    async def warm(self) -> bool:
        """Fetch the map now (at start-up) instead of on the first request; False if that failed."""
        try:
            await self.key("")
        except CertificateFetchError:
            log.warning("certificates not loaded yet", exc_info=True, extra={"certs_url": self.url})
        return self.loaded

    async def key(self, kid: str) -> RSAPublicKey | None:
        """The public key for ``kid``, or None when no current certificate has that kid."""
        if self._clock() >= self._expires or kid not in self._keys:
            # one refresh at a time; callers that waited find the fresh map and skip theirs
            async with self._lock:
                now = self._clock()
                fresh = now < self._expires and kid in self._keys
                if not fresh and now - self._last_attempt >= self._min_refresh_interval:
                    await self._refresh(now)
        if not self._keys:
            raise CertificateFetchError(f"no certificates from {self.url} yet")
        return self._keys.get(kid)

    async def _refresh(self, now: float) -> None:
        self._last_attempt = now
        try:
            body, max_age = await self._fetch()
            keys = _parse_certificates(body)
        except CertificateFetchError:
            if not self._keys:
                raise
            log.warning(
                "certificate refresh failed; serving %d cached keys",
                len(self._keys),
                exc_info=True,
                extra={"certs_url": self.url},
            )
            return
        self._keys = keys
        self._expires = now + (max_age if max_age is not None else self._default_max_age)

    async def _fetch(self) -> tuple[bytes, float | None]:
        parsed = urlparse(self.url)
        if parsed.scheme == "file":
            try:
                return await asyncio.to_thread(Path(unquote(parsed.path)).read_bytes), None
            except OSError as exc:
                raise CertificateFetchError(f"cannot read {self.url}: {exc}") from exc
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.get(self.url)
                response.raise_for_status()
        except httpx.HTTPError as exc:
            raise CertificateFetchError(f"cannot fetch {self.url}: {exc}") from exc
        match = _MAX_AGE.search(response.headers.get("cache-control", ""))
        return response.content, float(match.group(1)) if match else None


def _parse_certificates(body: bytes) -> dict[str, RSAPublicKey]:
    try:
        pems = json.loads(body)
        keys = {}
        for kid, pem in pems.items():
            key = load_pem_x509_certificate(pem.encode()).public_key()
            if isinstance(key, RSAPublicKey):
                keys[kid] = key
    except (ValueError, AttributeError, TypeError) as exc:
        raise CertificateFetchError(f"malformed certificate map: {exc}") from exc
    if not keys:
        raise CertificateFetchError("certificate map holds no RSA certificate")
    return keys


class FirebaseTokenVerifier:
    """Verifies Firebase ID tokens for one project."""

    def __init__(
        self,
        project_id: str,
        certificates: CertificateSource,
        *,
        clock_skew: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.project_id = project_id
        self.issuer = f"https://securetoken.google.com/{project_id}"
        self._certificates = certificates
        self._skew = clock_skew
        self._clock = clock

    @property
    def certificates(self) -> CertificateSource:
        return self._certificates

    async def verify(self, token: str) -> VerifiedToken:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidTokenError("malformed token") from None
        if header.get("alg") != "RS256":
            raise InvalidTokenError("algorithm must be RS256")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidTokenError("token has no kid")
        try:
            key = await self._certificates.key(kid)
        except CertificateFetchError:
            log.error("no signing certificates available", exc_info=True)
            raise InvalidTokenError("signing certificates unavailable") from None
        if key is None:
            raise InvalidTokenError("kid does not name a current certificate")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=self.project_id,
                issuer=self.issuer,
                leeway=self._skew,
                options={"require": ["exp", "iat", "sub", "aud", "iss"], "verify_iat": False},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidTokenError("token expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidTokenError("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidTokenError("wrong issuer") from None
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(f"invalid token: {type(exc).__name__}") from None
        return self._check_claims(claims)

    def _check_claims(self, claims: dict[str, Any]) -> VerifiedToken:
        now = self._clock()
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise InvalidTokenError("sub must be a non-empty string")
        if len(sub) > MAX_SUBJECT_LENGTH:
            raise InvalidTokenError(f"sub longer than {MAX_SUBJECT_LENGTH} characters")
        for claim in ("iat", "auth_time"):
            value = claims.get(claim)
            if not isinstance(value, int | float):
                raise InvalidTokenError(f"{claim} missing")
            if value > now + self._skew:
                raise InvalidTokenError(f"{claim} is in the future")
        return VerifiedToken(user_id=sub, expires_at=float(claims["exp"]), claims=claims)
