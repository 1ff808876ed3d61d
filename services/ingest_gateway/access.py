"""Who may call: the bearer token's user, and the rate limits per client address and per user."""

from __future__ import annotations

from starlette.requests import Request

from circadia.auth import FirebaseTokenVerifier, InvalidTokenError
from circadia.ratelimit import RateDecision, RateLimit
from ingest_gateway.errors import Rejection

CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


async def rate_limited(limit: RateLimit, identity: str, loc: str) -> RateDecision:
    """The limit's decision for ``identity``; a 429 with ``Retry-After`` when it refuses."""
    decision = await limit.hit(identity)
    if not decision.allowed:
        raise Rejection(429, "rate_limited", headers=decision.headers(),
                        errors=[{"loc": [loc], "msg": f"more than {limit.item} requests"}])
    return decision


async def authenticated(verifier: FirebaseTokenVerifier, request: Request) -> str:
    """The verified user of the request's bearer token; a 401 with a challenge otherwise."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Rejection(401, "missing_bearer_token", headers={"WWW-Authenticate": "Bearer"},
                        errors=[{"loc": ["header", "authorization"], "msg": "Bearer token required"}])
    try:
        verified = await verifier.verify(token.strip())
    except InvalidTokenError as exc:
        raise Rejection(401, "invalid_token", headers=CHALLENGE,
                        errors=[{"loc": ["header", "authorization"], "msg": exc.reason}]) from None
    return verified.user_id
