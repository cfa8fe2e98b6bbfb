import pytest
from tokenizers import Tokenizer

from services.text_generation.detokenizer import REPLACEMENT_CHARACTER, IncrementalDetokenizer

TEXTS = [
    "plain ascii text",
    "Café naïve résumé",
    "日本語のテキスト",
    "emoji 😀🎉 and more 🧪",  # 🧪 is unseen in training: split into raw bytes
]


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_never_split_a_character_and_concatenate_to_the_text(
    byte_level_tokenizer: Tokenizer, text: str
) -> None:
    ids = byte_level_tokenizer.encode(text).ids
    detokenizer = IncrementalDetokenizer(byte_level_tokenizer)
    deltas = [detokenizer.push(token) for token in ids]
    deltas.append(detokenizer.flush())
    assert all(REPLACEMENT_CHARACTER not in delta for delta in deltas)
    assert "".join(deltas) == text


def test_multibyte_character_split_over_tokens_is_held_back(
    byte_level_tokenizer: Tokenizer,
) -> None:
    ids = byte_level_tokenizer.encode("🧪").ids
    assert len(ids) > 1, "the test needs a character that spans several tokens"
    detokenizer = IncrementalDetokenizer(byte_level_tokenizer)
    assert [detokenizer.push(token) for token in ids[:-1]] == [""] * (len(ids) - 1)
    assert detokenizer.push(ids[-1]) == "🧪"


def test_incomplete_character_at_the_end_is_flushed_as_replacement(
    byte_level_tokenizer: Tokenizer,
) -> None:
    ids = byte_level_tokenizer.encode("ok 🧪").ids
    detokenizer = IncrementalDetokenizer(byte_level_tokenizer)
    emitted = "".join(detokenizer.push(token) for token in ids[:-1])
    assert emitted == "ok "
    assert detokenizer.flush().startswith(REPLACEMENT_CHARACTER)


def test_model_info_reads_context_and_every_eos_id(tmp_path, byte_level_tokenizer) -> None:
    import json

    from services.text_generation.generator import TextModelInfo

    (tmp_path / "config.json").write_text(json.dumps({"n_positions": 512, "eos_token_id": [0, 7]}))
    info = TextModelInfo.load(tmp_path, byte_level_tokenizer)
    assert info.context_length == 512 and info.eos_token_ids == {0, 7}
    (tmp_path / "config.json").unlink()
    fallback = TextModelInfo.load(tmp_path, byte_level_tokenizer)
    assert fallback.eos_token_ids == {byte_level_tokenizer.token_to_id("<|endoftext|>")}
