"""Turning a stream of token ids into text deltas without splitting characters.

Byte-level BPE tokens can end in the middle of a multi-byte UTF-8 character;
decoding such a prefix yields U+FFFD. The detokenizer holds those tokens back
until the character is complete, so every delta is whole text and the deltas
concatenate to the decoding of all tokens.
"""

from __future__ import annotations

from tokenizers import Tokenizer

REPLACEMENT_CHARACTER = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        # Tokens before _prefix are already turned into text; those in
        # [_prefix, _read) are decoded again as context for the next delta.
        self._prefix = 0
        self._read = 0

    def push(self, token_id: int) -> str:
        """Adds one token; returns the text it completes (possibly "")."""
        return self.push_many([token_id])

    def push_many(self, token_ids: list[int]) -> str:
        """Adds tokens; returns the text they complete (possibly ""), decoding once."""
        if not token_ids:
            return ""
        self._ids.extend(token_ids)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and not after.endswith(REPLACEMENT_CHARACTER):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """Text of tokens still held back (an incomplete character at the end)."""
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return after[len(before) :]

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True) if ids else ""
