"""Triton's errors reach callers as plain sentences; Triton's own words go to the log."""

from __future__ import annotations

import grpc
import pytest
from tritonclient.utils import InferenceServerException

from services.common.errors import GenmediaError
from services.common.triton import _to_domain_error

INTERNAL_TEXT = "failed to connect to all addresses; last error: ipv4:10.3.7.9:8001: refused"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("StatusCode.UNAVAILABLE", grpc.StatusCode.UNAVAILABLE),
        ("StatusCode.CANCELLED", grpc.StatusCode.UNAVAILABLE),
        ("StatusCode.INVALID_ARGUMENT", grpc.StatusCode.INTERNAL),
        ("StatusCode.NOT_FOUND", grpc.StatusCode.UNAVAILABLE),
        ("StatusCode.INTERNAL", grpc.StatusCode.INTERNAL),
    ],
)
def test_tritons_own_text_is_logged_not_sent(status: str, code: grpc.StatusCode) -> None:
    error: GenmediaError = _to_domain_error(
        "biggan", InferenceServerException(INTERNAL_TEXT, status=status)
    )
    assert error.code is code
    assert "10.3.7.9" not in error.message and "ipv4" not in error.message
    assert error.detail == INTERNAL_TEXT


def test_our_own_models_words_about_capacity_reach_the_caller() -> None:
    error = _to_domain_error(
        "gpt2", InferenceServerException("RESOURCE_EXHAUSTED: 8 sequences running, 16 queued")
    )
    assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "8 sequences running, 16 queued" in error.message
