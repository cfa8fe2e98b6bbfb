"""Each bad input of docs/RELIABILITY.md gets its stated answer from the live stack."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from services.common.registry import GATEWAY
from tests.fuzz import bad_inputs

pytestmark = pytest.mark.integration

RELIABILITY = Path(__file__).resolve().parents[2] / "docs" / "RELIABILITY.md"


@pytest.fixture(scope="module")
def answers(stack) -> list[tuple[bad_inputs.Case, grpc.StatusCode, str]]:
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    with grpc.insecure_channel(stack.ports.address(GATEWAY), options=options) as channel:
        return [(case, *bad_inputs.answer(channel, case)) for case in bad_inputs.CASES]


def test_every_bad_input_gets_its_precise_status(answers) -> None:
    wrong = [
        f"{case.description}: {code.name} {message!r} (expected {case.expected.name})"
        for case, code, message in answers
        if code != case.expected
    ]
    assert not wrong, "\n".join(wrong)
    for case, code, message in answers:
        assert message, f"{case.description}: no message"
        assert code not in {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def test_reliability_doc_shows_what_the_stack_answers(answers) -> None:
    table = bad_inputs.markdown(answers)
    assert table in RELIABILITY.read_text(), (
        "docs/RELIABILITY.md's bad-input table is stale: paste "
        "`python -m tests.fuzz.bad_inputs --target <gateway>`"
    )
