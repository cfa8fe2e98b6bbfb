"""An API key never leaves this machine in cleartext unless the caller says --insecure."""

from __future__ import annotations

from typing import Any, ClassVar

import grpc
import pytest

from genmedia.v1 import image_translation_pb2 as trans_pb
from services.client import cli
from services.client.async_sdk import AsyncGenmediaClient
from services.client.sdk import CleartextKeyError, GenmediaClient, is_loopback_target


@pytest.mark.parametrize(
    "target",
    ["localhost:50051", "LOCALHOST:1", "127.0.0.1:50051", "127.8.9.1:50051", "[::1]:50051",
     "localhost", "::1"],
)  # fmt: skip
def test_loopback_targets(target: str) -> None:
    assert is_loopback_target(target)


@pytest.mark.parametrize(
    "target",
    ["gateway.example.com:443", "10.0.0.7:50051", "[2001:db8::1]:50051", "0.0.0.0:50051",
     "localhost.example.com:50051", "dns:///localhost:50051", "ipv4:127.0.0.1:50051"],
)  # fmt: skip
def test_other_targets_count_as_the_network_even_if_they_may_be_local(target: str) -> None:
    assert not is_loopback_target(target)


def test_the_sdk_refuses_a_key_in_cleartext_to_another_host() -> None:
    with pytest.raises(CleartextKeyError, match=r"gateway\.example\.com:443 in cleartext"):
        GenmediaClient("gateway.example.com:443", api_key="gm_secret")


@pytest.mark.parametrize(
    "options",
    [
        {"api_key": "gm_secret", "insecure": True},
        {"api_key": "gm_secret", "credentials": grpc.ssl_channel_credentials()},
        {"api_key": None},
    ],
)
def test_the_sdk_allows_tls_an_explicit_insecure_or_no_key(options: dict[str, Any]) -> None:
    GenmediaClient("gateway.example.com:443", **options).close()  # channels connect lazily


def test_the_sdk_sends_a_key_in_cleartext_to_loopback() -> None:
    GenmediaClient("localhost:50051", api_key="gm_secret").close()


async def test_the_async_sdk_checks_the_key_as_the_sync_one_does() -> None:
    with pytest.raises(CleartextKeyError, match=r"gateway\.example\.com:443 in cleartext"):
        AsyncGenmediaClient("gateway.example.com:443", api_key="gm_secret")
    for target, options in [
        ("gateway.example.com:443", {"api_key": "gm_secret", "insecure": True}),
        ("gateway.example.com:443", {"credentials": grpc.ssl_channel_credentials()}),
        ("localhost:50051", {"api_key": "gm_secret", "metadata": [("x-trace", "1")]}),
    ]:
        async with AsyncGenmediaClient(target, **options) as client:
            sent = client._metadata
        with GenmediaClient(target, **options) as sync_client:
            assert sent == sync_client._metadata
    assert sent == (("x-trace", "1"), ("authorization", "Bearer gm_secret"))


def test_the_cli_refuses_a_key_from_the_environment_to_another_host_without_tls(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GENMEDIA_API_KEY", "gm_secret")
    assert cli.main(["--target", "gateway.example.com:443", "image", "models"]) == 2
    error = capsys.readouterr().err
    assert error == (
        "genmedia: the API key would cross the network to gateway.example.com:443 in "
        "cleartext: use --tls (with --tls-ca PEM if needed), or pass --insecure to send it "
        "anyway\n"
    )
    assert "gm_secret" not in error


class RecordingClient:
    """Stands in for GenmediaClient: records how the CLI built it, answers list_models."""

    built: ClassVar[dict[str, Any]] = {}

    def __init__(self, target: str, **options: Any) -> None:
        RecordingClient.built = {"target": target, **options}

    def __enter__(self) -> RecordingClient:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def list_models(self) -> trans_pb.ListModelsResponse:
        return trans_pb.ListModelsResponse()


def test_the_cli_passes_insecure_through_to_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "GenmediaClient", RecordingClient)
    argv = ["--target", "gateway.example.com:443", "--api-key", "gm_secret", "--insecure"]
    assert cli.main([*argv, "image", "models"]) == 0
    assert RecordingClient.built["insecure"] is True
    assert RecordingClient.built["api_key"] == "gm_secret"
