"""gRPC in and out for TextGenerationService; the work is in TextGenerator."""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpc import aio

from genmedia.v1 import text_generation_pb2 as pb
from genmedia.v1 import text_generation_pb2_grpc as pb_grpc
from services.common.request_context import current_request_id
from services.common.usage import Usage, report_usage
from services.text_generation.generator import TextGenerator


class TextGenerationServicer(pb_grpc.TextGenerationServiceServicer):
    def __init__(self, generator: TextGenerator) -> None:
        self._generator = generator

    async def GenerateText(
        self, request: pb.GenerateTextRequest, context: aio.ServicerContext
    ) -> pb.GenerateTextResponse:
        response = await self._generator.generate(
            request, current_request_id(), context.time_remaining()
        )
        report_usage(Usage(tokens=response.usage.generated_tokens))
        return response

    async def StreamText(
        self, request: pb.GenerateTextRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.StreamTextResponse]:
        async for chunk in self._generator.stream(
            request, current_request_id(), context.time_remaining()
        ):
            if chunk.HasField("usage"):
                report_usage(Usage(tokens=chunk.usage.generated_tokens))
            yield chunk

    async def ListModels(
        self, request: pb.ListTextModelsRequest, context: aio.ServicerContext
    ) -> pb.ListTextModelsResponse:
        return pb.ListTextModelsResponse(models=[await self._generator.describe()])
