from pathlib import Path

import pytest
from pydantic import ValidationError

from services.gateway.settings import AuthMode, GatewaySettings

BACKENDS = {
    "image_generation_addr": "a:1",
    "image_translation_addr": "b:1",
    "text_generation_addr": "c:1",
}


def test_api_keys_mode_is_the_default_and_needs_a_keys_file() -> None:
    with pytest.raises(ValidationError, match="GENMEDIA_API_KEYS_FILE is not set"):
        GatewaySettings(**BACKENDS)
    settings = GatewaySettings(**BACKENDS, api_keys_file=Path("keys.json"))
    assert settings.auth_mode is AuthMode.API_KEYS


def test_open_mode_with_a_keys_file_is_refused_rather_than_ignoring_the_keys() -> None:
    with pytest.raises(ValidationError, match="would ignore GENMEDIA_API_KEYS_FILE"):
        GatewaySettings(**BACKENDS, auth_mode="open", api_keys_file=Path("keys.json"))


@pytest.mark.parametrize(
    "setting",
    [
        {"backend_tls_cert_file": Path("c.pem"), "backend_tls_key_file": Path("k.pem")},
        {"backend_tls_server_name": "backend.internal"},
    ],
)
def test_backend_tls_without_a_ca_is_refused_not_silently_plaintext(setting: dict) -> None:
    with pytest.raises(ValidationError, match="GENMEDIA_BACKEND_TLS_CA_FILE is not"):
        GatewaySettings(**BACKENDS, auth_mode="open", **setting)
