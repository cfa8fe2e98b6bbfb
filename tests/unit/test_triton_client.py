import asyncio
import time

import grpc
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from services.common.errors import DeadlineExceeded, Unavailable
from services.common.triton import READINESS_TIMEOUT_S, TritonClient, _to_domain_error
from services.launcher.stack import free_port


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("StatusCode.UNAVAILABLE", Unavailable),
        ("StatusCode.DEADLINE_EXCEEDED", DeadlineExceeded),
        # Triton cancels queued requests when it stops; the caller is still there.
        ("StatusCode.CANCELLED", Unavailable),
    ],
)
def test_triton_statuses_become_domain_errors(status: str, expected: type) -> None:
    error = _to_domain_error("gpt2", InferenceServerException("boom", status=status))
    assert isinstance(error, expected)


@pytest.mark.parametrize("status", ["StatusCode.INTERNAL", "StatusCode.INVALID_ARGUMENT"])
def test_model_failures_are_internal_not_the_callers_fault(status: str) -> None:
    # The service validates requests first: a model's rejection is a server bug.
    error = _to_domain_error("gpt2", InferenceServerException("boom", status=status))
    assert error.code == grpc.StatusCode.INTERNAL and "gpt2" in error.message


async def test_unreachable_triton_is_unavailable_within_the_deadline() -> None:
    client = TritonClient(f"127.0.0.1:{free_port()}", 1 << 20, default_timeout_s=5)
    deadline_s = 2.0
    try:
        started = time.monotonic()
        # The timeout only turns a hang into a failure; the times measured are the test.
        async with asyncio.timeout(deadline_s + 5):
            with pytest.raises(Unavailable):
                await client.infer(
                    "biggan", {"z": np.zeros((1, 128), np.float32)}, ["image"], "r", deadline_s
                )
            assert time.monotonic() - started < deadline_s
            started = time.monotonic()
            assert not await client.is_model_ready("biggan")
            assert time.monotonic() - started < READINESS_TIMEOUT_S
    finally:
        await client.close()
