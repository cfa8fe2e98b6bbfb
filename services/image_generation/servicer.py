"""gRPC in and out for ImageGenerationService; the work is in ImageGenerator."""

from __future__ import annotations

from grpc import aio

from genmedia.v1 import image_generation_pb2 as pb
from genmedia.v1 import image_generation_pb2_grpc as pb_grpc
from services.common.request_context import current_request_id
from services.common.usage import Usage, report_usage
from services.image_generation.generator import ImageGenerator


class ImageGenerationServicer(pb_grpc.ImageGenerationServiceServicer):
    def __init__(self, generator: ImageGenerator) -> None:
        self._generator = generator

    async def GenerateImages(
        self, request: pb.GenerateImagesRequest, context: aio.ServicerContext
    ) -> pb.GenerateImagesResponse:
        response = await self._generator.generate(
            request, current_request_id(), context.time_remaining()
        )
        report_usage(Usage(images=len(response.images)))
        return response

    async def ListClasses(
        self, request: pb.ListClassesRequest, context: aio.ServicerContext
    ) -> pb.ListClassesResponse:
        return await self._generator.list_classes(request.query)
