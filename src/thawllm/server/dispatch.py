"""Hand a validated request to the engine thread and bring its events back to the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass

from starlette.types import Receive

from thawllm.engine.base import Piece
from thawllm.server.errors import APIError, ClientDisconnected, ServiceUnavailable
from thawllm.server.generation import Event, Failed, Generation, Started


@dataclass(frozen=True)
class Completion:
    """The whole text of a finished generation, with its token counts."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class EventChannel:
    """A thread-safe path for events from the engine thread to one request's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self.on_loop_closed: Callable[[], None] = lambda: None

    def put(self, event: Event) -> None:
        """Deliver EVENT; safe to call from any thread."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:
            # The event loop has closed, so no request waits for this event any more.
            self.on_loop_closed()

    async def get(self) -> Event:
        return await self._queue.get()


class RunningGeneration:
    """A request handed to the engine thread. Read its events, then call stop()."""

    def __init__(self, generation: Generation, channel: EventChannel, watcher: asyncio.Task):
        self._generation = generation
        self._channel = channel
        self.watcher = watcher
        self.prompt_tokens = 0
        self.completion_tokens = 0

    @classmethod
    def watch(cls, generation: Generation, channel: EventChannel, future: Future,
              receive: Receive) -> "RunningGeneration":
        """Follow GENERATION, queued as FUTURE, and cancel it when the client disconnects."""
        future.add_done_callback(lambda done: _report_cancelled(channel, done))
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, generation.cancel))
        return cls(generation, channel, watcher)

    async def started(self) -> int:
        """Wait until the prompt is encoded and fits; return its token count."""
        event = await self._channel.get()
        if not isinstance(event, Started):
            raise _error_for(event)
        self.prompt_tokens = event.prompt_tokens
        return event.prompt_tokens

    async def pieces(self) -> AsyncIterator[Piece]:
        """Yield pieces up to the final one, which carries the finish reason."""
        while True:
            event = await self._channel.get()
            if not isinstance(event, Piece):
                raise _error_for(event)
            if event.finish_reason is None:
                self.completion_tokens += 1
            yield event
            if event.finish_reason is not None:
                return

    async def collect(self) -> Completion:
        await self.started()
        texts = []
        async for piece in self.pieces():
            texts.append(piece.text)
        return Completion("".join(texts), piece.finish_reason, self.prompt_tokens, self.completion_tokens)

    def stop(self) -> None:
        """Stop the generation if it still runs, and stop watching the connection."""
        self._generation.cancel()
        self.watcher.cancel()


def _error_for(event: Event) -> APIError:
    if isinstance(event, Failed):
        return event.error
    return ClientDisconnected("The client closed the connection before the response was complete.")


async def _watch_disconnect(receive: Receive, on_disconnect: Callable[[], None]) -> None:
    """Call ON_DISCONNECT when the client goes away; start only after the body has been read."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            on_disconnect()
            return


def _report_cancelled(channel: EventChannel, future: Future) -> None:
    if future.cancelled():
        channel.put(Failed(ServiceUnavailable("The server is shutting down.", code="shutting_down")))
