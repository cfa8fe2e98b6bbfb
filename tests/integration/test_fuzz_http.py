"""The fuzzing's HTTP column: the same drawn requests as JSON at every RPC's route, and
arbitrary JSON, bodies and parameters at the OpenAI-compatible routes. Whatever the input,
the answer is 2xx or a 4xx with a message, within the deadline: never a 5xx, never a hang.

The stack's gateway is open (no key), as in `make run`; the examples are
GENMEDIA_FUZZ_EXAMPLES per route and kind, as in tests/integration/test_fuzz.py.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from services.gateway.http.routes import json_routes
from services.launcher.stack import Stack
from tests.integration.test_fuzz import FUZZ, KNOWN_VALID, RPCS, TIMEOUT_S

pytestmark = pytest.mark.integration

ROUTES = {route.method.name: route for route in json_routes()}
OPENAI_PARAMETERS = {
    "/v1/completions": ["model", "prompt", "max_tokens", "temperature", "top_p", "seed", "stop",
                        "n", "stream", "stream_options", "echo", "logprobs", "top_k"],
    "/v1/chat/completions": ["model", "messages", "max_tokens", "max_completion_tokens",
                             "temperature", "seed", "stop", "stream", "n"],
    "/v1/images/generations": ["model", "prompt", "n", "size", "response_format",
                               "output_format", "output_compression", "seed", "truncation"],
}  # fmt: skip
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
SANE_VALUES = {
    "model": st.sampled_from(["gpt2", "biggan", "nope"]),
    "prompt": st.sampled_from(["goldfish", "Once upon", "coffee mug, goldfish"]),
    "max_tokens": st.integers(-2, 40),
    "n": st.integers(-1, 3),
    "size": st.sampled_from(["32x32", "64x48", "0x0", "x", "auto"]),
    "messages": st.just([{"role": "user", "content": "hi"}]),
    "stream": st.booleans(),
}


def post(
    stack: Stack, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(stack.gateways[0].http_url + path, data=body, method="POST")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def check(stack: Stack, path: str, body: bytes, valid: bool = False, **headers: str) -> None:
    started = time.monotonic()
    status, answer = post(stack, path, body, headers)
    assert time.monotonic() - started < TIMEOUT_S, f"{path} took too long on {body[:200]!r}"
    assert status < 500, f"{path} answered {status}: {answer[:300]!r} for {body[:300]!r}"
    if valid:
        assert status == 200, f"{path} refused a valid {body[:300]!r}: {answer[:300]!r}"
    if status >= 400:
        error = json.loads(answer)
        message = error["error"]["message"] if "error" in error else error["message"]
        assert message, f"{path} answered {status} without saying why"


def json_body(rpc: str, message: Any) -> bytes:
    return json_format.MessageToJson(message).encode()


@pytest.mark.parametrize("rpc", [rpc for rpc in RPCS if ROUTES[rpc].body])
def test_every_drawn_request_as_json_gets_2xx_or_a_4xx_in_time(stack: Stack, rpc: str) -> None:
    path = ROUTES[rpc].path
    check(stack, path, json_body(rpc, KNOWN_VALID[rpc]), valid=True)

    @FUZZ
    @given(RPCS[rpc][2])
    def run(drawn: Any) -> None:
        check(stack, path, json_body(rpc, drawn.message), drawn.valid)

    run()
    check(stack, path, json_body(rpc, KNOWN_VALID[rpc]), valid=True)


@pytest.mark.parametrize("rpc", [rpc for rpc in RPCS if ROUTES[rpc].body])
def test_arbitrary_bodies_at_every_rpc_route_get_a_4xx(stack: Stack, rpc: str) -> None:
    @FUZZ
    @given(st.one_of(st.binary(max_size=200), JSON_VALUES.map(lambda v: json.dumps(v).encode())))
    def run(body: bytes) -> None:
        check(stack, ROUTES[rpc].path, body)

    run()


@pytest.mark.parametrize("path", list(OPENAI_PARAMETERS))
def test_arbitrary_parameters_at_the_openai_routes_get_2xx_or_a_4xx(
    stack: Stack, path: str
) -> None:
    names = OPENAI_PARAMETERS[path]
    values = st.fixed_dictionaries(
        {},
        optional={name: SANE_VALUES.get(name, JSON_VALUES) | JSON_VALUES for name in names},
    )

    @FUZZ
    @given(values)
    def run(body: dict[str, Any]) -> None:
        check(stack, path, json.dumps(body).encode())

    run()


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["x", "----b", ""]))
def test_bad_multipart_at_the_edit_route_gets_a_4xx(
    stack: Stack, body: bytes, boundary: str
) -> None:
    check(
        stack,
        "/v1/images/edits",
        body,
        **{"content-type": f"multipart/form-data; boundary={boundary}"},
    )
