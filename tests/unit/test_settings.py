from pathlib import Path

import pytest

from services.common.registry import ALL_PROCESSES, GATEWAY, IMAGE_GENERATION
from services.common.settings import LogLevel, SettingsError, load_settings
from services.gateway.settings import GatewaySettings
from services.image_generation.settings import ImageGenerationSettings
from services.image_translation.settings import ImageTranslationSettings
from services.text_generation.settings import TextGenerationSettings


def test_missing_triton_url_fails_fast_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENMEDIA_TRITON_URL", raising=False)
    with pytest.raises(SettingsError, match="GENMEDIA_TRITON_URL"):
        load_settings(ImageGenerationSettings)


def test_gateway_needs_every_backend_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENMEDIA_IMAGE_GENERATION_ADDR", "localhost:1")
    monkeypatch.delenv("GENMEDIA_IMAGE_TRANSLATION_ADDR", raising=False)
    monkeypatch.delenv("GENMEDIA_TEXT_GENERATION_ADDR", raising=False)
    with pytest.raises(SettingsError) as error:
        load_settings(GatewaySettings)
    assert "GENMEDIA_IMAGE_TRANSLATION_ADDR" in str(error.value)
    assert "GENMEDIA_TEXT_GENERATION_ADDR" in str(error.value)


def test_defaults_come_from_the_process_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENMEDIA_TRITON_URL", "triton:8001")
    for name in ("GRPC_PORT", "METRICS_PORT", "LOG_LEVEL"):
        monkeypatch.delenv(f"GENMEDIA_{name}", raising=False)
    settings = load_settings(ImageGenerationSettings)
    assert settings.grpc_port == IMAGE_GENERATION.grpc_port == 50052
    assert settings.metrics_port == 9102
    assert settings.log_level is LogLevel.INFO
    assert settings.class_catalog is None  # taken from the loaded model


def test_environment_values_are_parsed_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENMEDIA_TRITON_URL", "triton:8001")
    monkeypatch.setenv("GENMEDIA_GRPC_PORT", "6000")
    monkeypatch.setenv("GENMEDIA_TRANSLATION_MODELS", '["apple2orange"]')
    monkeypatch.setenv("GENMEDIA_LOG_LEVEL", "debug")
    settings = load_settings(ImageTranslationSettings)
    assert settings.grpc_port == 6000
    assert settings.translation_models == ("apple2orange",)
    assert settings.log_level is LogLevel.DEBUG
    monkeypatch.setenv("GENMEDIA_TRANSLATION_SIZE", "250")  # not a multiple of 4
    with pytest.raises(SettingsError, match="GENMEDIA_TRANSLATION_SIZE"):
        load_settings(ImageTranslationSettings)


def test_settings_are_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENMEDIA_TRITON_URL", "triton:8001")
    settings = load_settings(ImageGenerationSettings)
    with pytest.raises(ValueError):
        settings.grpc_port = 1  # type: ignore[misc]


def test_registry_ports_are_unique_and_the_gateway_serves_every_backend_service() -> None:
    ports = [p.grpc_port for p in ALL_PROCESSES] + [p.metrics_port for p in ALL_PROCESSES]
    assert len(ports) == len(set(ports))
    assert set(GATEWAY.grpc_services) == {
        "genmedia.v1.ImageGenerationService",
        "genmedia.v1.ImageTranslationService",
        "genmedia.v1.TextGenerationService",
        "genmedia.v1.ProvenanceService",
    }
    assert Path("protos/genmedia/v1/image_generation.proto").exists()


@pytest.mark.parametrize(("variable", "value"), [("GRPC_PORT", "99999"), ("METRICS_PORT", "-5")])
def test_ports_out_of_range_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("GENMEDIA_TRITON_URL", "triton:8001")
    monkeypatch.setenv(f"GENMEDIA_{variable}", value)
    with pytest.raises(SettingsError, match=f"GENMEDIA_{variable}"):
        load_settings(ImageGenerationSettings)


def test_default_max_new_tokens_must_fit_the_limit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GENMEDIA_TRITON_URL", "triton:8001")
    monkeypatch.setenv("GENMEDIA_TOKENIZER_DIR", str(tmp_path))
    monkeypatch.setenv("GENMEDIA_DEFAULT_MAX_NEW_TOKENS", "600")
    monkeypatch.setenv("GENMEDIA_MAX_NEW_TOKENS_LIMIT", "500")
    with pytest.raises(SettingsError, match="GENMEDIA_DEFAULT_MAX_NEW_TOKENS"):
        load_settings(TextGenerationSettings)


def test_a_secret_comes_from_its_mounted_file_first(tmp_path: Path) -> None:
    from pydantic import SecretStr

    from services.common.settings import ImageWatermarkKeySettings, secret_from

    assert secret_from(SecretStr("from-env"), None) == "from-env"
    mounted = tmp_path / "image-watermark.key"
    key = "f" * 64
    mounted.write_text(key + "\n")
    assert secret_from(SecretStr("from-env"), mounted) == key
    settings = ImageWatermarkKeySettings(image_watermark_key_file=mounted)
    assert settings.image_watermark() == key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "is empty"),
        ("genmedia-development-image-watermark", "public development key"),
        ("REPLACE-WITH-ANOTHER-RANDOM-SECRET", "placeholder"),
        ("0123456789abcdef", "is 16 characters; at least 32"),
    ],
)
def test_a_weak_watermark_key_refuses_to_start_outside_development(
    key: str, reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.common.settings import ImageServiceSettings, SettingsError, load_settings

    mounted = tmp_path / "image-watermark.key"
    mounted.write_text(key + "\n")
    monkeypatch.setenv("GENMEDIA_TRITON_URL", "localhost:8001")
    monkeypatch.setenv("GENMEDIA_IMAGE_WATERMARK_KEY_FILE", str(mounted))
    monkeypatch.setenv("GENMEDIA_DEVELOPMENT_MODE", "false")
    with pytest.raises(SettingsError) as refused:
        load_settings(ImageServiceSettings)
    message = str(refused.value)
    assert reason in message and "GENMEDIA_DEVELOPMENT_MODE=true" in message
    assert str(mounted) in message
    if key:
        assert key not in message  # the key itself never reaches a log
    monkeypatch.setenv("GENMEDIA_DEVELOPMENT_MODE", "true")
    assert load_settings(ImageServiceSettings).image_watermark() == key


def test_the_gateway_refuses_a_weak_text_key_and_takes_a_strong_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.common.settings import SettingsError, load_settings
    from services.gateway.settings import GatewaySettings

    for name in ("IMAGE_GENERATION", "IMAGE_TRANSLATION", "TEXT_GENERATION"):
        monkeypatch.setenv(f"GENMEDIA_{name}_ADDR", "localhost:1")
    monkeypatch.setenv("GENMEDIA_AUTH_MODE", "open")
    monkeypatch.setenv("GENMEDIA_DEVELOPMENT_MODE", "false")
    monkeypatch.setenv("GENMEDIA_IMAGE_WATERMARK_KEY", "a" * 64)
    with pytest.raises(SettingsError, match="GENMEDIA_TEXT_WATERMARK_KEY"):
        load_settings(GatewaySettings)  # the text key is still the development default
    monkeypatch.setenv("GENMEDIA_TEXT_WATERMARK_KEY", "b" * 64)
    assert load_settings(GatewaySettings).watermark_key() == "b" * 64
