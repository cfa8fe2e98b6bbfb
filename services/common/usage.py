"""What a call generated, reported in trailing metadata for budgets and billing.

A backend reports the units it produced (``x-genmedia-usage: images=4``);
the gateway charges them to the caller's daily budget without parsing the
response. Clients calling a service directly see the same trailer.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from services.common.request_context import add_trailing_metadata

USAGE_HEADER = "x-genmedia-usage"


@dataclass(frozen=True)
class Usage:
    """Generated units of one call (or of a day, when summed)."""

    images: float = 0.0
    megapixels: float = 0.0
    tokens: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.images or self.megapixels or self.tokens)

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: Usage) -> Usage:
        """Never below zero."""
        return Usage(
            *(max(0.0, getattr(self, f.name) - getattr(other, f.name)) for f in fields(self))
        )

    def times(self, count: int) -> Usage:
        return Usage(*(getattr(self, f.name) * count for f in fields(self)))

    def header_value(self) -> str:
        """``images=2,megapixels=1.048576``: exact (shortest round-trip) numbers."""
        parts = []
        for f in fields(self):
            amount = float(getattr(self, f.name))
            if amount:
                text = str(int(amount)) if amount.is_integer() else repr(amount)
                parts.append(f"{f.name}={text}")
        return ",".join(parts)

    @classmethod
    def parse(cls, value: str) -> Usage:
        """Reads :meth:`header_value`'s format; unknown or malformed parts are ignored."""
        known = {f.name for f in fields(cls)}
        amounts: dict[str, float] = {}
        for part in value.split(","):
            name, _, amount = part.partition("=")
            name = name.strip()
            if name in known:
                try:
                    amounts[name] = max(0.0, float(amount))
                except ValueError:
                    continue
        return cls(**amounts)


def report_usage(usage: Usage) -> None:
    """Sends ``usage`` in the trailing metadata of the call being served."""
    if usage.header_value():
        add_trailing_metadata(USAGE_HEADER, usage.header_value())
