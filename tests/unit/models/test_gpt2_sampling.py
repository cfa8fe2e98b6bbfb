"""One GPT-2 sequence through the batcher's decoder and sampler: determinism, agreement
with Hugging Face's own forward pass and generate(), filters, limits, early stop."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from transformers import GPT2LMHeadModel
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

from genmedia_models.gpt2.batching import generate_one
from genmedia_models.gpt2.decoder import DecodeRow, PooledGPT2
from genmedia_models.gpt2.loading import eos_token_ids, load_gpt2
from genmedia_models.gpt2.sampling import (
    SamplerState,
    SamplingParams,
    keep_top_k,
    keep_top_p,
    penalise_repetitions,
)
from genmedia_models.runtime import InvalidInputError

PROMPT = [5, 17, 42, 99, 300]


@pytest.fixture(scope="module")
def model(weights_dir: Path) -> GPT2LMHeadModel:
    return load_gpt2(weights_dir / "gpt2")


def sample(model: GPT2LMHeadModel, **overrides: object) -> list[int]:
    params = SamplingParams(**{"max_new_tokens": 24, "temperature": 1.0, "seed": 7, **overrides})
    return list(generate_one(model, PROMPT, params))


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
    tokens = list(generate_one(model, PROMPT, params, stop_token_ids={stop}))
    assert tokens == greedy[: greedy.index(stop) + 1]


def test_eos_comes_from_the_checkpoint(model: GPT2LMHeadModel) -> None:
    assert eos_token_ids(model) == {model.config.eos_token_id}


def test_generation_can_be_stopped_between_steps(model: GPT2LMHeadModel) -> None:
    calls = 0

    def count(*_: object) -> None:
        nonlocal calls
        calls += 1

    hook = model.lm_head.register_forward_hook(count)
    try:
        tokens = generate_one(model, PROMPT, SamplingParams(max_new_tokens=500))
        taken = list(itertools.islice(tokens, 3))
        tokens.close()
    finally:
        hook.remove()
    assert len(taken) == 3
    assert calls == 3  # the prompt pass, then one step per further token; nothing ahead


def test_greedy_tokens_equal_hugging_face_generate(model: GPT2LMHeadModel) -> None:
    ours = list(generate_one(model, PROMPT, SamplingParams(max_new_tokens=40, temperature=0.0)))
    theirs = model.generate(
        torch.tensor([PROMPT]), max_new_tokens=40, do_sample=False, eos_token_id=None
    )
    assert ours == theirs[0, len(PROMPT) :].tolist()


@torch.inference_mode()
def test_pooled_logits_equal_the_full_forward_pass_at_every_step(model: GPT2LMHeadModel) -> None:
    decoder = PooledGPT2(model, slots=4)
    logits = decoder.prefill(0, PROMPT)
    sequence = list(PROMPT)
    for token in [7, 300, 7, 12, 1, 0, 250]:
        full = model(torch.tensor([sequence])).logits[0, -1]
        torch.testing.assert_close(logits, full, atol=1e-5, rtol=1e-5)
        logits = decoder.decode([DecodeRow(len(sequence), token)])[0]
        sequence.append(token)


def test_top_k_keeps_only_the_k_largest_per_row() -> None:
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0], [1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(keep_top_k(logits, torch.tensor([2, 0])))
    assert kept.tolist() == [[False, True, False, True, False], [True] * 5]


def test_top_p_keeps_the_smallest_nucleus_and_at_least_one_per_row() -> None:
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().repeat(3, 1)
    kept = torch.isfinite(keep_top_p(logits, torch.tensor([0.75, 0.01, 1.0])))
    assert kept.tolist() == [[True, True, False, False], [True, False, False, False], [True] * 4]


def test_filters_off_leave_logits_untouched() -> None:
    logits = torch.randn(3, 50)
    kept = keep_top_p(keep_top_k(logits.clone(), torch.zeros(3, dtype=torch.long)), torch.ones(3))
    assert torch.equal(kept, logits)


def test_repetition_penalty_matches_transformers() -> None:
    logits = torch.randn(2, 40)
    seen = [3, 7, 7, 12]
    cpu = torch.device("cpu")
    penalised = SamplerState.start(
        SamplingParams(max_new_tokens=1, repetition_penalty=1.3), seen, 40, cpu
    )
    plain = SamplerState.start(SamplingParams(max_new_tokens=1), seen, 40, cpu)
    ours = penalise_repetitions(logits.clone(), [penalised, plain])
    theirs = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([seen]), logits[:1].clone())
    assert torch.equal(ours[0], theirs[0])
    assert torch.equal(ours[1], logits[1])


def test_repetition_penalty_changes_what_is_sampled(model: GPT2LMHeadModel) -> None:
    plain = sample(model, temperature=0.0, max_new_tokens=40)
    penalised = sample(model, temperature=0.0, max_new_tokens=40, repetition_penalty=5.0)
    assert penalised != plain
    assert len(set(penalised)) > len(set(plain))


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
    tokens = generate_one(model, [1] * prompt_length, SamplingParams(max_new_tokens=max_new_tokens))
    with pytest.raises(InvalidInputError, match=message):
        next(tokens)


def test_prompt_that_exactly_fills_the_window_is_accepted(model: GPT2LMHeadModel) -> None:
    params = SamplingParams(max_new_tokens=2, temperature=0.0)
    assert len(list(generate_one(model, [1] * 1022, params))) == 2


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_new_tokens=0),
        SamplingParams(max_new_tokens=5, temperature=-1.0),
        SamplingParams(max_new_tokens=5, top_k=-1),
        SamplingParams(max_new_tokens=5, top_p=0.0),
        SamplingParams(max_new_tokens=5, top_p=1.5),
        SamplingParams(max_new_tokens=5, repetition_penalty=0.0),
        SamplingParams(max_new_tokens=5, repetition_penalty=11.0),
    ],
)
def test_invalid_sampling_parameters_are_rejected(params: SamplingParams) -> None:
    with pytest.raises(InvalidInputError):
        params.validate()


def test_token_ids_outside_the_vocabulary_are_rejected(model: GPT2LMHeadModel) -> None:
    tokens = generate_one(model, [model.config.vocab_size], SamplingParams(max_new_tokens=1))
    with pytest.raises(InvalidInputError, match="input_ids must be in"):
        next(tokens)
