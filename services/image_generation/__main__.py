"""python -m services.image_generation"""

from __future__ import annotations

import asyncio

from genmedia.v1 import image_generation_pb2_grpc as pb_grpc
from services.common.model_service import serve_model_service
from services.common.registry import IMAGE_GENERATION
from services.common.server import set_up_process
from services.common.settings import load_settings
from services.common.triton import TritonClient
from services.image_generation.generator import ImageGenerator
from services.image_generation.servicer import ImageGenerationServicer
from services.image_generation.settings import ImageGenerationSettings


async def main() -> None:
    settings = load_settings(ImageGenerationSettings)
    set_up_process(IMAGE_GENERATION, settings)
    triton = TritonClient.from_settings(settings)
    servicer = ImageGenerationServicer(ImageGenerator(settings, triton))

    async def ready() -> bool:
        return await triton.is_model_ready(settings.generator_model)

    await serve_model_service(
        IMAGE_GENERATION,
        settings,
        triton,
        lambda server: pb_grpc.add_ImageGenerationServiceServicer_to_server(servicer, server),
        ready,
    )


if __name__ == "__main__":
    asyncio.run(main())
