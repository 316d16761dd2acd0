"""Who may write (the token, or this machine only) and what a write's body must be."""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from decimal import Decimal

from fastapi import Request

import engine

from .errors import NotLocal, Unauthorized
from .schemas import MAX_KEY_LENGTH

def check_write_token(request: Request) -> None:
    """Who may write: with RECS_API_TOKEN set (read when the app was made), whoever sends it as a
    Bearer token (else Unauthorized); without it, only clients on this machine (else NotLocal),
    whichever way the app was started (`recs serve`, `uvicorn api:app --host 0.0.0.0`)."""
    token = request.app.state.api_token
    if not token:
        if not is_local_client(request):
            raise NotLocal()
        return
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise Unauthorized()


def is_local_client(request: Request) -> bool:
    """Whether the request comes from this machine: the client's address is loopback (Starlette's
    TestClient calls itself 'testclient') and so is every address a proxy forwarded it for. A
    reverse proxy on this host passes a remote client on in X-Forwarded-For, which uvicorn
    trusts from 127.0.0.1 by default; either way it is not local."""
    client = request.client.host if request.client else ""
    if client != "testclient" and not is_loopback(client):
        return False
    forwarded = [part.strip() for value in request.headers.getlist("x-forwarded-for") for part in value.split(",")]
    forwarded += [part.strip() for value in request.headers.getlist("x-real-ip") for part in value.split(",")]
    return all(is_loopback(address) for address in forwarded if address)


def parse_events(body: bytes) -> list:
    """The events of a POST /events body, or BadArgument (422) saying what is wrong with it.

    Numbers are kept as the text they were written as (a 5,000-digit watch_seconds is then
    refused by the rules of sql/12, by field, instead of failing Python's int parser)."""
    try:
        data = json.loads(body, parse_int=str, parse_float=Decimal, parse_constant=_not_json)
    except (ValueError, RecursionError) as error:
        raise engine.BadArgument(f"the body is not JSON: {str(error)[:100]}") from None
    if not isinstance(data, dict) or "events" not in data:
        raise engine.BadArgument('the body must be a JSON object {"events": [...]}')
    unexpected = sorted(set(data) - {"events"})
    if unexpected:
        raise engine.BadArgument(f"unexpected field {unexpected[0][:40]!r} in the body (expected: events)")
    events = data["events"]
    if not isinstance(events, list) or not 1 <= len(events) <= engine.live.MAX_BATCH:
        count = f"{len(events):,}" if isinstance(events, list) else type(events).__name__
        raise engine.BadArgument(f"events: from 1 to {engine.live.MAX_BATCH:,} events, not {count}")
    return events


def _not_json(constant: str):
    raise ValueError(f"{constant} is not a JSON number")


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key header: 1 to MAX_KEY_LENGTH visible ASCII characters."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all("!" <= char <= "~" for char in key):
        raise engine.BadArgument(
            f"Idempotency-Key: 1 to {MAX_KEY_LENGTH} visible ASCII characters (no spaces), e.g. a UUID"
        )
    return key


def is_loopback(host: str) -> bool:
    """Whether host is this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_writes_allowed(host: str, writes: bool = True) -> None:
    """Refuse to open POST /events beyond this machine without RECS_API_TOKEN."""
    if writes and not is_loopback(host) and not os.environ.get("RECS_API_TOKEN"):
        raise engine.BadArgument(
            f"refusing to serve POST /events on {host} without a token: set RECS_API_TOKEN "
            "(clients then send Authorization: Bearer <token>), or serve --read-only"
        )
