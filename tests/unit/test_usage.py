"""Usage trailers and RESOURCE_EXHAUSTED's retry-after (services/common/usage.py, errors.py)."""

from __future__ import annotations

import grpc
import pytest

from services.common.errors import RETRY_AFTER_HEADER, ResourceExhausted
from services.common.usage import Usage

# -- services/common/usage.py ------------------------------------------------


def test_usage_header_round_trip() -> None:
    usage = Usage(images=4, megapixels=0.262144, tokens=300)
    assert usage.header_value() == "images=4,megapixels=0.262144,tokens=300"
    assert Usage.parse(usage.header_value()) == usage
    assert Usage(tokens=7).header_value() == "tokens=7"
    assert Usage().header_value() == ""
    assert Usage.parse("") == Usage()


def test_usage_parse_ignores_malformed_parts_and_clamps_negatives() -> None:
    parsed = Usage.parse(" images = 2 ,videos=5,tokens,megapixels=lots,=3,,tokens=-4")
    assert parsed == Usage(images=2, megapixels=0, tokens=0)
    assert Usage.parse("tokens=abc,tokens=12") == Usage(tokens=12)


def test_usage_arithmetic() -> None:
    assert Usage(images=1, tokens=2).times(3) == Usage(images=3, tokens=6)
    assert Usage(images=1).times(0) == Usage()
    total = Usage(images=1, megapixels=0.5) + Usage(megapixels=0.25, tokens=10)
    assert total == Usage(images=1, megapixels=0.75, tokens=10)


# -- services/common/errors.py -----------------------------------------------


@pytest.mark.parametrize(
    ("retry_after_s", "header"),
    [(0.0004, "1"), (0.0, "1"), (0.0011, "2"), (2.5, "2500")],
)
def test_retry_after_is_whole_milliseconds_and_at_least_one(
    retry_after_s: float, header: str
) -> None:
    error = ResourceExhausted("slow down", retry_after_s)
    assert error.metadata == ((RETRY_AFTER_HEADER, header),)
    assert error.retry_after_s == retry_after_s


def test_resource_exhausted_without_retry_after_has_no_metadata() -> None:
    error = ResourceExhausted("slow down")
    assert error.metadata == ()
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.message == "slow down"
