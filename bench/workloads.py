"""The model calls every bench makes, with the same inputs on every side of a comparison.

A side is where a call is sent:

- ``in-process``: the model's own PyTorch code in the bench process (``bench.inprocess``);
- ``triton``: Triton's gRPC endpoint, with the tensors the service would send;
- ``service``: the model's gRPC service;
- ``gateway``: the gateway, with an API key, in front of the service.

Each call is built once from the weights being served, so the request a
service receives and the tensors Triton or the in-process model receive
describe the same work (same seed, same noise, same pixels, same prompt).
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from grpc import aio
from PIL import Image
from tokenizers import Tokenizer
from tritonclient.grpc import aio as triton_aio

from bench.common import CHANNEL_OPTIONS, MAX_MESSAGE_BYTES, BenchStack
from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_generation_pb2_grpc as gen_grpc
from genmedia.v1 import image_translation_pb2 as trans_pb
from genmedia.v1 import image_translation_pb2_grpc as trans_grpc
from genmedia.v1 import text_generation_pb2 as text_pb
from genmedia.v1 import text_generation_pb2_grpc as text_grpc
from services.common.registry import GATEWAY, IMAGE_GENERATION, IMAGE_TRANSLATION, TEXT_GENERATION
from services.common.triton import TritonClient
from services.image_generation.noise import truncated_noise

T = TypeVar("T")
SIDES = ("in-process", "triton", "service", "gateway")
Z_DIM = 128
TRUNCATION = 0.4
CLASS_ID = 1
PROMPT = "Returns the"


@dataclass(frozen=True)
class StreamTiming:
    """When a token stream's first token arrived, when it ended, and how many tokens it had."""

    first_s: float
    total_s: float
    tokens: int

    @property
    def inter_token_s(self) -> float:
        """Mean time between tokens after the first (a stream's decode speed)."""
        return (self.total_s - self.first_s) / max(self.tokens - 1, 1)


@dataclass(frozen=True)
class ImageCall:
    """One BigGAN image of a fixed class; the seed varies per call."""

    num_classes: int

    def request(self, seed: int) -> gen_pb.GenerateImagesRequest:
        return gen_pb.GenerateImagesRequest(
            classes=[gen_pb.ClassSelector(id=CLASS_ID)], count=1, seed=seed, truncation=TRUNCATION
        )

    def tensors(self, seed: int) -> dict[str, np.ndarray]:
        """What image-generation sends Triton for ``request(seed)``."""
        class_vector = np.zeros((1, self.num_classes), dtype=np.float32)
        class_vector[0, CLASS_ID] = 1.0
        return {
            "z": truncated_noise(seed, 1, Z_DIM, TRUNCATION),
            "class_vector": class_vector,
            "truncation": np.full((1, 1), TRUNCATION, dtype=np.float32),
        }


@dataclass(frozen=True)
class TranslateCall:
    """One image at the model's working size, so the service's resize changes nothing."""

    direction: str
    side: int
    png: bytes
    pixels: np.ndarray
    """[1, side, side, 3] uint8: what image-translation sends Triton."""

    @property
    def triton_model(self) -> str:
        return f"cyclegan_{self.direction}"

    def request(self) -> trans_pb.TranslateImageRequest:
        return trans_pb.TranslateImageRequest(image=self.png, model=self.direction)


@dataclass(frozen=True)
class TextCall:
    """A prompt and a number of new tokens; the seed varies per call."""

    prompt_ids: tuple[int, ...]
    max_new_tokens: int

    def request(self, seed: int) -> text_pb.GenerateTextRequest:
        return text_pb.GenerateTextRequest(
            prompt=PROMPT, max_new_tokens=self.max_new_tokens, seed=seed, temperature=1.0
        )

    def tensors(self, seed: int, single: bool = False) -> dict[str, np.ndarray]:
        """What text-generation sends Triton for ``request(seed)``: StreamText streams, and
        GenerateText (``single``, no stop sequences) gets every token in one response."""
        return {
            "input_ids": np.asarray(self.prompt_ids, dtype=np.int64),
            "max_new_tokens": np.asarray([self.max_new_tokens], dtype=np.int32),
            "temperature": np.asarray([1.0], dtype=np.float32),
            "top_k": np.asarray([0], dtype=np.int32),
            "top_p": np.asarray([1.0], dtype=np.float32),
            "seed": np.asarray([seed], dtype=np.int64),
            "single_response": np.asarray([single], dtype=np.bool_),
        }


def _resolution(model_dir: Path, default: int) -> int:
    metadata = model_dir / "genmedia.json"
    stated = json.loads(metadata.read_text()).get("resolution", 0) if metadata.is_file() else 0
    return int(stated) if stated and int(stated) % 4 == 0 else default


def gradient_image(side: int) -> tuple[bytes, np.ndarray]:
    """A PNG with some structure and its pixels as a [1, side, side, 3] batch."""
    image = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), np.array(image, dtype=np.uint8)[None, ...]  # writable, as torch wants


@dataclass(frozen=True)
class Workloads:
    images: ImageCall
    translate: TranslateCall
    text: TextCall

    @classmethod
    def for_weights(cls, weights: Path, text_tokens: int = 16) -> Workloads:
        config = json.loads((weights / "biggan" / "config.json").read_text())
        direction = sorted(p.parent.name for p in weights.glob("cyclegan/*/latest_net_G.pth"))[0]
        # The service's default working size when the weights state none (as in its settings).
        side = _resolution(weights / "cyclegan" / direction, 256)
        png, pixels = gradient_image(side)
        tokenizer = Tokenizer.from_file(str(weights / "gpt2" / "tokenizer.json"))
        return cls(
            images=ImageCall(num_classes=int(config["num_classes"])),
            translate=TranslateCall(direction=direction, side=side, png=png, pixels=pixels),
            text=TextCall(tuple(tokenizer.encode(PROMPT).ids), text_tokens),
        )


@dataclass(frozen=True)
class Addresses:
    triton: str
    image_generation: str
    image_translation: str
    text_generation: str
    gateway: str
    gateway_metadata: tuple[tuple[str, str], ...] = ()
    passthrough: str | None = None
    """A bare pass-through proxy in front of the services (the floor of a Python gRPC hop)."""

    @classmethod
    def of(cls, running: BenchStack, passthrough: str | None = None) -> Addresses:
        ports = running.stack.ports
        return cls(
            triton=running.stack.triton.grpc_url,
            image_generation=ports.address(IMAGE_GENERATION),
            image_translation=ports.address(IMAGE_TRANSLATION),
            text_generation=ports.address(TEXT_GENERATION),
            gateway=ports.address(GATEWAY),
            gateway_metadata=running.gateway_metadata,
            passthrough=passthrough,
        )


class Clients:
    """Channels to every part, opened inside the running event loop (grpc.aio needs that)."""

    def __init__(self, addresses: Addresses) -> None:
        self.addresses = addresses
        # The service's own Triton client: the direct side takes the very hop the service takes.
        self.triton = TritonClient(addresses.triton, MAX_MESSAGE_BYTES, default_timeout_s=600)
        targets = {
            addresses.image_generation,
            addresses.image_translation,
            addresses.text_generation,
            addresses.gateway,
        }
        if addresses.passthrough:
            targets.add(addresses.passthrough)
        self._channels = {
            address: aio.insecure_channel(address, options=CHANNEL_OPTIONS) for address in targets
        }
        self._floor_inputs: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        self._statistics = triton_aio.InferenceServerClient(addresses.triton)

    def _channel(self, side: str, service_address: str) -> tuple[aio.Channel, tuple]:
        if side == "gateway":
            return self._channels[self.addresses.gateway], self.addresses.gateway_metadata
        if side == "service":
            return self._channels[service_address], ()
        if side == "passthrough" and self.addresses.passthrough:
            return self._channels[self.addresses.passthrough], ()
        raise ValueError(f"no gRPC service on side {side!r}")

    def images(self, side: str) -> tuple[gen_grpc.ImageGenerationServiceStub, tuple]:
        channel, metadata = self._channel(side, self.addresses.image_generation)
        return gen_grpc.ImageGenerationServiceStub(channel), metadata

    def translation(self, side: str) -> tuple[trans_grpc.ImageTranslationServiceStub, tuple]:
        channel, metadata = self._channel(side, self.addresses.image_translation)
        return trans_grpc.ImageTranslationServiceStub(channel), metadata

    def text(self, side: str) -> tuple[text_grpc.TextGenerationServiceStub, tuple]:
        channel, metadata = self._channel(side, self.addresses.text_generation)
        return text_grpc.TextGenerationServiceStub(channel), metadata

    async def stream(
        self, side: str, call: TextCall, seed: int, single: bool = False
    ) -> StreamTiming:
        """One stream, timed at its first and last arrival; tokens as generated."""
        started = time.perf_counter()
        first: float | None = None
        tokens = 0
        if side == "triton":
            tensors = call.tensors(seed, single)
            async for ids in self.triton.stream("gpt2", tensors, "token_id", "bench", 600):
                first = time.perf_counter() - started if first is None else first
                tokens += ids.size
        else:
            stub, metadata = self.text(side)
            request = call.request(seed)
            async for message in stub.StreamText(request, metadata=metadata, timeout=600):
                first = time.perf_counter() - started if first is None else first
                # Deltas carry whole characters; the last message counts the tokens.
                tokens = message.usage.generated_tokens or tokens
        return StreamTiming(first or 0.0, time.perf_counter() - started, tokens)

    async def triton_statistics(self, model: str) -> dict:
        """Triton's own inference statistics of ``model`` (JSON)."""
        return await self._statistics.get_inference_statistics(model, as_json=True)

    async def floor(self, sent: int, received: int) -> None:
        """One call of the Triton floor model with these payload sizes (bench/triton/floor)."""
        inputs = self._floor_inputs.get((sent, received))
        if inputs is None:
            inputs = self._floor_inputs[(sent, received)] = {
                "data": np.zeros(sent, dtype=np.uint8),
                "reply_bytes": np.asarray([received], dtype=np.int64),
            }
        await self.triton.infer("floor", inputs, ["data"], "bench", 600)

    async def floor_stream(self, count: int) -> int:
        """A Triton stream of ``count`` responses that computes nothing (floor_stream)."""
        inputs = {"count": np.asarray([count], dtype=np.int64)}
        received = 0
        async for ids in self.triton.stream("floor_stream", inputs, "token_id", "bench", 600):
            received += ids.size
        return received

    async def ready(self) -> None:
        await asyncio.gather(*(channel.channel_ready() for channel in self._channels.values()))

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))
        await self.triton.close()
        await self._statistics.close()


def run_with_clients(addresses: Addresses, body: Callable[[Clients], Awaitable[T]]) -> T:
    """Runs ``body`` in a new event loop with clients opened in it (grpc.aio needs that)."""

    async def run() -> T:
        clients = Clients(addresses)
        try:
            return await body(clients)
        finally:
            await clients.close()

    return asyncio.run(run())
