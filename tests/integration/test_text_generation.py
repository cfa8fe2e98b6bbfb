import grpc
import pytest

from genmedia.v1 import text_generation_pb2 as pb
from genmedia.v1 import text_generation_pb2_grpc as pb_grpc
from services.common.registry import TEXT_GENERATION

pytestmark = pytest.mark.integration

PROMPT = "The meeting about deep fakes"


@pytest.fixture
def text(connect) -> pb_grpc.TextGenerationServiceStub:
    return pb_grpc.TextGenerationServiceStub(connect(TEXT_GENERATION))


def test_stream_sends_several_messages_whose_concatenation_equals_unary(text) -> None:
    request = pb.GenerateTextRequest(prompt=PROMPT, max_new_tokens=24, seed=7, temperature=0.9)
    chunks = list(text.StreamText(request, timeout=60))
    whole = text.GenerateText(request, timeout=60)
    assert len(chunks) > 2
    assert "".join(c.text for c in chunks) == whole.text
    assert whole.text.strip(), "the model generated no text"
    last = chunks[-1]
    assert last.finish_reason == whole.finish_reason != pb.FINISH_REASON_UNSPECIFIED
    assert last.usage.generated_tokens == whole.usage.generated_tokens <= 24
    assert last.usage.prompt_tokens > 0
    assert whole.provenance.synthetic and whole.provenance.seed == 7
    assert whole.provenance.model == "gpt2"
    assert all(c.finish_reason == pb.FINISH_REASON_UNSPECIFIED for c in chunks[:-1])


def test_same_seed_same_text_and_greedy_is_deterministic(text) -> None:
    seeded = pb.GenerateTextRequest(prompt=PROMPT, max_new_tokens=16, seed=3)
    assert text.GenerateText(seeded, timeout=60).text == text.GenerateText(seeded, timeout=60).text
    greedy = pb.GenerateTextRequest(prompt=PROMPT, max_new_tokens=16, temperature=0)
    assert text.GenerateText(greedy, timeout=60).text == text.GenerateText(greedy, timeout=60).text


def test_max_new_tokens_bounds_the_completion(text) -> None:
    response = text.GenerateText(
        pb.GenerateTextRequest(prompt=PROMPT, max_new_tokens=5, seed=1), timeout=60
    )
    assert response.usage.generated_tokens <= 5
    if response.finish_reason == pb.FINISH_REASON_LENGTH:
        assert response.usage.generated_tokens == 5


def test_stop_sequence_cuts_the_text(text) -> None:
    request = pb.GenerateTextRequest(prompt=PROMPT, max_new_tokens=40, seed=11)
    free = text.GenerateText(request, timeout=60).text
    assert len(free) > 4
    stop = free[2:4]
    stopped = text.GenerateText(
        pb.GenerateTextRequest(prompt=PROMPT, max_new_tokens=40, seed=11, stop=[stop]), timeout=60
    )
    assert stopped.finish_reason == pb.FINISH_REASON_STOP
    assert stopped.text == free[: free.index(stop)]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt": ""}, "prompt is empty"),
        ({"prompt": "   "}, "prompt is empty"),
        ({"temperature": 3.0}, "temperature is 3.0"),
        ({"temperature": -1.0}, "temperature is -1.0"),
        ({"top_p": 1.5}, "top_p is 1.5"),
        ({"max_new_tokens": 5000}, "max_new_tokens is 5000"),
        ({"prompt": "deep " * 1000, "max_new_tokens": 1000}, "context of 1024 tokens"),
        ({"prompt": "deep " * 1000, "max_new_tokens": 1000}, "shorten the prompt to 24 tokens"),
        ({"max_new_tokens": 1024, "truncate_prompt": True}, "must be below the model's context"),
        ({"repetition_penalty": 0.0}, "repetition_penalty is 0.0"),
        ({"repetition_penalty": 11.0}, "repetition_penalty is 11.0"),
        ({"repetition_penalty": float("nan")}, "repetition_penalty is nan"),
    ],
)
def test_bad_text_requests_are_invalid_argument(text, fields, message) -> None:
    request = pb.GenerateTextRequest(**({"prompt": PROMPT} | fields))
    for call in (text.GenerateText, lambda r, timeout: list(text.StreamText(r, timeout=timeout))):
        with pytest.raises(grpc.RpcError) as error:
            call(request, timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in error.value.details()


def test_truncate_prompt_keeps_the_end_that_fits_and_says_how_much_was_dropped(text) -> None:
    long_prompt = "deep fakes are cheap now. " * 200
    request = pb.GenerateTextRequest(
        prompt=long_prompt, max_new_tokens=100, seed=2, truncate_prompt=True
    )
    response = text.GenerateText(request, timeout=60)
    usage = response.usage
    assert usage.prompt_tokens == 1024 - 100
    assert usage.truncated_prompt_tokens > 0
    assert usage.generated_tokens >= 1
    short = text.GenerateText(
        pb.GenerateTextRequest(prompt=PROMPT, max_new_tokens=8, seed=2, truncate_prompt=True),
        timeout=60,
    )
    assert short.usage.truncated_prompt_tokens == 0


def test_repetition_penalty_changes_the_greedy_text(text) -> None:
    plain = pb.GenerateTextRequest(prompt=PROMPT, max_new_tokens=40, temperature=0)
    penalised = pb.GenerateTextRequest(
        prompt=PROMPT, max_new_tokens=40, temperature=0, repetition_penalty=5.0
    )
    one = pb.GenerateTextRequest(
        prompt=PROMPT, max_new_tokens=40, temperature=0, repetition_penalty=1.0
    )
    plain_text = text.GenerateText(plain, timeout=60).text
    assert text.GenerateText(one, timeout=60).text == plain_text
    assert text.GenerateText(penalised, timeout=60).text != plain_text
