"""python -m services.image_generation"""

from __future__ import annotations

import asyncio

from genmedia.v1 import image_generation_pb2_grpc as pb_grpc
from services.common import tracing
from services.common.registry import IMAGE_GENERATION
from services.common.request_context import configure_logging
from services.common.server import ServedProcess, run_server
from services.common.settings import load_settings
from services.common.triton import TritonClient
from services.image_generation.generator import ImageGenerator
from services.image_generation.servicer import ImageGenerationServicer
from services.image_generation.settings import ImageGenerationSettings


async def main() -> None:
    settings = load_settings(ImageGenerationSettings)
    configure_logging(settings.log_level.value, settings.log_format.value)
    tracing.setup(IMAGE_GENERATION.name, settings.otlp_endpoint)
    triton = TritonClient.from_settings(settings)
    generator = ImageGenerator(settings, triton)
    servicer = ImageGenerationServicer(generator)
    (service_name,) = IMAGE_GENERATION.grpc_services

    async def ready() -> bool:
        return await triton.is_model_ready(settings.generator_model)

    await run_server(
        settings,
        ServedProcess(
            service_names=IMAGE_GENERATION.grpc_services,
            register=lambda server: pb_grpc.add_ImageGenerationServiceServicer_to_server(
                servicer, server
            ),
            readiness={service_name: ready},
            on_close=triton.close,
        ),
    )


if __name__ == "__main__":
    asyncio.run(main())
