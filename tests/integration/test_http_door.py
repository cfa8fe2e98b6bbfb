"""The gateway's HTTP door through the real stack, called by the official ``openai`` SDK
(a client none of us wrote) and by plain HTTP requests: the OpenAI-compatible routes,
JSON transcoding of every RPC, the OpenAPI document, keys, quotas, errors, cancellation
and metrics.

A gateway with API keys is started beside the session stack.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.client import HTTPException
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest
from openapi_spec_validator import validate
from PIL import Image

from genmedia.v1 import text_generation_pb2 as text_pb
from genmedia.v1 import text_generation_pb2_grpc as text_grpc
from services.common.registry import GATEWAY
from services.gateway.http.routes import json_routes
from services.launcher.stack import Stack
from tests.certs import make_pki
from tests.integration.conftest import metric_value, scrape
from tests.integration.processes import ApiKey, Spawned, open_channel, spawn, write_keys_file
from tests.integration.test_cancellation import wait_until_stable
from tools.video_files import moving_gradient, write_video

pytestmark = pytest.mark.integration

KEY_LIMITS: dict[str, dict[str, object]] = {
    "full": {},
    "rate": {"rate_per_s": 0.2, "burst": 1},
    "text-only": {"services": ["text-generation"]},
}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("http")


@pytest.fixture(scope="module")
def keys(work: Path) -> dict[str, ApiKey]:
    return write_keys_file(work / "keys.json", KEY_LIMITS)


@pytest.fixture(scope="module")
def gateway(stack: Stack, keys: dict[str, ApiKey], work: Path) -> Iterator[Spawned]:
    spawned = spawn(
        stack,
        GATEWAY,
        work,
        GENMEDIA_AUTH_MODE="api-keys",
        GENMEDIA_API_KEYS_FILE=str(work / "keys.json"),
        GENMEDIA_HTTP_MAX_BODY_BYTES=str(2 * 1024 * 1024),
        GENMEDIA_HTTP_BODY_TIMEOUT_S="1",
    )
    try:
        spawned.wait_health()
        wait_for_http(spawned)
        yield spawned
    finally:
        spawned.stop()


@pytest.fixture(scope="module")
def client(gateway: Spawned, keys: dict[str, ApiKey]) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.http_url + "/v1", api_key=keys["full"].key, max_retries=0, timeout=60
    )


def http(
    gateway: Spawned,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    key: ApiKey | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP request (what curl sends): status, headers, body."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(gateway.http_url + path, data=data, method=method)
    request.add_header("content-type", "application/json")
    if key is not None:
        request.add_header("authorization", f"Bearer {key.key}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, dict(reply.headers.items()), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), error.read()


def png(width: int = 48, height: int = 32) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (120, 80, 40)).save(out, "PNG")
    return out.getvalue()


# -- the OpenAI-compatible routes ---------------------------------------------------------


def test_models_lists_every_served_model(client: openai.OpenAI) -> None:
    ids = {model.id for model in client.models.list()}
    assert {"gpt2", "biggan", "horse2zebra", "zebra2horse"} <= ids


def test_completion_is_the_same_text_as_grpc_generate_text_with_the_same_seed(
    client: openai.OpenAI, gateway: Spawned, keys: dict[str, ApiKey]
) -> None:
    completion = client.completions.create(
        model="gpt2", prompt="def add(a, b):", max_tokens=12, seed=7, temperature=0.8
    )
    with open_channel(gateway.address) as channel:
        expected = text_grpc.TextGenerationServiceStub(channel).GenerateText(
            text_pb.GenerateTextRequest(
                prompt="def add(a, b):", max_new_tokens=12, seed=7, temperature=0.8
            ),
            metadata=keys["full"].metadata,
            timeout=60,
        )
    assert completion.choices[0].text == expected.text
    assert completion.object == "text_completion"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == expected.usage.generated_tokens
    assert completion.usage.prompt_tokens == expected.usage.prompt_tokens
    provenance = completion.model_extra["genmedia_provenance"]  # type: ignore[index]
    assert provenance["synthetic"] is True and provenance["seed"] == 7
    assert provenance["model"] == "gpt2" and provenance["request_id"]


def test_streamed_completion_adds_up_to_the_unary_one_and_ends_with_usage(
    client: openai.OpenAI,
) -> None:
    request = {"model": "gpt2", "prompt": "The story:", "max_tokens": 20, "seed": 11}
    unary = client.completions.create(**request)
    chunks = list(
        client.completions.create(**request, stream=True, stream_options={"include_usage": True})
    )
    text = "".join(chunk.choices[0].text for chunk in chunks if chunk.choices)
    assert text == unary.choices[0].text
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finishes[-1] == unary.choices[0].finish_reason and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage == unary.usage
    assert len({chunk.id for chunk in chunks}) == 1


def test_chat_completion_uses_the_plain_template_and_stops_at_the_next_user_turn(
    client: openai.OpenAI,
) -> None:
    messages = [
        {"role": "system", "content": "You write Python."},
        {"role": "user", "content": "Write a function."},
    ]
    chat = client.chat.completions.create(
        model="gpt2",
        messages=messages,
        max_tokens=24,
        seed=5,  # type: ignore[arg-type]
    )
    completion = client.completions.create(
        model="gpt2",
        prompt="System: You write Python.\nUser: Write a function.\nAssistant:",
        max_tokens=24,
        seed=5,
        stop=["\nUser:"],
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == completion.choices[0].text
    assert "\nUser:" not in (chat.choices[0].message.content or "")
    streamed = client.chat.completions.create(
        model="gpt2",
        messages=messages,
        max_tokens=24,
        seed=5,
        stream=True,  # type: ignore[arg-type]
    )
    chunks = list(streamed)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == chat.choices[0].message.content


def test_images_generate_decodable_images_of_the_size_with_credentials(
    client: openai.OpenAI, gateway: Spawned
) -> None:
    result = client.images.generate(
        model="biggan",
        prompt="goldfish, coffee mug",
        n=1,  # of each class named
        size="96x64",
        output_format="webp",
        extra_body={"seed": 3, "truncation": 0.5},
    )
    assert len(result.data) == 2
    assert [item.revised_prompt for item in result.data] == ["goldfish", "coffee mug"]
    for item in result.data:
        data = base64.b64decode(item.b64_json or "")
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "WEBP" and image.size == (96, 64)
        status, _, body = http(
            gateway,
            "POST",
            "/v1/genmedia/provenance/image:verify",
            {"data": base64.b64encode(data).decode()},
        )
        verdict = json.loads(body)
        assert status == 200, verdict
        assert verdict["verdict"] == "VERDICT_SYNTHETIC"
        credentials = verdict["contentCredentials"]
        assert credentials["present"] and credentials["provenance"]["synthetic"] is True
    assert result.model_extra["genmedia_provenance"]["seed"] == 3  # type: ignore[index]


def test_images_edit_translates_the_upload(client: openai.OpenAI) -> None:
    result = client.images.edit(
        model="horse2zebra", image=("horse.png", png(), "image/png"), prompt="make it a zebra"
    )
    with Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or ""))) as image:
        assert image.format == "PNG" and image.size == (48, 32)
    # The SDKs insist on a prompt; without a model it names the direction.
    by_prompt = client.images.edit(image=("horse.png", png(), "image/png"), prompt="zebra2horse")
    provenance = by_prompt.model_extra["genmedia_provenance"]  # type: ignore[index]
    assert provenance["model"] == "cyclegan_zebra2horse"


def test_a_key_is_required_and_checked(gateway: Spawned, keys: dict[str, ApiKey]) -> None:
    status, _, answer = http(gateway, "POST", "/v1/completions", {"prompt": "x"})
    error = json.loads(answer)["error"]
    assert status == 401 and error["type"] == "authentication_error"
    assert "missing API key" in error["message"]
    wrong = openai.OpenAI(base_url=gateway.http_url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.completions.create(model="gpt2", prompt="x", max_tokens=1)
    text_only = openai.OpenAI(
        base_url=gateway.http_url + "/v1", api_key=keys["text-only"].key, max_retries=0
    )
    with pytest.raises(openai.PermissionDeniedError) as denied:
        text_only.images.generate(prompt="goldfish")
    assert "may not call ImageGenerationService" in str(denied.value)
    # Its model list holds what it may call.
    assert {model.id for model in text_only.models.list()} == {"gpt2"}


def test_over_quota_is_a_rate_limit_error_with_retry_after(
    gateway: Spawned, keys: dict[str, ApiKey]
) -> None:
    limited = openai.OpenAI(
        base_url=gateway.http_url + "/v1", api_key=keys["rate"].key, max_retries=0
    )
    limited.completions.create(model="gpt2", prompt="x", max_tokens=1)  # the burst
    with pytest.raises(openai.RateLimitError) as error:
        limited.completions.create(model="gpt2", prompt="x", max_tokens=1)
    retry_after = int(error.value.response.headers["retry-after"])
    assert 1 <= retry_after <= 5
    assert error.value.body["type"] == "rate_limit_error"  # type: ignore[index]


BAD_REQUESTS = [
    ("completions", {"prompt": "x", "max_tokens": 5000}, "max_tokens"),
    ("completions", {"prompt": "x", "max_tokens": -1}, "max_tokens"),
    ("completions", {"prompt": "x", "n": 2}, "n"),
    ("completions", {"prompt": "x", "temperature": "hot"}, "temperature"),
    ("completions", {"prompt": "x", "temperature": -1}, "temperature"),
    ("completions", {"prompt": "x", "top_p": 1.5}, "top_p"),
    ("completions", {"prompt": "x", "stop": 3}, "stop"),
    ("completions", {"prompt": "x", "logprobs": 2}, "logprobs"),
    ("completions", {"prompt": ["a", "b"]}, "prompt"),
    ("completions", {"max_tokens": 3}, "prompt"),
    ("completions", {"prompt": "x", "seed": -4}, "seed"),
    ("chat/completions", {"messages": []}, "messages"),
    ("chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, "messages"),
    ("chat/completions", {"messages": [{"role": ["user"], "content": "x"}]}, "messages"),
    ("images/generations", {"prompt": "goldfish", "n": "\u00b2"}, "n"),
    ("images/generations", {"prompt": "goldfish", "size": "\u00b2x\u00b2"}, "size"),
    ("images/generations", {"prompt": "goldfsh"}, "prompt"),
    ("images/generations", {"prompt": "goldfish", "size": "big"}, "size"),
    ("images/generations", {"prompt": "goldfish", "size": "9000x9000"}, "size"),
    ("images/generations", {"prompt": "goldfish", "n": 0}, "n"),
    ("images/generations", {"prompt": "goldfish", "response_format": "url"}, "response_format"),
    ("images/generations", {"prompt": "goldfish", "output_format": "gif"}, "output_format"),
    ("images/generations", {"prompt": "goldfish", "truncation": 7}, "truncation"),
]


@pytest.mark.parametrize(("route", "body", "param"), BAD_REQUESTS)
def test_each_bad_input_is_a_bad_request_naming_the_parameter(
    client: openai.OpenAI, route: str, body: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.post(f"/{route}", body={"model": "gpt2", **body}, cast_to=object)
    detail = error.value.body
    assert isinstance(detail, dict) and detail["param"] == param, detail
    assert detail["type"] == "invalid_request_error" and detail["message"]


def test_unknown_class_lists_the_closest_names(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.images.generate(prompt="goldfsh")
    assert "goldfish" in str(error.value)


@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [
        ("/v1/completions", b"{not json", {}, 400),
        ("/v1/completions", b"[1, 2]", {}, 400),
        ("/v1/completions", b"", {}, 400),
        (
            "/v1/images/edits",
            b"--x\r\nbroken",
            {"content-type": "multipart/form-data; boundary=x"},
            400,
        ),
        ("/v1/images/edits", b"{}", {}, 415),
        ("/v1/completions", b'{"prompt": "x"}', {"timeout": "soon"}, 400),
        ("/v1/nothing", b"{}", {}, 404),
        ("/v1/genmedia/text:generate", b'{"maxNewTokens": "many"}', {}, 400),
        ("/v1/genmedia/text:generate", b'{"noSuchField": 1}', {}, 400),
    ],
)
def test_malformed_requests_get_a_4xx_with_a_message(
    gateway: Spawned,
    keys: dict[str, ApiKey],
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
) -> None:
    got, _, answer = http(gateway, "POST", path, body, headers, keys["full"])
    assert got == status, answer
    error = json.loads(answer)
    message = error["error"]["message"] if "error" in error else error["message"]
    assert message


def answer_of(conn: socket.socket) -> str:
    """The whole answer to a raw request (headers and body may come in several reads)."""
    received = b""
    while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        received += chunk
    return received.decode()


def test_a_body_over_the_limit_is_refused_before_it_is_sent(gateway: Spawned) -> None:
    with socket.create_connection(("127.0.0.1", gateway.http_port), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 3145728\r\n\r\n{"
        )
        head = answer_of(conn)
    assert head.startswith("HTTP/1.1 413"), head
    assert "the limit is 2097152" in head


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v1/completions", "application/json"),
        ("/v1/genmedia/text:generate", "application/json"),
        ("/v1/images/edits", "multipart/form-data; boundary=x"),
    ],
)
def test_a_body_that_trickles_in_is_refused_in_time(
    gateway: Spawned, path: str, content_type: str
) -> None:
    with socket.create_connection(("127.0.0.1", gateway.http_port), timeout=10) as conn:
        started = time.monotonic()
        conn.sendall(
            f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {content_type}\r\n"
            "content-length: 100\r\n\r\n--x".encode()
        )
        head = answer_of(conn)  # and nothing more is sent
        waited = time.monotonic() - started
    assert head.startswith("HTTP/1.1 408"), head
    assert "did not arrive within 1 s" in head
    assert waited < 5


def test_a_chunked_upload_over_the_limit_is_refused_as_it_streams_in(gateway: Spawned) -> None:
    with socket.create_connection(("127.0.0.1", gateway.http_port), timeout=20) as conn:
        conn.sendall(
            b"POST /v1/images/edits HTTP/1.1\r\nhost: x\r\n"
            b"content-type: multipart/form-data; boundary=x\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 65536
        with contextlib.suppress(OSError):  # the door may close before all is sent
            for _ in range(48):  # 3 MiB against a 2 MiB limit
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        head = answer_of(conn)
    assert head.startswith("HTTP/1.1 413"), head[:200]


def test_a_slow_client_is_held_to_its_deadline(gateway: Spawned, keys: dict[str, ApiKey]) -> None:
    started = time.monotonic()
    status, _, _ = http(
        gateway,
        "POST",
        "/v1/completions",
        {"prompt": "A long story:", "max_tokens": 1000, "seed": 3},
        {"timeout": "0.3"},
        keys["full"],
    )
    assert status == 504
    assert time.monotonic() - started < 5


# -- JSON for every RPC -------------------------------------------------------------------


def small_video() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        frames = [moving_gradient(index, 64, 64) for index in range(4)]
        return write_video(Path(folder) / "v.mp4", frames, 4).read_bytes()


JSON_CALLS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "GenerateImages": ("", {"classes": [{"name": "goldfish"}], "width": 32, "height": 32}),
    "ListClasses": ("?query=gold", None),
    "TranslateImage": ("", {"image": base64.b64encode(png()).decode(), "model": "horse2zebra"}),
    "ListModels": ("", None),
    "GenerateText": ("", {"prompt": "x", "maxNewTokens": 3, "seed": "4"}),
    "StreamText": ("", {"prompt": "x", "maxNewTokens": 3, "seed": "4"}),
    "VerifyText": ("", {"text": "Some words a person wrote, not a model."}),
    "VerifyImage": ("", {"data": base64.b64encode(png()).decode()}),
    "VerifyVideo": ("", {"data": base64.b64encode(small_video()).decode()}),
}


def test_every_rpc_answers_json_at_its_annotated_route(
    gateway: Spawned, keys: dict[str, ApiKey]
) -> None:
    routes = list(json_routes())
    assert len(routes) == 10  # a new RPC gets an annotation and a line in JSON_CALLS
    for route in routes:
        query, body = JSON_CALLS[route.method.name]
        status, headers, answer = http(
            gateway, route.verb, route.path + query, body, key=keys["full"]
        )
        assert status == 200, (route.path, answer)
        assert len(headers["x-request-id"]) == 32
        if route.method.server_streaming:
            lines = [json.loads(line) for line in answer.splitlines()]
            assert lines[-1]["result"]["finishReason"] == "FINISH_REASON_LENGTH"
        else:
            assert isinstance(json.loads(answer), dict)


def test_streams_come_as_server_sent_events_when_asked(
    gateway: Spawned, keys: dict[str, ApiKey]
) -> None:
    status, headers, answer = http(
        gateway,
        "POST",
        "/v1/genmedia/text:stream",
        {"prompt": "x", "maxNewTokens": 4, "seed": "4"},
        {"accept": "text/event-stream"},
        keys["full"],
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in answer.decode().split("\n\n") if line]
    assert events[-1]["result"]["usage"]["generatedTokens"] == 4


def test_verification_needs_no_key_and_errors_are_grpc_gateways_shape(gateway: Spawned) -> None:
    status, _, answer = http(
        gateway, "POST", "/v1/genmedia/provenance/text:verify", {"text": "plain words here"}
    )
    assert status == 200 and "verdict" in json.loads(answer)
    status, _, answer = http(gateway, "GET", "/v1/genmedia/text-models")
    error = json.loads(answer)
    assert status == 401 and error["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert "missing API key" in error["message"]


def test_the_openapi_document_is_valid_and_covers_every_route(gateway: Spawned) -> None:
    status, _, answer = http(gateway, "GET", "/openapi.json")
    document = json.loads(answer)
    assert status == 200
    validate(document)
    for route in json_routes():
        assert route.verb.lower() in document["paths"][route.path]
    assert "/v1/chat/completions" in document["paths"]


# -- the same gateway as gRPC's: cancellation, metrics, request ids -------------------------


def test_closing_an_sse_stream_cancels_the_generation_in_triton(
    stack: Stack, client: openai.OpenAI
) -> None:
    tokens_before, cancelled_before = wait_until_stable(stack)
    stream = client.completions.create(
        model="gpt2", prompt="A long story:", max_tokens=1000, seed=3, stream=True
    )
    for received, _ in enumerate(stream):
        if received == 3:
            break
    stream.close()
    tokens_after, cancelled_after = wait_until_stable(stack)
    assert cancelled_after == cancelled_before + 1
    assert tokens_after - tokens_before < 500


def test_a_caller_who_leaves_a_unary_completion_cancels_the_generation_in_triton(
    stack: Stack, gateway: Spawned, keys: dict[str, ApiKey]
) -> None:
    tokens_before, cancelled_before = wait_until_stable(stack)
    body = json.dumps({"prompt": "A long story:", "max_tokens": 1000, "seed": 3}).encode()
    with socket.create_connection(("127.0.0.1", gateway.http_port), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"authorization: Bearer {keys['full'].key}\r\n".encode()
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.3)  # generating
    tokens_after, cancelled_after = wait_until_stable(stack)
    assert cancelled_after == cancelled_before + 1
    assert tokens_after - tokens_before < 900


def test_http_calls_are_counted_with_their_protocol(
    client: openai.OpenAI, gateway: Spawned
) -> None:
    def handled() -> float:
        return metric_value(
            scrape(gateway.metrics_url),
            "grpc_server_handled_total",
            grpc_method="GenerateText",
            protocol="http",
            grpc_code="OK",
        )

    before = handled()
    client.completions.create(model="gpt2", prompt="x", max_tokens=2)
    assert handled() == before + 1
    text = scrape(gateway.metrics_url)
    assert 'grpc_server_handled_total{grpc_code="OK",grpc_method="GenerateText"' in text
    assert metric_value(text, "grpc_server_started_total", protocol="grpc") >= 0


def test_the_request_id_is_minted_and_the_callers_kept_as_correlation(
    gateway: Spawned, keys: dict[str, ApiKey]
) -> None:
    status, headers, answer = http(
        gateway,
        "POST",
        "/v1/completions",
        {"prompt": "x", "max_tokens": 2},
        {"x-request-id": "caller-chosen-id"},
        keys["full"],
    )
    assert status == 200
    minted = headers["x-request-id"]
    assert minted != "caller-chosen-id"
    assert json.loads(answer)["genmedia_provenance"]["request_id"] == minted
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in gateway.log_text().splitlines() if minted in line]
        if any(line.get("correlation_id") == "caller-chosen-id" for line in lines):
            return
        time.sleep(0.2)
    raise AssertionError(f"no log line of {minted} with the caller's correlation id")


def test_the_http_door_serves_tls_with_the_grpc_certificate_and_asks_for_client_certs(
    stack: Stack, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    secured = spawn(
        stack,
        GATEWAY,
        tmp_path,
        GENMEDIA_TLS_CERT_FILE=str(pki.server.cert),
        GENMEDIA_TLS_KEY_FILE=str(pki.server.key),
        GENMEDIA_TLS_CLIENT_CA_FILE=str(pki.ca),
    )
    try:
        wait_for_http(secured)
        url = f"https://127.0.0.1:{secured.http_port}/v1/genmedia/text-models"
        trusted = ssl.create_default_context(cafile=str(pki.ca))
        trusted.load_cert_chain(pki.client.cert, pki.client.key)
        with urllib.request.urlopen(url, context=trusted, timeout=30) as reply:
            assert reply.status == 200 and json.loads(reply.read())["models"]
        without_client_cert = ssl.create_default_context(cafile=str(pki.ca))
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            urllib.request.urlopen(url, context=without_client_cert, timeout=30).read()
        with pytest.raises((urllib.error.URLError, ConnectionError, HTTPException)):
            urllib.request.urlopen(url.replace("https", "http"), timeout=30).read()
    finally:
        secured.stop()


def wait_for_http(spawned: Spawned, timeout_s: float = 60.0) -> None:
    """Until the HTTP port accepts connections (after gRPC's: the door starts second)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if spawned.popen.poll() is not None:
            raise RuntimeError(spawned.log_text()[-3000:])
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", spawned.http_port), timeout=1).close()
            return
        time.sleep(0.1)
    raise TimeoutError(f"no HTTP door on {spawned.http_port}")
