"""One call of each kind of the public API, as the fault tests and the soak make them:
each raises grpc.RpcError when the call fails, or Incomplete when a stream was cut short."""

from __future__ import annotations

import io
from collections.abc import Callable

import grpc
import numpy as np
from PIL import Image

from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_generation_pb2_grpc as gen_grpc
from genmedia.v1 import image_translation_pb2 as trans_pb
from genmedia.v1 import image_translation_pb2_grpc as trans_grpc
from genmedia.v1 import text_generation_pb2 as text_pb
from genmedia.v1 import text_generation_pb2_grpc as text_grpc
from tools.traffic import Incomplete


def open_channel(
    address: str, credentials: grpc.ChannelCredentials | None = None, **options: int
) -> grpc.Channel:
    settings = [("grpc.max_receive_message_length", 64 * 1024 * 1024), *options.items()]
    if credentials is None:
        return grpc.insecure_channel(address, options=settings)
    return grpc.secure_channel(address, credentials, options=settings)


def photo() -> bytes:
    pixels = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


PHOTO = photo()


def generate(channel: grpc.Channel, n: int) -> None:
    # Class 1 exists in every pack (ImageNet's goldfish, the demo pack's digit 1).
    request = gen_pb.GenerateImagesRequest(classes=[gen_pb.ClassSelector(id=1)], count=4, seed=n)
    gen_grpc.ImageGenerationServiceStub(channel).GenerateImages(request, timeout=30)


_translation_models: dict[int, str] = {}


def translate(channel: grpc.Channel, _: int) -> None:
    """Translates with the first model the stack serves (the test pack's or the demo pack's)."""
    stub = trans_grpc.ImageTranslationServiceStub(channel)
    if id(channel) not in _translation_models:
        models = stub.ListModels(trans_pb.ListModelsRequest(), timeout=30).models
        _translation_models[id(channel)] = models[0].name
    request = trans_pb.TranslateImageRequest(image=PHOTO, model=_translation_models[id(channel)])
    stub.TranslateImage(request, timeout=30)


def stream(channel: grpc.Channel, n: int, tokens: int = 120) -> None:
    request = text_pb.GenerateTextRequest(prompt="Once", max_new_tokens=tokens, seed=n)
    replies = list(text_grpc.TextGenerationServiceStub(channel).StreamText(request, timeout=30))
    if not replies or replies[-1].finish_reason == text_pb.FINISH_REASON_UNSPECIFIED:
        raise Incomplete(f"stream ended after {len(replies)} messages without a finish reason")


def write(channel: grpc.Channel, n: int) -> None:
    request = text_pb.GenerateTextRequest(prompt="Twice", max_new_tokens=40, seed=n)
    text_grpc.TextGenerationServiceStub(channel).GenerateText(request, timeout=30)


def long_stream(channel: grpc.Channel, n: int) -> None:
    stream(channel, n, tokens=300)


CallOn = Callable[[grpc.Channel, int], None]


class PerWorker:
    """A traffic function: each worker calls through a channel of its own."""

    def __init__(self, address: str, calls: list[CallOn]) -> None:
        self._address = address
        self._calls = calls
        self._channels: dict[int, grpc.Channel] = {}

    def __call__(self, worker: int, n: int) -> None:
        if worker not in self._channels:
            self._channels[worker] = open_channel(self._address)
        self._calls[worker % len(self._calls)](self._channels[worker], worker * 100_000 + n)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
