import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

CORPUS = [
    "The meeting about deep fakes started late. Café owners, naïve résumés.",
    "Synthetic media is cheap to make at scale: 日本語のテキスト and emoji 😀🎉 too.",
    "Stop sequences end generation before the stop text appears.",
] * 20


@pytest.fixture(scope="session")
def byte_level_tokenizer() -> Tokenizer:
    """A small byte-level BPE tokenizer, like GPT-2's, trained on the spot."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer


# A real redis-server, for the tests that run the quota store's cases against Redis.
from tests.unit.redis_fixture import redis_client, redis_server  # noqa: E402, F401
