"""GPT-2 token streaming: determinism, greedy decoding, filters, limits, early stop."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import pytest
import torch
from transformers import GPT2LMHeadModel

from genmedia_models.gpt2 import (
    SamplingParams,
    eos_token_ids,
    filter_logits,
    generate_tokens,
    load_gpt2,
)
from genmedia_models.runtime import InvalidInputError

PROMPT = [5, 17, 42, 99, 300]


@pytest.fixture(scope="module")
def model(weights_dir: Path) -> GPT2LMHeadModel:
    return load_gpt2(weights_dir / "gpt2")


def sample(model: GPT2LMHeadModel, **overrides: object) -> list[int]:
    params = SamplingParams(**{"max_new_tokens": 24, "temperature": 1.0, "seed": 7, **overrides})
    return list(generate_tokens(model, PROMPT, params))


def test_same_seed_gives_the_same_tokens(model: GPT2LMHeadModel) -> None:
    first = sample(model, top_k=50, top_p=0.9)
    assert first == sample(model, top_k=50, top_p=0.9)
    assert len(first) == 24


def test_different_seeds_give_different_tokens(model: GPT2LMHeadModel) -> None:
    assert sample(model, seed=1) != sample(model, seed=2)


@torch.inference_mode()
def test_temperature_zero_is_greedy_over_the_full_sequence(model: GPT2LMHeadModel) -> None:
    tokens = sample(model, temperature=0.0, seed=1)
    assert tokens == sample(model, temperature=0.0, seed=2)
    # Recompute every step without the KV cache: argmax must agree.
    sequence = list(PROMPT)
    for token in tokens:
        logits = model(torch.tensor([sequence])).logits[0, -1]
        assert token == int(torch.argmax(logits))
        sequence.append(token)


def test_stops_after_emitting_a_stop_token(model: GPT2LMHeadModel) -> None:
    greedy = sample(model, temperature=0.0)
    stop = greedy[3]
    params = SamplingParams(max_new_tokens=24, temperature=0.0)
    tokens = list(generate_tokens(model, PROMPT, params, stop_token_ids={stop}))
    assert tokens == greedy[: greedy.index(stop) + 1]


def test_eos_comes_from_the_checkpoint(model: GPT2LMHeadModel) -> None:
    assert eos_token_ids(model) == {model.config.eos_token_id}


def test_generation_can_be_stopped_between_steps(model: GPT2LMHeadModel) -> None:
    calls = 0
    original_forward = model.forward

    @functools.wraps(original_forward)  # keeps the signature generate_tokens inspects
    def counting_forward(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return original_forward(*args, **kwargs)

    model.forward = counting_forward  # type: ignore[method-assign]
    try:
        tokens = generate_tokens(model, PROMPT, SamplingParams(max_new_tokens=500))
        taken = list(itertools.islice(tokens, 3))
        tokens.close()
    finally:
        del model.forward
    assert len(taken) == 3
    assert calls == 3  # the prompt pass, then one step per further token; nothing ahead


def test_top_k_keeps_only_the_k_largest() -> None:
    logits = torch.tensor([1.0, 5.0, 3.0, 4.0, 2.0])
    kept = torch.isfinite(filter_logits(logits, top_k=2, top_p=1.0))
    assert kept.tolist() == [False, True, False, True, False]


def test_top_p_keeps_the_smallest_nucleus_and_at_least_one() -> None:
    probabilities = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probabilities.log()
    assert torch.isfinite(filter_logits(logits, 0, 0.75)).tolist() == [True, True, False, False]
    assert torch.isfinite(filter_logits(logits, 0, 0.01)).tolist() == [True, False, False, False]
    assert torch.isfinite(filter_logits(logits, 0, 1.0)).all()


def test_filters_off_leave_logits_untouched() -> None:
    logits = torch.randn(50)
    assert torch.equal(filter_logits(logits, 0, 1.0), logits)


@pytest.mark.parametrize(
    ("prompt_length", "max_new_tokens", "message"),
    [
        (1024, 1, "the limit is 1023"),
        (1000, 25, "exceeds the context window of 1024"),
        (0, 5, "at least one token"),
    ],
)
def test_prompts_that_do_not_fit_are_rejected(
    model: GPT2LMHeadModel, prompt_length: int, max_new_tokens: int, message: str
) -> None:
    tokens = generate_tokens(
        model, [1] * prompt_length, SamplingParams(max_new_tokens=max_new_tokens)
    )
    with pytest.raises(InvalidInputError, match=message):
        next(tokens)


def test_prompt_that_exactly_fills_the_window_is_accepted(model: GPT2LMHeadModel) -> None:
    params = SamplingParams(max_new_tokens=2, temperature=0.0)
    assert len(list(generate_tokens(model, [1] * 1022, params))) == 2


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_new_tokens=0),
        SamplingParams(max_new_tokens=5, temperature=-1.0),
        SamplingParams(max_new_tokens=5, top_k=-1),
        SamplingParams(max_new_tokens=5, top_p=0.0),
        SamplingParams(max_new_tokens=5, top_p=1.5),
    ],
)
def test_invalid_sampling_parameters_are_rejected(params: SamplingParams) -> None:
    with pytest.raises(InvalidInputError):
        params.validate()


def test_token_ids_outside_the_vocabulary_are_rejected(model: GPT2LMHeadModel) -> None:
    tokens = generate_tokens(model, [model.config.vocab_size], SamplingParams(max_new_tokens=1))
    with pytest.raises(InvalidInputError, match="input_ids must be in"):
        next(tokens)
