"""python -m services.text_generation"""

from __future__ import annotations

import asyncio

from tokenizers import Tokenizer

from genmedia.v1 import text_generation_pb2_grpc as pb_grpc
from services.common import tracing
from services.common.registry import TEXT_GENERATION
from services.common.request_context import configure_logging
from services.common.server import ServedProcess, run_server
from services.common.settings import load_settings
from services.common.triton import TritonClient
from services.text_generation.generator import TextGenerator, TextModelInfo
from services.text_generation.servicer import TextGenerationServicer
from services.text_generation.settings import TextGenerationSettings


async def main() -> None:
    settings = load_settings(TextGenerationSettings)
    configure_logging(settings.log_level.value, settings.log_format.value)
    tracing.setup(TEXT_GENERATION.name, settings.otlp_endpoint)
    tokenizer_file = settings.tokenizer_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise SystemExit(f"GENMEDIA_TOKENIZER_DIR: {tokenizer_file} does not exist")
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    triton = TritonClient.from_settings(settings)
    generator = TextGenerator(
        settings, tokenizer, TextModelInfo.load(settings.tokenizer_dir, tokenizer), triton
    )
    servicer = TextGenerationServicer(generator)
    (service_name,) = TEXT_GENERATION.grpc_services
    await run_server(
        settings,
        ServedProcess(
            service_names=TEXT_GENERATION.grpc_services,
            register=lambda server: pb_grpc.add_TextGenerationServiceServicer_to_server(
                servicer, server
            ),
            readiness={service_name: generator.ready},
            on_close=triton.close,
        ),
    )


if __name__ == "__main__":
    asyncio.run(main())
