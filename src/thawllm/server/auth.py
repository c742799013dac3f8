"""API key check: `Authorization: Bearer <key>` on every route but /health."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from thawllm.server.errors import AuthenticationFailed, error_response

PUBLIC_PATHS = frozenset({"/health"})


def check_authorization(header: bytes | None, api_key: str) -> None:
    """Raise AuthenticationFailed unless the raw HEADER carries API_KEY as a bearer token."""
    if not header:
        raise AuthenticationFailed("Missing API key. Send the header 'Authorization: Bearer <key>'.")
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        raise AuthenticationFailed("Invalid Authorization header. Send 'Authorization: Bearer <key>'.")
    # Compare in constant time, so response timing does not reveal how much of a guess matched.
    if not hmac.compare_digest(token.strip(), api_key.encode("utf-8")):
        raise AuthenticationFailed("Invalid API key in the Authorization header.")


class APIKeyMiddleware:
    """Reject requests without the service's API key, read from its settings at each request."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        api_key = scope["app"].state.service.settings.api_key
        if api_key is not None:
            try:
                check_authorization(_header(scope, b"authorization"), api_key)
            except AuthenticationFailed as exc:
                exc.headers["WWW-Authenticate"] = "Bearer"
                await error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None
