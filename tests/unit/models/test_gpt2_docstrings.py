"""The docstring GPT-2 trainer: corpus, split, a few training steps, evaluation, sampling."""

from __future__ import annotations

import itertools
import json
import math
import types
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from genmedia_models.gpt2.loading import load_gpt2
from tools.training import gpt2_docstrings as docstrings
from tools.training.report import TrainingReport

# Small enough that a few steps take a second or two.
TINY = docstrings.Gpt2DocstringsConfig(
    vocab_size=320,
    n_positions=64,
    n_embd=32,
    n_layer=1,
    n_head=2,
    sequence_length=32,
    batch_size=4,
    warmup_steps=1,
)
DOCUMENTS = 200
TRAINED_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainingReport]:
    out = tmp_path_factory.mktemp("gpt2_docstrings")
    report = docstrings.train(out, seed=3, steps=3, config=TINY, max_documents=DOCUMENTS)
    return out, report


def test_corpus_holds_thousands_of_distinct_english_docstrings() -> None:
    documents = docstrings.stdlib_docstrings()
    texts = [document.text for document in documents]
    assert len(texts) > 3000
    assert len(set(texts)) == len(texts)
    modules = {document.module for document in documents}
    assert "json/__init__.py" in modules
    assert not any(
        part in module.split("/")
        for module in modules
        for part in ("test", "tests", "idlelib", "turtledemo", "site-packages")
    )
    # Cleaned like inspect.cleandoc: no indentation left over from the source.
    assert all(text == text.strip() for text in texts)


def test_english_filter_drops_symbols_other_scripts_and_single_words() -> None:
    assert docstrings.looks_english("Return the lowercase version of the string.")
    for text in ("¶", "π", "microseconds", "Вернуть строку в нижнем регистре целиком.", "a - b"):
        assert not docstrings.looks_english(text), text


def test_split_is_deterministic_and_disjoint_by_module() -> None:
    first, second = docstrings.build_corpus(), docstrings.build_corpus()
    assert first == second
    train_modules = {document.module for document in first.train}
    heldout_modules = {document.module for document in first.heldout}
    assert train_modules.isdisjoint(heldout_modules)
    assert len(heldout_modules) >= 20
    share = len(first.heldout) / (len(first.train) + len(first.heldout))
    assert 0.05 < share < 0.2
    assert all(docstrings.is_heldout(module) for module in heldout_modules)


def test_unigram_baseline_uses_add_one_smoothed_training_counts() -> None:
    train_stream = torch.tensor([0, 1, 1, 2])  # first token is the leading separator
    heldout_stream = torch.tensor([0, 1, 3])
    # Counts over vocab 4 after add-one: [1, 3, 2, 1] out of 7; tokens 1 and 3 are scored.
    expected = -(math.log(3 / 7) + math.log(1 / 7))
    got = docstrings.unigram_negative_log_likelihood(train_stream, heldout_stream, 4)
    assert got == pytest.approx(expected)


def test_sliding_windows_score_a_long_stream_like_one_pass(
    trained: tuple[Path, TrainingReport],
) -> None:
    model = load_gpt2(trained[0])
    stream = torch.randint(model.config.vocab_size, (model.config.n_positions,))
    with torch.inference_mode():
        log_probs = torch.log_softmax(model(input_ids=stream[None]).logits[0, :-1], dim=-1)
    one_pass = float(-log_probs.gather(1, stream[1:, None]).sum())
    # A stream that fits one window is scored in one pass, whatever the stride.
    assert docstrings.model_negative_log_likelihood(model, stream) == pytest.approx(
        one_pass, rel=1e-5
    )
    # A longer one: every token scored once, so the sum grows by about the extra tokens' loss.
    longer = torch.cat([stream, stream])
    total = docstrings.model_negative_log_likelihood(model, longer)
    assert total / (len(longer) - 1) == pytest.approx(one_pass / (len(stream) - 1), rel=0.2)


def test_training_writes_a_directory_that_loads_like_triton_loads_it(
    trained: tuple[Path, TrainingReport],
) -> None:
    out, report = trained
    assert {path.name for path in out.iterdir()} == TRAINED_FILES
    assert report.model == "gpt2-docstrings"
    assert report.resolution == 0
    assert report.steps == 3
    assert report.parameters > 0
    assert str(DOCUMENTS) in report.dataset

    model = load_gpt2(out)
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    end_of_text = tokenizer.token_to_id("<|endoftext|>")
    assert end_of_text is not None
    assert model.config.bos_token_id == model.config.eos_token_id == end_of_text
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == generation["bos_token_id"] == end_of_text
    assert model.config.vocab_size == tokenizer.get_vocab_size()
    assert model.config.n_positions == TINY.n_positions


def test_a_plan_too_long_for_max_seconds_is_shortened_to_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docstrings.stdlib_docstrings()  # scanned once per session, before the clock starts
    # A clock that advances 0.1 s per reading: about 0.2 s per step, whatever the machine.
    ticks = itertools.count()
    monkeypatch.setattr(
        docstrings, "time", types.SimpleNamespace(monotonic=lambda: next(ticks) * 0.1)
    )
    report = docstrings.train(
        tmp_path, steps=1_000_000, max_seconds=6.0, config=TINY, max_documents=DOCUMENTS
    )
    # The plan shrank to what fits, and that plan ran to its end (so the learning
    # rate annealed) instead of being cut off at max_seconds.
    assert 10 < report.steps < 60
    assert int(report.details["replanned_steps"]) == report.steps
    assert report.details["stopped_early"] == "True"
    assert report.seconds <= 6.0
    assert (tmp_path / "model.safetensors").is_file()


def test_tokenizer_round_trips_spaces_accents_and_emoji(
    trained: tuple[Path, TrainingReport],
) -> None:
    tokenizer = Tokenizer.from_file(str(trained[0] / "tokenizer.json"))
    text = "  Déjà vu: a naïve café in Zürich —\n\tΩ 😀 <tab>  "
    ids = tokenizer.encode(text).ids
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(tokenizer.encode(" Return").ids) == " Return"


def test_evaluate_reports_perplexities_against_the_unigram_baseline(
    trained: tuple[Path, TrainingReport],
) -> None:
    quality = docstrings.evaluate(trained[0], max_documents=DOCUMENTS // 4)
    figures = quality.figures
    assert set(figures) == {
        "heldout_perplexity",
        "unigram_perplexity",
        "perplexity_ratio",
        "heldout_tokens",
    }
    assert figures["heldout_tokens"] > 100
    assert 1.0 < figures["heldout_perplexity"] < math.inf
    assert 1.0 < figures["unigram_perplexity"] < math.inf
    assert figures["perplexity_ratio"] == pytest.approx(
        figures["heldout_perplexity"] / figures["unigram_perplexity"]
    )
    assert quality.targets == {"perplexity_ratio": "<= 0.50"}
    assert quality.passed == (figures["perplexity_ratio"] <= 0.5)


def test_samples_are_text_and_repeat_with_the_seed(trained: tuple[Path, TrainingReport]) -> None:
    first = docstrings.sample_text(trained[0], "Return the", max_new_tokens=12, seed=5)
    assert isinstance(first, str)
    assert first == docstrings.sample_text(trained[0], "Return the", max_new_tokens=12, seed=5)
