"""python -m services.image_translation"""

from __future__ import annotations

import asyncio

from genmedia.v1 import image_translation_pb2_grpc as pb_grpc
from services.common import tracing
from services.common.registry import IMAGE_TRANSLATION
from services.common.request_context import configure_logging
from services.common.server import ServedProcess, run_server
from services.common.settings import load_settings
from services.common.triton import TritonClient
from services.image_translation.servicer import ImageTranslationServicer
from services.image_translation.settings import ImageTranslationSettings
from services.image_translation.translator import ImageTranslator


async def main() -> None:
    settings = load_settings(ImageTranslationSettings)
    configure_logging(settings.log_level.value, settings.log_format.value)
    tracing.setup(IMAGE_TRANSLATION.name, settings.otlp_endpoint)
    triton = TritonClient.from_settings(settings)
    translator = ImageTranslator(settings, triton)
    servicer = ImageTranslationServicer(translator)
    (service_name,) = IMAGE_TRANSLATION.grpc_services
    await run_server(
        settings,
        ServedProcess(
            service_names=IMAGE_TRANSLATION.grpc_services,
            register=lambda server: pb_grpc.add_ImageTranslationServiceServicer_to_server(
                servicer, server
            ),
            readiness={service_name: translator.ready},
            on_close=triton.close,
        ),
    )


if __name__ == "__main__":
    asyncio.run(main())
