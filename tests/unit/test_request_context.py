import re

import pytest

from services.common.request_context import caller_from_metadata, request_id_from_metadata


@pytest.mark.parametrize(
    "given", ["abc-123", "00f1c0de:span/7", "b64+x/y==", "a" * 128, "svc@prod.example"]
)
def test_a_callers_request_id_is_kept(given: str) -> None:
    assert request_id_from_metadata((("user-agent", "x"), ("x-request-id", given))) == given


@pytest.mark.parametrize(
    "given", ["", "has space", "x] [forged alice", "new\\nline", "a" * 129, "ünicode"]
)
def test_an_unsafe_request_id_is_replaced_by_a_new_one(given: str) -> None:
    made = request_id_from_metadata((("x-request-id", given),))
    assert made != given
    assert re.fullmatch("[0-9a-f]{32}", made)


def test_the_caller_name_is_taken_only_when_safe() -> None:
    assert caller_from_metadata((("x-genmedia-caller", "batch-job"),)) == "batch-job"
    assert caller_from_metadata((("x-genmedia-caller", "x] forged"),)) == "-"
    assert caller_from_metadata(()) == "-"
