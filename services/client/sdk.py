"""A small synchronous client for the gateway (or any single service)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from genmedia.v1 import common_pb2
from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_generation_pb2_grpc as gen_grpc
from genmedia.v1 import image_translation_pb2 as trans_pb
from genmedia.v1 import image_translation_pb2_grpc as trans_grpc
from genmedia.v1 import provenance_pb2 as provenance_pb
from genmedia.v1 import provenance_pb2_grpc as provenance_grpc
from genmedia.v1 import text_generation_pb2 as text_pb
from genmedia.v1 import text_generation_pb2_grpc as text_grpc

DEFAULT_TARGET = "localhost:50051"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
IMAGE_FORMATS = {
    "png": common_pb2.IMAGE_FORMAT_PNG,
    "jpeg": common_pb2.IMAGE_FORMAT_JPEG,
    "webp": common_pb2.IMAGE_FORMAT_WEBP,
}


def tls_credentials(
    ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None
) -> grpc.ChannelCredentials:
    """TLS trusting ``ca_file`` (system roots if None); a client pair for mutual TLS."""

    def read(path: Path | None) -> bytes | None:
        return path.read_bytes() if path is not None else None

    return grpc.ssl_channel_credentials(read(ca_file), read(key_file), read(cert_file))


def is_loopback_target(target: str) -> bool:
    """Whether ``host:port`` names this machine: only ``localhost`` and literal loopback
    addresses count (a name that resolves to loopback could resolve elsewhere tomorrow)."""
    if target.startswith("["):
        host = target[1:].partition("]")[0]
    elif target.count(":") == 1:
        host = target.partition(":")[0]
    else:
        host = target  # no port, or a bare IPv6 address
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CleartextKeyError(ValueError):
    """An API key would cross the network without TLS."""


CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Pings while a call is open keep long streams alive through load
    # balancers that cut quiet connections; none while idle, which
    # servers with default settings would punish.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
)
"""The options of every client channel, sync and async."""


def call_metadata(
    target: str,
    metadata: Sequence[tuple[str, str]],
    credentials: grpc.ChannelCredentials | None,
    api_key: str | None,
    insecure: bool,
) -> tuple[tuple[str, str], ...]:
    """The metadata every call sends: ``metadata``, then ``api_key`` as
    ``authorization: Bearer <key>``. Raises CleartextKeyError if the key would go without
    TLS to a target that is not loopback, unless ``insecure``."""
    if api_key and credentials is None and not insecure and not is_loopback_target(target):
        raise CleartextKeyError(
            f"the API key would cross the network to {target} in cleartext: "
            "pass credentials=tls_credentials(...), or insecure=True to send it anyway"
        )
    sent = tuple(metadata)
    if api_key:
        sent += (("authorization", f"Bearer {api_key}"),)
    return sent


class GenmediaError(Exception):
    """A call failed; ``code`` is the gRPC status, ``details`` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def genmedia_error(error: grpc.RpcError) -> GenmediaError:
    """The GenmediaError for a failed call, sync (a grpc.Call) or async (an AioRpcError)."""
    if isinstance(error, grpc.Call | grpc.aio.AioRpcError):
        return GenmediaError(error.code(), error.details() or "")
    return GenmediaError(grpc.StatusCode.UNKNOWN, str(error))


class GenmediaClient:
    """One channel to a genmedia endpoint; use as a context manager."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        timeout_s: float | None = 60.0,
        metadata: Sequence[tuple[str, str]] = (),
        credentials: grpc.ChannelCredentials | None = None,
        api_key: str | None = None,
        insecure: bool = False,
    ) -> None:
        """``api_key`` is sent as ``authorization: Bearer <key>``; ``credentials``
        (e.g. :func:`tls_credentials`) switch the channel to TLS. Without them a key goes
        only to a loopback target, unless ``insecure`` (raises CleartextKeyError)."""
        self._metadata = call_metadata(target, metadata, credentials, api_key, insecure)
        self._channel = (
            grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
            if credentials
            else grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        )
        self._timeout_s = timeout_s
        self.images = gen_grpc.ImageGenerationServiceStub(self._channel)
        self.translation = trans_grpc.ImageTranslationServiceStub(self._channel)
        self.text = text_grpc.TextGenerationServiceStub(self._channel)
        self.provenance = provenance_grpc.ProvenanceServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GenmediaClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def generate_images(
        self,
        classes: Sequence[str | int],
        count: int = 1,
        seed: int | None = None,
        truncation: float = 0.0,
        image_format: str = "png",
        width: int = 0,
        height: int = 0,
    ) -> gen_pb.GenerateImagesResponse:
        """Class names (str) or ids (int); ``count`` images of each."""
        selectors = [
            gen_pb.ClassSelector(id=c) if isinstance(c, int) else gen_pb.ClassSelector(name=c)
            for c in classes
        ]
        request = gen_pb.GenerateImagesRequest(
            classes=selectors,
            count=count,
            truncation=truncation,
            format=IMAGE_FORMATS[image_format],
            width=width,
            height=height,
        )
        if seed is not None:
            request.seed = seed
        return self._unary(self.images.GenerateImages, request)

    def list_classes(self, query: str = "") -> gen_pb.ListClassesResponse:
        return self._unary(self.images.ListClasses, gen_pb.ListClassesRequest(query=query))

    def translate_image(
        self, image: bytes, model: str, image_format: str = "png"
    ) -> trans_pb.TranslateImageResponse:
        request = trans_pb.TranslateImageRequest(
            image=image, model=model, format=IMAGE_FORMATS[image_format]
        )
        return self._unary(self.translation.TranslateImage, request)

    def translate_frames(
        self,
        frames: Iterable[bytes],
        model: str,
        image_format: str = "png",
        raw_output: bool = False,
    ) -> Iterator[trans_pb.TranslateFramesResponse]:
        """Translates encoded frames as one stream; yields each translated frame, in order,
        as it comes (frames are read from ``frames`` only as fast as the server takes them).
        ``raw_output``: each answer carries bare RGB (``raw``) and its ``provenance``."""

        def requests() -> Iterator[trans_pb.TranslateFramesRequest]:
            config = trans_pb.FrameStreamConfig(
                model=model, format=IMAGE_FORMATS[image_format], raw_output=raw_output
            )
            yield trans_pb.TranslateFramesRequest(config=config)
            for frame in frames:
                yield trans_pb.TranslateFramesRequest(image=frame)

        return self._bidi(self.translation.TranslateFrames, requests())

    def translate_video(
        self, chunks: Iterable[bytes], model: str, hold_still_below: int = 0
    ) -> Iterator[trans_pb.TranslateVideoResponse]:
        """Translates a video file sent as ``chunks`` (see :func:`file_chunks`); yields
        progress messages, then the translated file's chunks, then its summary.
        ``hold_still_below``: the temporal hold against flicker, in levels (0: off)."""

        def requests() -> Iterator[trans_pb.TranslateVideoRequest]:
            config = trans_pb.VideoConfig(model=model, hold_still_below=hold_still_below)
            yield trans_pb.TranslateVideoRequest(config=config)
            for chunk in chunks:
                yield trans_pb.TranslateVideoRequest(chunk=chunk)

        return self._bidi(self.translation.TranslateVideo, requests())

    def list_models(self) -> trans_pb.ListModelsResponse:
        return self._unary(self.translation.ListModels, trans_pb.ListModelsRequest())

    def verify_image(self, data: bytes) -> provenance_pb.VerifyImageResponse:
        """What the gateway finds in an image's Content Credentials, and its verdict."""
        request = provenance_pb.VerifyImageRequest(data=data)
        return self._unary(self.provenance.VerifyImage, request)

    def verify_video(self, data: bytes) -> provenance_pb.VerifyVideoResponse:
        """A video file's Content Credentials and the watermark over its frames."""
        request = provenance_pb.VerifyVideoRequest(data=data)
        return self._unary(self.provenance.VerifyVideo, request)

    def verify_text(self, text: str) -> provenance_pb.VerifyTextResponse:
        """Whether genmedia's text watermark is in ``text``, with its z-score."""
        request = provenance_pb.VerifyTextRequest(text=text)
        return self._unary(self.provenance.VerifyText, request)

    @staticmethod
    def text_request(
        prompt: str,
        max_new_tokens: int = 0,
        temperature: float | None = None,
        top_k: int = 0,
        top_p: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] = (),
        repetition_penalty: float | None = None,
        truncate_prompt: bool = False,
    ) -> text_pb.GenerateTextRequest:
        request = text_pb.GenerateTextRequest(
            prompt=prompt,
            max_new_tokens=max_new_tokens,
            top_k=top_k,
            stop=list(stop),
            truncate_prompt=truncate_prompt,
        )
        if temperature is not None:
            request.temperature = temperature
        if top_p is not None:
            request.top_p = top_p
        if seed is not None:
            request.seed = seed
        if repetition_penalty is not None:
            request.repetition_penalty = repetition_penalty
        return request

    def generate_text(self, prompt: str, **options: object) -> text_pb.GenerateTextResponse:
        """Options as for :meth:`text_request`."""
        return self._unary(self.text.GenerateText, self.text_request(prompt, **options))  # type: ignore[arg-type]

    def stream_text(self, prompt: str, **options: object) -> Iterator[text_pb.StreamTextResponse]:
        """Yields text deltas as they are produced; the last carries finish reason."""
        call = self.text.StreamText(
            self.text_request(prompt, **options),  # type: ignore[arg-type]
            timeout=self._timeout_s,
            metadata=self._metadata,
        )
        try:
            yield from call
        except grpc.RpcError as error:
            raise genmedia_error(error) from None
        finally:
            call.cancel()

    def _bidi(
        self, method: grpc.StreamStreamMultiCallable, requests: Iterator[Any]
    ) -> Iterator[Any]:
        """A bidirectional call's answers as they come; closing the iterator ends the call."""
        call = method(requests, timeout=self._timeout_s, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as error:
            raise genmedia_error(error) from None
        finally:
            call.cancel()

    def _unary(self, method: grpc.UnaryUnaryMultiCallable, request: object):
        try:
            return method(request, timeout=self._timeout_s, metadata=self._metadata)
        except grpc.RpcError as error:
            raise genmedia_error(error) from None


VIDEO_CHUNK_BYTES = 1024 * 1024


def file_chunks(path: Path, size: int = VIDEO_CHUNK_BYTES) -> Iterator[bytes]:
    """A file's bytes in pieces, read as they are sent."""
    with path.open("rb") as file:
        while chunk := file.read(size):
            yield chunk
