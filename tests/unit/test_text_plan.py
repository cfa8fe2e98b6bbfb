"""Planning a text request: the prompt is tokenized off the event loop, to the same ids."""

from __future__ import annotations

import threading
from pathlib import Path

from tokenizers import Encoding, Tokenizer

from genmedia.v1 import text_generation_pb2 as pb
from services.text_generation.generator import TextGenerator, TextModelInfo
from services.text_generation.settings import TextGenerationSettings


class ThreadRecordingTokenizer:
    """A real tokenizer that notes the threads its batch encoding runs on."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.threads: list[threading.Thread] = []

    def encode_batch(self, texts: list[str]) -> list[Encoding]:
        self.threads.append(threading.current_thread())
        return self.tokenizer.encode_batch(texts)


def generator(tokenizer: object, tmp_path: Path) -> TextGenerator:
    settings = TextGenerationSettings(triton_url="fake", tokenizer_dir=tmp_path)
    info = TextModelInfo(context_length=256, eos_token_ids=frozenset([0]))
    return TextGenerator(settings, tokenizer, info, None)  # type: ignore[arg-type]


async def test_the_prompt_is_tokenized_off_the_event_loop_to_the_same_ids(
    byte_level_tokenizer: Tokenizer, tmp_path: Path
) -> None:
    recording = ThreadRecordingTokenizer(byte_level_tokenizer)
    prompt = "Tokenize me 🧪 away from the loop"
    plan = await generator(recording, tmp_path).plan(
        pb.GenerateTextRequest(prompt=prompt, max_new_tokens=4)
    )
    assert plan.prompt_ids == byte_level_tokenizer.encode(prompt).ids
    assert recording.threads and threading.main_thread() not in recording.threads
