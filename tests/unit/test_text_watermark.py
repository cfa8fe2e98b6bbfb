"""The text watermark: the model's green lists and the detector's are the same, and
the z-score separates watermarked from plain token streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genmedia_models.gpt2.sampling import SamplerState, SamplingParams, pick_tokens
from genmedia_models.gpt2.watermark import GreenList
from services.common.text_watermark import WatermarkDetector

VOCAB = 1000


@pytest.mark.parametrize("key", ["genmedia-development-text-watermark", "another key"])
def test_model_and_detector_compute_the_same_green_lists(key: str) -> None:
    model_side = GreenList(key, VOCAB, gamma=0.25)
    detector = WatermarkDetector(key, VOCAB, gamma=0.25)
    for previous in (0, 1, 7, 999, 123):
        green = model_side.green(previous)
        assert green.dtype == bool and abs(green.mean() - 0.25) < 0.05
        assert [detector.is_green(previous, t) for t in range(VOCAB)] == green.tolist()
        # The bias the model adds is delta exactly on those tokens (its own torch path).
        bias = model_side.bias(previous, torch.device("cpu"))
        assert (bias > 0).tolist() == green.tolist() and float(bias.max()) == model_side.delta
    # Lists differ from one previous token to the next, and from key to key.
    assert not np.array_equal(model_side.green(1), model_side.green(2))
    assert not np.array_equal(model_side.green(1), GreenList("other", VOCAB).green(1))


def sample(watermark: GreenList | None, steps: int, seed: int) -> list[int]:
    """Tokens from flat random logits (a high-entropy model), with or without the bias."""
    logits_rng = torch.Generator().manual_seed(seed)
    state = SamplerState.start(
        SamplingParams(max_new_tokens=steps, seed=seed), [5], VOCAB, torch.device("cpu"), watermark
    )
    tokens = [5]
    for _ in range(steps):
        logits = torch.randn(1, VOCAB, generator=logits_rng)
        tokens += pick_tokens(logits, [state])
    return tokens


def test_watermarked_tokens_score_high_and_plain_ones_do_not() -> None:
    key = "test-key"
    detector = WatermarkDetector(key, VOCAB, gamma=0.25)
    marked = [detector.score(sample(GreenList(key, VOCAB), 200, s)).z_score for s in range(5)]
    plain = [detector.score(sample(None, 200, s)).z_score for s in range(5)]
    wrong_key = WatermarkDetector("not the key", VOCAB, gamma=0.25)
    other = [wrong_key.score(sample(GreenList(key, VOCAB), 200, s)).z_score for s in range(5)]
    assert min(marked) > 8, marked
    assert max(plain) < 4, plain
    assert max(other) < 4, other


def test_score_counts_pairs_and_handles_short_input() -> None:
    detector = WatermarkDetector("k", VOCAB, gamma=0.5)
    assert detector.score([]).tokens_scored == 0
    assert detector.score([3]).z_score == 0.0
    score = detector.score([3, 4, 5, 6])
    assert score.tokens_scored == 3 and 0 <= score.green_tokens <= 3


def test_watermark_settings_come_from_the_config_and_delta_zero_turns_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def config(**values: str) -> dict:
        return {"parameters": {k: {"string_value": v} for k, v in values.items()}}

    monkeypatch.setenv("GENMEDIA_TEXT_WATERMARK_KEY", "from-env")
    found = GreenList.from_config(config(watermark_gamma="0.5", watermark_delta="1.5"), VOCAB)
    assert found is not None and (found.key, found.gamma, found.delta) == ("from-env", 0.5, 1.5)
    assert GreenList.from_config(config(watermark_delta="0"), VOCAB) is None
    with pytest.raises(ValueError, match="gamma"):
        GreenList("k", VOCAB, gamma=1.0)


def test_the_key_comes_from_a_mounted_file_first(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from genmedia_models.gpt2.watermark import DEVELOPMENT_KEY, watermark_key
    from services.gateway.settings import GatewaySettings

    monkeypatch.delenv("GENMEDIA_TEXT_WATERMARK_KEY_FILE", raising=False)
    monkeypatch.delenv("GENMEDIA_TEXT_WATERMARK_KEY", raising=False)
    assert watermark_key() == DEVELOPMENT_KEY
    monkeypatch.setenv("GENMEDIA_TEXT_WATERMARK_KEY", "from-env")
    assert watermark_key() == "from-env"
    secret = tmp_path / "text-watermark.key"
    secret.write_text("from-file\n")
    monkeypatch.setenv("GENMEDIA_TEXT_WATERMARK_KEY_FILE", str(secret))
    assert watermark_key() == "from-file"

    addresses = {
        f"{name}_addr": "localhost:1"
        for name in ("image_generation", "image_translation", "text_generation")
    }
    gateway = GatewaySettings(**addresses, auth_mode="open")
    assert gateway.watermark_key() == "from-file"  # the gateway reads the same variables


def test_the_model_refuses_a_weak_key_outside_development(tmp_path) -> None:
    from genmedia_models.gpt2.watermark import DEVELOPMENT_KEY, watermark_key

    strong = "c" * 64
    assert watermark_key({"GENMEDIA_TEXT_WATERMARK_KEY": strong}) == strong
    for weak in ({}, {"GENMEDIA_TEXT_WATERMARK_KEY": "REPLACE-WITH-A-RANDOM-SECRET-0123456"}):
        with pytest.raises(ValueError, match="GENMEDIA_DEVELOPMENT_MODE=true"):
            watermark_key({**weak, "GENMEDIA_DEVELOPMENT_MODE": "false"})
    assert watermark_key({"GENMEDIA_DEVELOPMENT_MODE": "true"}) == DEVELOPMENT_KEY
    secret = tmp_path / "text-watermark.key"
    secret.write_text("short\n")
    with pytest.raises(ValueError):
        watermark_key({"GENMEDIA_TEXT_WATERMARK_KEY_FILE": str(secret)})
