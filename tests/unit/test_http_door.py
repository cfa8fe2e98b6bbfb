"""The HTTP door's translations, without a server: OpenAI requests to genmedia's messages,
gRPC statuses to HTTP errors, query strings to messages, and the OpenAPI document."""

from __future__ import annotations

import grpc
import pytest
from openapi_spec_validator import validate
from starlette.requests import Request

from genmedia.v1 import common_pb2, image_generation_pb2, text_generation_pb2
from services.common import api
from services.common.errors import InvalidArgument, ResourceExhausted, Unauthenticated
from services.common.registry import GATEWAY
from services.gateway.http import openai_api
from services.gateway.http.call import HttpCall
from services.gateway.http.errors import HTTP_STATUS, HttpError
from services.gateway.http.openapi import document
from services.gateway.http.routes import json_routes
from services.gateway.http.transcoding import parse_json, parse_query


def test_every_grpc_code_has_an_http_status_and_a_callers_mistake_is_a_4xx() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)
    for code in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ):
        assert 400 <= HTTP_STATUS[code] < 500
    assert HTTP_STATUS[grpc.StatusCode.UNAVAILABLE] == 503
    assert HTTP_STATUS[grpc.StatusCode.DEADLINE_EXCEEDED] == 504


def test_a_rate_limit_carries_retry_after_in_seconds_rounded_up() -> None:
    error = HttpError.from_genmedia(ResourceExhausted("over its rate", retry_after_s=1.2))
    assert error.status == 429
    headers = error.headers("id")
    assert headers["retry-after"] == "2" and headers["retry-after-ms"] == "1200"
    body = error.openai_body()["error"]
    assert body["type"] == "rate_limit_error" and body["code"] == "resource_exhausted"


def test_the_field_a_message_names_becomes_the_openai_parameter() -> None:
    error = HttpError.from_genmedia(
        InvalidArgument("max_new_tokens is 5000; it must be 1..1024"), openai_api.TEXT_PARAMS
    )
    assert (error.status, error.param) == (400, "max_tokens")
    unnamed = HttpError.from_genmedia(Unauthenticated("missing API key"), openai_api.TEXT_PARAMS)
    assert (unnamed.status, unnamed.param) == (401, None)
    assert unnamed.rpc_body() == {"code": 16, "message": "missing API key", "details": []}


def test_the_chat_template_writes_one_line_a_turn_and_ends_with_the_assistant() -> None:
    prompt = openai_api.chat_prompt(
        [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}],
            },
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Again."},
        ]
    )
    assert (
        prompt == "System: Be brief.\nUser: Hi there\nAssistant: Hello.\nUser: Again.\nAssistant:"
    )
    with pytest.raises(HttpError, match="content must be text"):
        openai_api.chat_prompt([{"role": "user", "content": [{"type": "image_url"}]}])


def test_completion_parameters_map_onto_generate_text() -> None:
    message = openai_api.text_request(
        {"max_tokens": 9, "temperature": 0.5, "top_p": 0.9, "seed": 4, "stop": "\n\n"},
        "prompt",
        chat=False,
    )
    assert message == text_generation_pb2.GenerateTextRequest(
        prompt="prompt", max_new_tokens=9, temperature=0.5, top_p=0.9, seed=4, stop=["\n\n"]
    )
    # OpenAI's default for completions; the model's own for chat, which also stops at the
    # next user turn.
    assert openai_api.text_request({}, "p", chat=False).max_new_tokens == 16
    chat = openai_api.text_request({"max_completion_tokens": 5}, "p", chat=True)
    assert chat.max_new_tokens == 5 and list(chat.stop) == ["\nUser:"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 3}, "n"),
        ({"echo": True}, "echo"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"seed": 2**63}, "seed"),
        ({"stop": ["a", 1]}, "stop"),
        ({"temperature": None, "top_p": "x"}, "top_p"),
    ],
)
def test_completion_parameters_it_cannot_honour_are_refused_by_name(
    body: dict[str, object], param: str
) -> None:
    with pytest.raises(HttpError) as error:
        openai_api.text_request(body, "p", chat=False)
    assert (error.value.status, error.value.param) == (400, param)


def test_an_image_prompt_names_classes_and_size_is_width_by_height() -> None:
    message = openai_api.generation_request(
        {"prompt": "goldfish, coffee mug ,", "n": 2, "size": "96x64", "output_format": "jpeg"}
    )
    assert [selector.name for selector in message.classes] == ["goldfish", "coffee mug"]
    assert (message.count, message.width, message.height) == (2, 96, 64)
    assert message.format == common_pb2.IMAGE_FORMAT_JPEG
    assert not message.HasField("seed")
    auto = openai_api.generation_request({"prompt": "goldfish", "size": "auto"})
    assert (auto.width, auto.height) == (0, 0)  # the model's native size


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({}, "model"),
        ({"model": "horse2zebra", "response_format": "url"}, "response_format"),
        ({"model": "horse2zebra", "n": "2"}, "n"),
        ({"model": "horse2zebra", "output_compression": "101"}, "output_compression"),
    ],
)
def test_an_edit_needs_a_direction_and_inline_output(fields: dict[str, str], param: str) -> None:
    with pytest.raises(HttpError) as error:
        openai_api.translation_request(fields, b"image")
    assert error.value.param == param


def test_the_prompt_names_the_direction_when_model_is_absent() -> None:
    message = openai_api.translation_request({"prompt": " zebra2horse "}, b"png")
    assert message.model == "zebra2horse" and message.image == b"png"


def test_query_parameters_fill_scalar_fields_by_json_or_proto_name() -> None:
    message = parse_query(image_generation_pb2.ListClassesRequest, [("query", "fish")])
    assert message.query == "fish"
    with pytest.raises(HttpError, match="unknown query parameter 'limit'"):
        parse_query(image_generation_pb2.ListClassesRequest, [("limit", "3")])


def test_json_bodies_use_the_proto3_mapping_and_refuse_unknown_fields() -> None:
    message = parse_json(
        text_generation_pb2.GenerateTextRequest, b'{"prompt": "x", "maxNewTokens": 3, "seed": "7"}'
    )
    assert (message.max_new_tokens, message.seed) == (3, 7)
    with pytest.raises(HttpError, match="GenerateTextRequest"):
        parse_json(text_generation_pb2.GenerateTextRequest, b'{"maxTokens": 3}')


def test_every_rpc_of_the_gateway_has_one_json_route() -> None:
    routes = list(json_routes())
    methods = {
        api.path(method)
        for service in GATEWAY.grpc_services
        for method in api.service(service).methods
        if not method.client_streaming  # TranslateFrames: gRPC only
    }
    assert {api.path(route.method) for route in routes} == methods
    assert len({(route.verb, route.path) for route in routes}) == len(routes)
    # Reads are GETs with their fields in the query; everything else POSTs a body.
    for route in routes:
        assert route.body == (route.verb == "POST")


def test_the_openapi_document_is_valid_and_maps_64_bit_integers_to_strings() -> None:
    generated = document()
    validate(generated)
    seed = generated["components"]["schemas"]["genmedia.v1.GenerateTextRequest"]["properties"][
        "seed"
    ]
    assert seed == {"type": "string", "format": "int64"}
    stream = generated["paths"]["/v1/genmedia/text:stream"]["post"]["responses"]["200"]
    assert "application/x-ndjson" in stream["content"]


def request_with(headers: dict[str, str]) -> Request:
    raw = [(name.encode(), value.encode()) for name, value in headers.items()]
    return Request({"type": "http", "headers": raw, "client": ("127.0.0.1", 5000)})


def test_a_call_takes_its_deadline_from_the_timeout_header_within_the_default() -> None:
    call = HttpCall(request_with({"timeout": "2.5", "authorization": "Bearer k"}), 300.0)
    assert 2.0 < call.time_remaining() <= 2.5
    assert call.invocation_metadata() == (("authorization", "Bearer k"),)
    assert call.peer() == "ipv4:127.0.0.1:5000"
    assert HttpCall(request_with({"x-stainless-timeout": "900"}), 60.0).time_remaining() <= 60
    bad = HttpCall(request_with({"timeout": "-1"}), 60.0)
    with pytest.raises(HttpError) as error:
        bad.check_headers()
    assert (error.value.status, error.value.param) == (400, "timeout")
