"""The OpenAI-compatible routes: ``/v1/models``, ``/v1/completions``,
``/v1/chat/completions``, ``/v1/images/generations`` and ``/v1/images/edits``.

Each translates the OpenAI request into genmedia's own request message, calls the RPC
through ``Rpcs`` (the gRPC door's admission and forwarding), and answers in the OpenAI
response shape. genmedia's additions ride in extra fields and headers: the provenance
record of what was generated (``genmedia_provenance``, ``x-genmedia-*``).
"""

from __future__ import annotations

import base64
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.message import Message
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from genmedia.v1 import (
    common_pb2,
    image_generation_pb2,
    image_translation_pb2,
    text_generation_pb2,
)
from services.common.errors import GenmediaError
from services.common.provenance import provenance_record
from services.gateway.http.body import DoorLimits, JsonObject, json_object
from services.gateway.http.call import HttpCall
from services.gateway.http.errors import HttpError
from services.gateway.http.rpc import Rpcs
from services.gateway.http.sse import SSE_HEADERS, sse_event, started_stream

GENERATE_TEXT = "/genmedia.v1.TextGenerationService/GenerateText"
STREAM_TEXT = "/genmedia.v1.TextGenerationService/StreamText"
LIST_TEXT_MODELS = "/genmedia.v1.TextGenerationService/ListModels"
GENERATE_IMAGES = "/genmedia.v1.ImageGenerationService/GenerateImages"
LIST_CLASSES = "/genmedia.v1.ImageGenerationService/ListClasses"
TRANSLATE_IMAGE = "/genmedia.v1.ImageTranslationService/TranslateImage"
LIST_TRANSLATION_MODELS = "/genmedia.v1.ImageTranslationService/ListModels"

TEXT_PARAMS = {
    "prompt": "prompt",
    "max_new_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "seed": "seed",
    "stop": "stop",
    "repetition_penalty": "repetition_penalty",
}
"""genmedia's request fields by the OpenAI parameter a caller sent them as."""
IMAGE_PARAMS = {
    "classes": "prompt",
    "class": "prompt",
    "count": "n",
    "width": "size",
    "height": "size",
    "size": "size",
    "format": "output_format",
    "quality": "output_compression",
    "truncation": "truncation",
    "seed": "seed",
    "image": "image",
    "model": "model",
}
FINISH_REASONS = {
    text_generation_pb2.FINISH_REASON_LENGTH: "length",
    text_generation_pb2.FINISH_REASON_STOP: "stop",
    text_generation_pb2.FINISH_REASON_EOS: "stop",
    text_generation_pb2.FINISH_REASON_CANCELLED: "stop",
}
OUTPUT_FORMATS = {
    "png": common_pb2.IMAGE_FORMAT_PNG,
    "jpeg": common_pb2.IMAGE_FORMAT_JPEG,
    "jpg": common_pb2.IMAGE_FORMAT_JPEG,
    "webp": common_pb2.IMAGE_FORMAT_WEBP,
}
FORMAT_NAMES = {
    common_pb2.IMAGE_FORMAT_PNG: "png",
    common_pb2.IMAGE_FORMAT_JPEG: "jpeg",
    common_pb2.IMAGE_FORMAT_WEBP: "webp",
}
_DIGITS = re.compile(r"[0-9]{1,9}")
_INTEGER = re.compile(r"-?[0-9]{1,20}")
"""ASCII digits only: str.isdigit() also takes "²", which int() refuses."""
DEFAULT_MAX_TOKENS = 16
"""OpenAI's default for /v1/completions."""
CHAT_ROLES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}
CHAT_STOP = "\nUser:"
"""GPT-2 would go on writing the user's next turn; the template stops it there."""
UNSUPPORTED_IF_SET = {
    "echo": (False, None),
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "suffix": (None, ""),
    "best_of": (None, 1),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
    "tools": (None, []),
    "response_format": (None, {"type": "text"}),
}
"""OpenAI parameters GPT-2 here cannot honour: refused unless left at their no-op value."""


class OpenAiApi:
    def __init__(self, rpcs: Rpcs, limits: DoorLimits) -> None:
        self._rpcs = rpcs
        self._limits = limits
        self.call = limits.call

    async def _json(self, call: HttpCall, request: Request) -> JsonObject:
        return json_object(await self._limits.body(call, request))

    # -- models ------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        call = self.call(request)
        try:
            call.check_headers()
            ids = await self._model_ids(call)
        except HttpError as error:
            return error.openai_response(call.request_id)
        created = int(time.time())
        data = [
            {
                "id": model_id,
                "object": "model",
                "created": created,
                "owned_by": "genmedia",
                "genmedia_kind": kind,
            }
            for model_id, kind in ids
        ]
        return JSONResponse({"object": "list", "data": data}, headers=_ids(call))

    async def _model_ids(self, call: HttpCall) -> list[tuple[str, str]]:
        """The models of every service the caller's key may call (the others are left out,
        not refused: a key for text alone lists gpt2)."""
        ids: list[tuple[str, str]] = []
        text = await self._listed(
            call, LIST_TEXT_MODELS, text_generation_pb2.ListTextModelsRequest()
        )
        if text is not None:
            ids += [(model.name, "text") for model in text.models]
        # A query no class matches: only the model's name is wanted, not a thousand classes.
        no_class = image_generation_pb2.ListClassesRequest(query="\x00")
        classes = await self._listed(call, LIST_CLASSES, no_class)
        if classes is not None:
            ids.append((classes.model, "image-generation"))
        translation = await self._listed(
            call, LIST_TRANSLATION_MODELS, image_translation_pb2.ListModelsRequest()
        )
        if translation is not None:
            ids += [(model.name, "image-translation") for model in translation.models]
        return ids

    async def _listed(self, call: HttpCall, path: str, message: Message) -> Any:
        """A list call's answer, or None when the key may not call that service."""
        try:
            return await self._unary(call, path, message)
        except HttpError as error:
            if error.status == 403:
                return None
            raise

    async def _unary(
        self, call: HttpCall, path: str, message: Message, params: dict[str, str] | None = None
    ) -> Any:
        try:
            return await self._rpcs.unary(call, path, message)
        except GenmediaError as exc:
            raise HttpError.from_genmedia(exc, params) from None

    # -- text ----------------------------------------------------------------

    async def completions(self, request: Request) -> Response:
        return await self._text(request, chat=False)

    async def chat_completions(self, request: Request) -> Response:
        return await self._text(request, chat=True)

    async def _text(self, request: Request, chat: bool) -> Response:
        call = self.call(request)
        try:
            body = await self._json(call, request)
            prompt = chat_prompt(body.get("messages")) if chat else _prompt(body.get("prompt"))
            return await self._generate_text(call, body, prompt, chat)
        except HttpError as error:
            return error.openai_response(call.request_id)

    async def _generate_text(
        self, call: HttpCall, body: JsonObject, prompt: str, chat: bool
    ) -> Response:
        message = text_request(body, prompt, chat)
        model = _model_name(body, "gpt2")
        kind = "chat.completion" if chat else "text_completion"
        completion_id = ("chatcmpl-" if chat else "cmpl-") + call.request_id
        if body.get("stream", False) is True:
            options = body.get("stream_options") or {}
            if not isinstance(options, dict):
                raise HttpError(400, "stream_options must be an object", "stream_options")
            include_usage = options.get("include_usage", False) is True
            stream = self._rpcs.stream(call, STREAM_TEXT, message)
            try:
                first = await started_stream(stream)
            except GenmediaError as exc:
                raise HttpError.from_genmedia(exc, TEXT_PARAMS) from None
            chunks = _text_chunks(first, stream, completion_id, model, chat, include_usage)
            return StreamingResponse(
                chunks, headers={**SSE_HEADERS, **_ids(call)}, media_type="text/event-stream"
            )
        response = await self._unary(call, GENERATE_TEXT, message, TEXT_PARAMS)
        choice: dict[str, Any] = {
            "index": 0,
            "finish_reason": FINISH_REASONS.get(response.finish_reason, "stop"),
        }
        if chat:
            choice["message"] = {"role": "assistant", "content": response.text}
        else:
            choice.update(text=response.text, logprobs=None)
        answer = {
            "id": completion_id,
            "object": kind,
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
            "usage": _usage(response.usage),
            "genmedia_provenance": provenance_record(response.provenance),
        }
        return JSONResponse(
            answer, headers={**_ids(call), **provenance_headers(response.provenance)}
        )

    # -- images ----------------------------------------------------------------

    async def image_generations(self, request: Request) -> Response:
        call = self.call(request)
        try:
            body = await self._json(call, request)
            message = generation_request(body)
            response = await self._unary(call, GENERATE_IMAGES, message, IMAGE_PARAMS)
            data = [
                {
                    "b64_json": base64.b64encode(generated.image.data).decode(),
                    "revised_prompt": generated.image_class.name,
                    "genmedia_provenance": provenance_record(generated.image.provenance),
                }
                for generated in response.images
            ]
            first = response.images[0].image if response.images else None
            return JSONResponse(
                _images_answer(data, first),
                headers={**_ids(call), **(provenance_headers(first.provenance) if first else {})},
            )
        except HttpError as error:
            return error.openai_response(call.request_id)

    async def image_edits(self, request: Request) -> Response:
        call = self.call(request)
        try:
            body = await self._limits.body(call, request)
            form = await read_form(request, body, self._limits.max_body_bytes)
            try:
                image = form.get("image") or form.get("image[]")
                if not isinstance(image, UploadFile):
                    raise HttpError(
                        400,
                        "image is required: send the image file as multipart field 'image'",
                        "image",
                    )
                fields = {key: value for key, value in form.items() if isinstance(value, str)}
                message = translation_request(fields, await image.read())
            finally:
                await form.close()  # its spooled files go now, not when collected
            response = await self._unary(call, TRANSLATE_IMAGE, message, IMAGE_PARAMS)
            provenance = response.image.provenance
            data = [
                {
                    "b64_json": base64.b64encode(response.image.data).decode(),
                    "genmedia_provenance": provenance_record(provenance),
                }
            ]
            return JSONResponse(
                _images_answer(data, response.image),
                headers={**_ids(call), **provenance_headers(provenance)},
            )
        except HttpError as error:
            return error.openai_response(call.request_id)


# -- requests ------------------------------------------------------------------


def _prompt(value: Any) -> str:
    if isinstance(value, list):
        if len(value) != 1 or not isinstance(value[0], str):
            raise HttpError(
                400, "prompt must be one string (genmedia completes one prompt a request)", "prompt"
            )
        value = value[0]
    if not isinstance(value, str):
        raise HttpError(400, "prompt is required and must be a string", "prompt")
    return value


def chat_prompt(messages: Any) -> str:
    """GPT-2 has no chat template; this one writes each turn as a ``Role: text`` line and
    ends with ``Assistant:`` for the model to go on from."""
    if not isinstance(messages, list) or not messages:
        raise HttpError(400, "messages must be a non-empty list of {role, content}", "messages")
    lines = []
    for index, entry in enumerate(messages):
        if not isinstance(entry, dict):
            raise HttpError(400, f"messages[{index}] must be an object", "messages")
        given = entry.get("role")
        role = CHAT_ROLES.get(given) if isinstance(given, str) else None
        if role is None:
            raise HttpError(
                400,
                f"messages[{index}].role must be one of {', '.join(CHAT_ROLES)}",
                "messages",
            )
        lines.append(f"{role}: {_content(entry.get('content'), index)}")
    lines.append("Assistant:")
    return "\n".join(lines)


def _content(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part.get("text")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        ]
        if len(texts) == len(content) and all(isinstance(text, str) for text in texts):
            return "".join(texts)  # type: ignore[arg-type]
    raise HttpError(
        400, f"messages[{index}].content must be text (a string or text parts)", "messages"
    )


def _check_unsupported(body: JsonObject) -> None:
    for name, harmless in UNSUPPORTED_IF_SET.items():
        if name in body and body[name] not in harmless:
            raise HttpError(400, f"{name} is not supported by genmedia's GPT-2; leave it out", name)
    n = body.get("n", 1)
    if n != 1:
        raise HttpError(
            400, f"n must be 1 for text (got {n!r}); send one request per completion", "n"
        )


def text_request(
    body: JsonObject, prompt: str, chat: bool
) -> text_generation_pb2.GenerateTextRequest:
    _check_unsupported(body)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = 0 if chat else DEFAULT_MAX_TOKENS  # chat: the model's own default
    message = text_generation_pb2.GenerateTextRequest(
        prompt=prompt,
        max_new_tokens=_integer(body, "max_tokens", max_tokens, 0, 2**32 - 1),
        top_k=_integer(body, "top_k", body.get("top_k", 0), 0, 2**32 - 1),
    )
    for name in ("temperature", "top_p", "repetition_penalty"):
        if body.get(name) is not None:
            setattr(message, name, _number(body, name))
    if body.get("seed") is not None:
        message.seed = _integer(body, "seed", body["seed"], 0, 2**63 - 1)
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop or []
    if not isinstance(stops, list) or not all(isinstance(item, str) for item in stops):
        raise HttpError(400, "stop must be a string or a list of strings", "stop")
    message.stop.extend(stops)
    if chat and CHAT_STOP not in message.stop:
        message.stop.append(CHAT_STOP)
    return message


def generation_request(body: JsonObject) -> image_generation_pb2.GenerateImagesRequest:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise HttpError(
            400,
            "prompt must name the class to draw (e.g. 'coffee', 'garter snake', or several "
            "comma-separated); GET /v1/genmedia/classes lists them",
            "prompt",
        )
    _check_image_options(body)
    message = image_generation_pb2.GenerateImagesRequest(
        classes=[
            image_generation_pb2.ClassSelector(name=name.strip())
            for name in prompt.split(",")
            if name.strip()
        ],
        count=_integer(body, "n", body.get("n", 1), 1, 2**32 - 1),
        format=_output_format(body),
        quality=_integer(body, "output_compression", body.get("output_compression", 0), 0, 100),
    )
    message.width, message.height = _size(body)
    if body.get("truncation") is not None:
        message.truncation = _number(body, "truncation")
    if body.get("seed") is not None:
        message.seed = _integer(body, "seed", body["seed"], 0, 2**63 - 1)
    return message


def translation_request(
    fields: dict[str, str], image: bytes
) -> image_translation_pb2.TranslateImageRequest:
    model = fields.get("model") or fields.get("prompt", "").strip()
    if not model:
        raise HttpError(
            400,
            "model must name a translation direction (e.g. 'horse2zebra'); GET /v1/models "
            "lists them (prompt may name it instead)",
            "model",
        )
    body: JsonObject = dict(fields)
    _check_image_options(body)
    if body.get("n", "1") not in ("1", 1):
        raise HttpError(400, "n must be 1 for edits: one image in, one translated image out", "n")
    return image_translation_pb2.TranslateImageRequest(
        image=image,
        model=model,
        format=_output_format(body),
        quality=_integer(body, "output_compression", body.get("output_compression", 0), 0, 100),
    )


def _check_image_options(body: JsonObject) -> None:
    response_format = body.get("response_format") or "b64_json"
    if response_format != "b64_json":
        raise HttpError(
            400,
            f"response_format {response_format!r} is not served: genmedia stores nothing, so "
            "images come back inline as b64_json",
            "response_format",
        )
    if body.get("stream") not in (None, False, "false"):
        raise HttpError(400, "stream is not supported for images", "stream")


def _output_format(body: JsonObject) -> int:
    value = body.get("output_format") or "png"
    if not isinstance(value, str) or value.lower() not in OUTPUT_FORMATS:
        raise HttpError(
            400, f"output_format must be png, jpeg or webp, not {value!r}", "output_format"
        )
    return OUTPUT_FORMATS[value.lower()]


def _size(body: JsonObject) -> tuple[int, int]:
    size = body.get("size")
    if size in (None, "auto"):
        return 0, 0
    width, _, height = str(size).partition("x")
    if not (_DIGITS.fullmatch(width) and _DIGITS.fullmatch(height)) or not (
        int(width) >= 1 and int(height) >= 1
    ):
        raise HttpError(
            400, f"size must be 'WIDTHxHEIGHT' in pixels, e.g. '128x128', not {size!r}", "size"
        )
    return int(width), int(height)


def _integer(body: JsonObject, name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        value = int(value)  # multipart fields are text
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise HttpError(400, f"{name} must be an integer from {low} to {high}, not {value!r}", name)
    return value


def _number(body: JsonObject, name: str) -> float:
    value = body[name]
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HttpError(400, f"{name} must be a number, not {value!r}", name)
    return float(value)


def _model_name(body: JsonObject, default: str) -> str:
    model = body.get("model")
    return model if isinstance(model, str) and model else default


async def read_form(request: Request, body: bytes, max_bytes: int) -> Any:
    """The multipart form in ``body`` (already read within the size and time limits: a
    chunked upload cannot go past them)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HttpError(
            415, "send multipart/form-data with the image file in field 'image'", "image"
        )

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form(
            max_files=4, max_fields=32, max_part_size=max_bytes
        )
    except Exception as exc:  # noqa: BLE001 (multipart's own errors: the body is malformed)
        raise HttpError(400, f"multipart body did not parse: {exc}", "image") from None


# -- responses -------------------------------------------------------------------


def _ids(call: HttpCall) -> dict[str, str]:
    return {"x-request-id": call.request_id}


def provenance_headers(provenance: common_pb2.Provenance) -> dict[str, str]:
    return {
        "x-genmedia-synthetic": "true" if provenance.synthetic else "false",
        "x-genmedia-model": provenance.model,
        "x-genmedia-model-version": provenance.model_version,
        "x-genmedia-seed": str(provenance.seed),
    }


def _usage(usage: text_generation_pb2.TextUsage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.generated_tokens,
        "total_tokens": usage.prompt_tokens + usage.generated_tokens,
    }


def _images_answer(data: list[dict[str, Any]], first: common_pb2.Image | None) -> dict[str, Any]:
    answer: dict[str, Any] = {"created": int(time.time()), "data": data}
    if first is not None:
        answer["output_format"] = FORMAT_NAMES.get(first.format, "png")
        answer["size"] = f"{first.width}x{first.height}"
        answer["genmedia_provenance"] = provenance_record(first.provenance)
    return answer


async def _text_chunks(
    first: Any,
    rest: AsyncIterator[Any],
    completion_id: str,
    model: str,
    chat: bool,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    created = int(time.time())
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(text: str | None, finish: str | None, role: bool = False) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice["delta"] = delta
        else:
            choice.update(text=text or "", logprobs=None)
        return {
            "id": completion_id,
            "object": kind,
            "created": created,
            "model": model,
            "choices": [choice],
        }

    if chat:
        yield sse_event(chunk(None, None, role=True))
    message = first
    try:
        while message is not None:
            finish = FINISH_REASONS.get(message.finish_reason) if message.finish_reason else None
            body = chunk(message.text, finish)
            if message.HasField("provenance"):
                body["genmedia_provenance"] = provenance_record(message.provenance)
            if message.text or finish:
                yield sse_event(body)
            if message.HasField("usage") and include_usage:
                usage = {**chunk(None, None), "choices": [], "usage": _usage(message.usage)}
                yield sse_event(usage)
            message = await anext(rest, None)
    except GenmediaError as exc:
        # Headers are gone: the error goes in the stream, as OpenAI's servers do.
        yield sse_event(HttpError.from_genmedia(exc, TEXT_PARAMS).openai_body())
    finally:
        # A caller who left ends the backend call now, not when this is collected.
        await rest.aclose()  # type: ignore[attr-defined]
    yield b"data: [DONE]\n\n"
