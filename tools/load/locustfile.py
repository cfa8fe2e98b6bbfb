"""Locust users that call genmedia through its gateway over gRPC.

    locust -f tools/load/locustfile.py --host gateway:50051 --headless -u 20 -r 5 -t 2m

gRPC runs on gevent (``grpc.experimental.gevent``), as locust's gRPC example
does, so thousands of users share one process. Every call is reported to
locust as request type ``grpc`` named after its RPC; a failed call is
reported with its status code name, so the failures table groups them by
code. StreamText reports two entries: the time to its first token and the
time to its last. Settings come from the environment:

- ``GENMEDIA_API_KEY`` (or a file named by ``GENMEDIA_API_KEY_FILE``, a
  mounted Secret): sent as ``authorization: Bearer <key>``;
- ``GENMEDIA_LOADTEST_TLS=1``: TLS with the system roots (an Ingress);
- ``GENMEDIA_LOADTEST_TIMEOUT_S``: deadline of each call (default 60);
- ``GENMEDIA_LOADTEST_WAIT_S``: ``min,max`` think time between a user's calls
  (default ``0.5,2``).
"""

from __future__ import annotations

import io
import os
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, between, events, task
from PIL import Image

from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_generation_pb2_grpc as gen_grpc
from genmedia.v1 import image_translation_pb2 as trans_pb
from genmedia.v1 import image_translation_pb2_grpc as trans_grpc
from genmedia.v1 import text_generation_pb2 as text_pb
from genmedia.v1 import text_generation_pb2_grpc as text_grpc

grpc_gevent.init_gevent()  # before any channel exists

PROMPTS = ("def main(", "import numpy as np\n", "class Config:", "The model", "Returns the")


def gateway_target(host: str | None) -> str:
    """host:port from locust's --host, which may carry a grpc:// or http:// scheme."""
    if not host:
        raise ValueError("give the gateway address with --host, e.g. --host localhost:50051")
    return host.split("://", 1)[-1].rstrip("/")


def timeout_s() -> float:
    return float(os.environ.get("GENMEDIA_LOADTEST_TIMEOUT_S", "60"))


def api_key() -> str:
    key_file = os.environ.get("GENMEDIA_API_KEY_FILE")
    if key_file:
        with open(key_file, encoding="utf-8") as file:
            return file.read().strip()
    return os.environ.get("GENMEDIA_API_KEY", "")


def think_time() -> Callable[[User], float]:
    low, high = (float(v) for v in os.environ.get("GENMEDIA_LOADTEST_WAIT_S", "0.5,2").split(","))
    return between(low, high)


class GrpcUser(User):
    """A user with one channel to the gateway; calls are timed and reported to locust."""

    abstract = True
    wait_time = think_time()

    def on_start(self) -> None:
        target = gateway_target(self.host)
        if os.environ.get("GENMEDIA_LOADTEST_TLS") == "1":
            self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials())
        else:
            self.channel = grpc.insecure_channel(target)
        key = api_key()
        self.metadata = (("authorization", f"Bearer {key}"),) if key else ()

    def on_stop(self) -> None:
        self.channel.close()

    def report(self, name: str, started: float, length: int, error: Exception | None) -> None:
        events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=error,
            context={},
        )

    def call(self, name: str, method: Callable[..., Any], request: Any) -> Any:
        """One unary call, reported under `name`; None when it failed."""
        started = time.perf_counter()
        try:
            reply = method(request, timeout=timeout_s(), metadata=self.metadata)
        except grpc.RpcError as error:
            self.report(name, started, 0, StatusError(error))
            return None
        self.report(name, started, reply.ByteSize(), None)
        return reply


class StatusError(Exception):
    """A failed call, named by its status code so locust groups failures by code."""

    def __init__(self, error: grpc.RpcError) -> None:
        code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = error.details() if isinstance(error, grpc.Call) else str(error)
        super().__init__(f"{code.name}: {details}")


class ImageGenerationUser(GrpcUser):
    """Generates a few images of a random class; now and then browses the classes."""

    weight = 3

    def on_start(self) -> None:
        super().on_start()
        self.stub = gen_grpc.ImageGenerationServiceStub(self.channel)
        listed = self.call("ListClasses", self.stub.ListClasses, gen_pb.ListClassesRequest())
        self.class_ids = [c.id for c in listed.classes] if listed else [0]

    @task(5)
    def generate_images(self) -> None:
        request = gen_pb.GenerateImagesRequest(
            classes=[gen_pb.ClassSelector(id=random.choice(self.class_ids))],
            count=random.choice((1, 1, 2, 4)),
            seed=random.randrange(1 << 31),
        )
        self.call("GenerateImages", self.stub.GenerateImages, request)

    @task(1)
    def list_classes(self) -> None:
        self.call("ListClasses", self.stub.ListClasses, gen_pb.ListClassesRequest(query="a"))


def sample_png(side: int = 64) -> bytes:
    """A small image with some structure (a gradient), as a client would upload."""
    image = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class ImageTranslationUser(GrpcUser):
    """Translates a small PNG in a direction the server offers."""

    weight = 2

    def on_start(self) -> None:
        super().on_start()
        self.stub = trans_grpc.ImageTranslationServiceStub(self.channel)
        listed = self.call("ListModels", self.stub.ListModels, trans_pb.ListModelsRequest())
        self.models = [m.name for m in listed.models] if listed else ["horse2zebra"]
        self.image = sample_png()

    @task(5)
    def translate_image(self) -> None:
        request = trans_pb.TranslateImageRequest(image=self.image, model=random.choice(self.models))
        self.call("TranslateImage", self.stub.TranslateImage, request)

    @task(1)
    def list_models(self) -> None:
        self.call("ListModels", self.stub.ListModels, trans_pb.ListModelsRequest())


class TextGenerationUser(GrpcUser):
    """Mostly streams completions (as a chat UI would), sometimes asks for one reply."""

    weight = 3

    def on_start(self) -> None:
        super().on_start()
        self.stub = text_grpc.TextGenerationServiceStub(self.channel)

    def text_request(self) -> text_pb.GenerateTextRequest:
        return text_pb.GenerateTextRequest(
            prompt=random.choice(PROMPTS),
            max_new_tokens=random.choice((16, 32, 64)),
            seed=random.randrange(1 << 31),
        )

    @task(3)
    def stream_text(self) -> None:
        started = time.perf_counter()
        length = 0
        first = True
        try:
            stream: Iterator[text_pb.StreamTextResponse] = self.stub.StreamText(
                self.text_request(), timeout=timeout_s(), metadata=self.metadata
            )
            for reply in stream:
                length += reply.ByteSize()
                if first:
                    self.report("StreamText (first token)", started, length, None)
                    first = False
        except grpc.RpcError as error:
            self.report("StreamText", started, length, StatusError(error))
            return
        self.report("StreamText", started, length, None)

    @task(1)
    def generate_text(self) -> None:
        self.call("GenerateText", self.stub.GenerateText, self.text_request())
