"""Stop sequences found in generated text, across token boundaries."""

from __future__ import annotations


class StopSequenceFilter:
    """Passes text through, holding back what might be the start of a stop sequence."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Returns the text that is safe to emit; sets ``stopped`` on a match."""
        if self.stopped:
            return ""
        self._pending += text
        hits = [i for i in (self._pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            emitted, self._pending = self._pending[: min(hits)], ""
            return emitted
        keep = self._longest_partial_match()
        cut = len(self._pending) - keep
        emitted, self._pending = self._pending[:cut], self._pending[cut:]
        return emitted

    def flush(self) -> str:
        """At the end of generation, what was held back is plain text."""
        emitted, self._pending = ("" if self.stopped else self._pending), ""
        return emitted

    def _longest_partial_match(self) -> int:
        longest = 0
        for stop in self.stops:
            for length in range(min(len(stop) - 1, len(self._pending)), longest, -1):
                if self._pending.endswith(stop[:length]):
                    longest = length
                    break
        return longest
