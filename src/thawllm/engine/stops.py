"""Stop-sequence matching over streamed text."""

from __future__ import annotations


class StopMatcher:
    """Hold back streamed text that may be the start of a stop sequence."""

    def __init__(self, stops: list[str]):
        self._stops = [stop for stop in stops if stop]
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add TEXT and return the part that is certain not to belong to a stop sequence."""
        self._pending += text
        cut = self._first_stop_index()
        if cut is not None:
            released, self._pending = self._pending[:cut], ""
            self.stopped = True
            return released

        keep = self._longest_partial_stop()
        released = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(self._pending) - keep :]
        return released

    def flush(self) -> str:
        """Return the text still held back, at the end of a generation."""
        released, self._pending = self._pending, ""
        return released

    def _first_stop_index(self) -> int | None:
        found = [self._pending.find(stop) for stop in self._stops]
        found = [index for index in found if index >= 0]
        return min(found) if found else None

    def _longest_partial_stop(self) -> int:
        longest = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(self._pending)), 0, -1):
                if self._pending.endswith(stop[:length]):
                    longest = max(longest, length)
                    break
        return longest
