"""python -m services.text_generation"""

from __future__ import annotations

import asyncio

from tokenizers import Tokenizer

from genmedia.v1 import text_generation_pb2_grpc as pb_grpc
from services.common.model_service import serve_model_service
from services.common.registry import TEXT_GENERATION
from services.common.server import set_up_process
from services.common.settings import load_settings
from services.common.triton import TritonClient
from services.text_generation.generator import TextGenerator, TextModelInfo
from services.text_generation.servicer import TextGenerationServicer
from services.text_generation.settings import TextGenerationSettings


async def main() -> None:
    settings = load_settings(TextGenerationSettings)
    set_up_process(TEXT_GENERATION, settings)
    tokenizer_file = settings.tokenizer_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise SystemExit(f"GENMEDIA_TOKENIZER_DIR: {tokenizer_file} does not exist")
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    triton = TritonClient.from_settings(settings)
    generator = TextGenerator(
        settings, tokenizer, TextModelInfo.load(settings.tokenizer_dir, tokenizer), triton
    )
    servicer = TextGenerationServicer(generator)
    await serve_model_service(
        TEXT_GENERATION,
        settings,
        triton,
        lambda server: pb_grpc.add_TextGenerationServiceServicer_to_server(servicer, server),
        generator.ready,
    )


if __name__ == "__main__":
    asyncio.run(main())
