"""Ranges the API and the models agree on."""

from __future__ import annotations

MAX_SEED = 2**63 - 1
"""Seeds are 0..2^63-1 (a non-negative int64, what Triton's INT64 seed input carries)."""
