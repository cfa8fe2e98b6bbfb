"""Prompts reach the logs only when the debug setting asks for it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from genmedia.v1 import text_generation_pb2 as pb
from services.text_generation.generator import TextGenerator, TextModelInfo
from services.text_generation.settings import TextGenerationSettings

PROMPT = "my private note about Alice"


def generator(tokenizer: Tokenizer, tmp_path: Path, log_prompts: bool) -> TextGenerator:
    settings = TextGenerationSettings(
        triton_url="fake", tokenizer_dir=tmp_path, log_prompts=log_prompts
    )
    info = TextModelInfo(context_length=256, eos_token_ids=frozenset([0]))
    return TextGenerator(settings, tokenizer, info, None)  # type: ignore[arg-type]


@pytest.mark.parametrize("log_prompts", [False, True])
async def test_prompt_is_logged_only_with_the_debug_setting(
    byte_level_tokenizer: Tokenizer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    log_prompts: bool,
) -> None:
    caplog.set_level(logging.DEBUG)
    await generator(byte_level_tokenizer, tmp_path, log_prompts).plan(
        pb.GenerateTextRequest(prompt=PROMPT, max_new_tokens=4)
    )
    logged = any(PROMPT in record.getMessage() for record in caplog.records)
    assert logged is log_prompts
