"""Locust users that call genmedia through its gateway, over gRPC and over HTTP.

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
  (default ``0.5,2``);
- ``GENMEDIA_LOADTEST_HTTP_HOST``: the gateway's HTTP door (``http://gateway:8080``);
  when set, OpenAI-API users (locust's FastHttpUser) join the gRPC ones, their
  requests named after the route (``POST /v1/completions``...).
"""

from __future__ import annotations

import base64
import io
import os
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, between, events, task
from locust.contrib.fasthttp import FastHttpUser
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


HTTP_HOST = os.environ.get("GENMEDIA_LOADTEST_HTTP_HOST", "").rstrip("/")


class OpenAiUser(FastHttpUser):
    """A user of the gateway's HTTP door, with the OpenAI API's shapes. Its URLs are
    absolute: locust's --host (the gRPC address) would otherwise be their base."""

    abstract = True
    host = HTTP_HOST
    wait_time = think_time()
    network_timeout = timeout_s()

    def on_start(self) -> None:
        key = api_key()
        self.headers = {"authorization": f"Bearer {key}"} if key else {}

    def post(self, path: str, body: dict[str, Any], name: str | None = None) -> Any:
        """One JSON POST; its answer, or None when it failed (reported to locust)."""
        with self.client.post(
            HTTP_HOST + path,
            json=body,
            name=name or f"POST {path}",
            headers=self.headers,
            catch_response=True,
        ) as reply:
            if reply.status_code != 200:
                reply.failure(f"HTTP {reply.status_code}: {(reply.text or '')[:200]}")
                return None
            return reply.json()


class OpenAiTextUser(OpenAiUser):
    """Streams completions over SSE (as a chat UI would), sometimes asks for one reply."""

    abstract = not HTTP_HOST
    weight = 3

    def body(self) -> dict[str, Any]:
        return {
            "model": "gpt2",
            "prompt": random.choice(PROMPTS),
            "max_tokens": random.choice((16, 32, 64)),
            "seed": random.randrange(1 << 31),
        }

    @task(3)
    def stream_completion(self) -> None:
        # Headers come with the first token (the door waits for it), so locust's time for a
        # streamed request is the time to the first token; the whole stream is one more entry.
        started = time.perf_counter()
        with self.client.post(
            HTTP_HOST + "/v1/completions",
            json={**self.body(), "stream": True},
            name="POST /v1/completions stream (first token)",
            stream=True,
            headers=self.headers,
            catch_response=True,
        ) as reply:
            if reply.status_code != 200:
                reply.failure(f"HTTP {reply.status_code}")
                return
            content = reply.stream.read()
        error = None if content.rstrip().endswith(b"data: [DONE]") else ValueError("no [DONE]")
        events.request.fire(
            request_type="POST",
            name="POST /v1/completions stream",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=len(content),
            exception=error,
            context={},
        )

    @task(1)
    def completion(self) -> None:
        self.post("/v1/completions", self.body())


class OpenAiImageUser(OpenAiUser):
    """Generates images by class name; now and then translates one as JSON."""

    abstract = not HTTP_HOST
    weight = 2

    def on_start(self) -> None:
        super().on_start()
        reply = self.client.get(
            HTTP_HOST + "/v1/genmedia/classes",
            name="GET /v1/genmedia/classes",
            headers=self.headers,
        )
        listed = reply.json().get("classes", []) if reply.status_code == 200 else []
        self.class_names = [c["name"] for c in listed][:50] or ["goldfish"]
        reply = self.client.get(
            HTTP_HOST + "/v1/models", name="GET /v1/models", headers=self.headers
        )
        models = reply.json().get("data", []) if reply.status_code == 200 else []
        self.directions = [m["id"] for m in models if m.get("genmedia_kind") == "image-translation"]
        self.image = base64.b64encode(sample_png()).decode()

    @task(5)
    def generate(self) -> None:
        self.post(
            "/v1/images/generations",
            {"prompt": random.choice(self.class_names), "n": random.choice((1, 1, 2)),
             "seed": random.randrange(1 << 31)},
        )  # fmt: skip

    @task(2)
    def translate(self) -> None:
        if self.directions:
            body = {"image": self.image, "model": random.choice(self.directions)}
            self.post("/v1/genmedia/images:translate", body)
