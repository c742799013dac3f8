"""Forward one request to an instance and stream the response back to the client.

The request body is read whole first, because it is small JSON and an
instance rejects more than max_body_bytes anyway. The gateway can then
notice a client's disconnect while the request waits for an instance. The
response is streamed: each chunk from the instance, such as one server-sent
event, goes to the client as soon as it arrives.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx
from starlette.types import Receive, Scope, Send

from thawllm.gateway.instances import Instance
from thawllm.gateway.metrics import GatewayMetrics
from thawllm.gateway.pool import InstancePool, NoInstanceError
from thawllm.gateway.responses import send_error, sse_error_event

logger = logging.getLogger("thaw.gateway")

# Headers that belong to one connection (RFC 9110 section 7.6.1) and are not forwarded.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
    b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
# httpx sets these for the request to the instance.
SET_BY_CLIENT = frozenset({b"host", b"content-length"})

CONNECT_TIMEOUT_S = 10.0
# A long completion sends nothing until it ends unless it streams.
READ_TIMEOUT_S = 600.0
WRITE_TIMEOUT_S = 60.0
CLIENT_CLOSED_REQUEST = 499
# A request that never reached an instance, because its connection was refused, is sent once more.
DELIVERY_ATTEMPTS = 2


class ClientGone(Exception):
    """The client closed the connection before the gateway responded."""


class BodyTooLarge(Exception):
    """The request body is larger than the instances accept."""


class NotDelivered(Exception):
    """The connection to an instance failed before the request was sent."""


@dataclass
class Exchange:
    """The part of the response already sent to the client."""

    status: int | None = None
    event_stream: bool = False
    finished: bool = False


def make_client() -> httpx.AsyncClient:
    timeout = httpx.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S, write=WRITE_TIMEOUT_S, pool=None)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    return httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)


class Forwarder:
    """Proxies requests to the pool's instances on loopback."""

    def __init__(self, pool: InstancePool, metrics: GatewayMetrics, client: httpx.AsyncClient,
                 instance_host: str, max_body_bytes: int):
        self.pool = pool
        self.metrics = metrics
        self.client = client
        self.instance_host = instance_host
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await read_body(receive, self.max_body_bytes)
        except ClientGone:
            self.metrics.count_request(CLIENT_CLOSED_REQUEST)
            return
        except BodyTooLarge as exc:
            await send_error(send, 413, str(exc), "payload_too_large", error_type="invalid_request_error")
            self.metrics.count_request(413)
            return

        disconnect = asyncio.ensure_future(wait_for_disconnect(receive))
        try:
            status = await self._route(scope, body, send, disconnect)
        finally:
            disconnect.cancel()
        self.metrics.count_request(status)

    async def _route(self, scope: Scope, body: bytes, send: Send, disconnect: asyncio.Future) -> int:
        for attempt in range(1, DELIVERY_ATTEMPTS + 1):
            try:
                instance = await _first_or_cancel(self.pool.acquire(), disconnect)
            except NoInstanceError as exc:
                await send_error(send, 503, str(exc), exc.code, retry_after_s=exc.retry_after_s)
                return 503
            if instance is None:
                return CLIENT_CLOSED_REQUEST
            try:
                return await self._forward_watched(scope, body, send, instance, disconnect,
                                                   last_attempt=attempt == DELIVERY_ATTEMPTS)
            except NotDelivered as exc:
                logger.warning("Request not delivered to %s [pid %s]: %s; trying another instance.",
                               instance.label, instance.pid, exc)
            finally:
                self.pool.release(instance)
            await self.pool.confirm_exit(instance)

    async def _forward_watched(self, scope: Scope, body: bytes, send: Send, instance: Instance,
                               disconnect: asyncio.Future, last_attempt: bool) -> int:
        """Forward, but stop at once when the client leaves or the instance dies."""
        exchange = Exchange()
        forward = asyncio.ensure_future(self._forward(scope, body, send, instance, exchange, last_attempt))
        lost = asyncio.ensure_future(instance.lost.wait())
        try:
            await asyncio.wait({forward, disconnect, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not forward.done():
                forward.cancel()
                await asyncio.gather(forward, return_exceptions=True)
        if forward.done() and not forward.cancelled():
            return forward.result()
        if instance.lost.is_set():
            return await self._fail(send, exchange, instance, f"{instance.label} exited")
        return CLIENT_CLOSED_REQUEST

    async def _forward(self, scope: Scope, body: bytes, send: Send, instance: Instance,
                       exchange: Exchange, last_attempt: bool) -> int:
        request = self.client.build_request(
            scope["method"], self._url(scope, instance), headers=forwarded_headers(scope), content=body,
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.ConnectError as exc:
            # The instance never saw the request, so another one may take it.
            if not last_attempt:
                raise NotDelivered(repr(exc)) from exc
            self.pool.suspect(instance)
            return await self._fail(send, exchange, instance, f"connection to {instance.label} failed: {exc!r}")
        except httpx.TimeoutException as exc:
            return await self._fail(send, exchange, instance, f"{instance.label} timed out: {exc!r}", 504)
        except httpx.TransportError as exc:
            self.pool.suspect(instance)
            return await self._fail(send, exchange, instance, f"connection to {instance.label} failed: {exc!r}")
        try:
            await self._relay(response, send, exchange)
        except httpx.TransportError as exc:
            self.pool.suspect(instance)
            return await self._fail(send, exchange, instance, f"{instance.label} closed the connection mid-response: {exc!r}")
        finally:
            await response.aclose()
        return exchange.status

    async def _relay(self, response: httpx.Response, send: Send, exchange: Exchange) -> None:
        exchange.event_stream = response.headers.get("content-type", "").startswith("text/event-stream")
        headers = [(name, value) for name, value in response.headers.raw if name.lower() not in HOP_BY_HOP]
        exchange.status = response.status_code
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        exchange.finished = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _fail(self, send: Send, exchange: Exchange, instance: Instance, reason: str,
                    status: int = 502) -> int:
        """Send an error response, or end a stream that has begun with an error event."""
        logger.warning("Request to %s [pid %s] failed: %s.", instance.label, instance.pid, reason)
        message = f"The instance failed before completing the response: {reason}. Retry the request."
        code = "instance_timeout" if status == 504 else "instance_failed"
        if exchange.status is None:
            exchange.status = status
            await send_error(send, status, message, code)
        elif not exchange.finished and exchange.event_stream:
            # The status line has gone out; an SSE client reads the error as the last event.
            exchange.finished = True
            await send({"type": "http.response.body", "body": sse_error_event(message, code), "more_body": False})
        return exchange.status

    def _url(self, scope: Scope, instance: Instance) -> httpx.URL:
        raw_path = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            raw_path += b"?" + scope["query_string"]
        return httpx.URL(scheme="http", host=self.instance_host, port=instance.port, raw_path=raw_path)


def forwarded_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """Return the request headers for the instance, with the client's address added to X-Forwarded-For."""
    headers, forwarded_for = [], []
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            forwarded_for.append(value)
        elif name not in HOP_BY_HOP and name not in SET_BY_CLIENT and name != b"x-forwarded-proto":
            headers.append((name, value))
    client = scope.get("client")
    if client:
        forwarded_for.append(client[0].encode())
    if forwarded_for:
        headers.append((b"x-forwarded-for", b", ".join(forwarded_for)))
    headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
    return headers


async def read_body(receive: Receive, max_body_bytes: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body_bytes:
            raise BodyTooLarge(f"Request body is larger than {max_body_bytes} bytes ({size} bytes or more). "
                               "Send a shorter prompt.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client disconnects, or when the server ends the response cycle."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _first_or_cancel(acquire, disconnect: asyncio.Future) -> Instance | None:
    """Await ACQUIRE unless the client disconnects first; None then."""
    task = asyncio.ensure_future(acquire)
    try:
        await asyncio.wait({task, disconnect}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return None
