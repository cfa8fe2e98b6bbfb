"""python -m services.image_translation"""

from __future__ import annotations

import asyncio

from genmedia.v1 import image_translation_pb2_grpc as pb_grpc
from services.common.model_service import serve_model_service
from services.common.registry import IMAGE_TRANSLATION
from services.common.server import set_up_process
from services.common.settings import load_settings
from services.common.triton import TritonClient
from services.image_translation.servicer import ImageTranslationServicer
from services.image_translation.settings import ImageTranslationSettings
from services.image_translation.translator import ImageTranslator


async def main() -> None:
    settings = load_settings(ImageTranslationSettings)
    set_up_process(IMAGE_TRANSLATION, settings)
    triton = TritonClient.from_settings(settings)
    translator = ImageTranslator(settings, triton)
    servicer = ImageTranslationServicer(translator, settings.video_limits())
    await serve_model_service(
        IMAGE_TRANSLATION,
        settings,
        triton,
        lambda server: pb_grpc.add_ImageTranslationServiceServicer_to_server(servicer, server),
        translator.ready,
    )


if __name__ == "__main__":
    asyncio.run(main())
