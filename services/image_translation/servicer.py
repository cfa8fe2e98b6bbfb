"""gRPC in and out for ImageTranslationService; the work is in ImageTranslator."""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpc import aio

from genmedia.v1 import image_translation_pb2 as pb
from genmedia.v1 import image_translation_pb2_grpc as pb_grpc
from services.common.request_context import current_request_id
from services.common.usage import Usage, report_usage
from services.common.video import DEFAULT_VIDEO_LIMITS, VideoLimits
from services.image_translation.frames import FrameStream
from services.image_translation.translator import ImageTranslator
from services.image_translation.video import VideoCall


class ImageTranslationServicer(pb_grpc.ImageTranslationServiceServicer):
    def __init__(
        self, translator: ImageTranslator, video_limits: VideoLimits = DEFAULT_VIDEO_LIMITS
    ) -> None:
        self._translator = translator
        self._video_limits = video_limits

    async def TranslateImage(
        self, request: pb.TranslateImageRequest, context: aio.ServicerContext
    ) -> pb.TranslateImageResponse:
        response = await self._translator.translate(
            request, current_request_id(), context.time_remaining()
        )
        image = response.image
        report_usage(Usage(megapixels=image.width * image.height / 1e6))
        return response

    async def TranslateFrames(
        self, requests: AsyncIterator[pb.TranslateFramesRequest], context: aio.ServicerContext
    ) -> AsyncIterator[pb.TranslateFramesResponse]:
        stream = FrameStream(self._translator, current_request_id(), context.time_remaining)
        try:
            async for response in stream.translate(requests):
                yield response
        finally:
            # What was translated is charged, however the stream ended.
            report_usage(Usage(megapixels=stream.megapixels))

    async def TranslateVideo(
        self, requests: AsyncIterator[pb.TranslateVideoRequest], context: aio.ServicerContext
    ) -> AsyncIterator[pb.TranslateVideoResponse]:
        call = VideoCall(
            self._translator, current_request_id(), context.time_remaining, self._video_limits
        )
        try:
            async for response in call.translate(requests):
                yield response
        finally:
            report_usage(Usage(megapixels=call.megapixels))

    async def ListModels(
        self, request: pb.ListModelsRequest, context: aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return await self._translator.list_models()
