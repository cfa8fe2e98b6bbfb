from pathlib import Path

import pytest
from pydantic import ValidationError

from services.common.registry import TEXT_GENERATION
from services.common.settings import SettingsError, load_settings
from services.gateway.backends import EjectionPolicy
from services.gateway.memory_limits import MemoryLimits
from services.gateway.open_service import OpenLimits
from services.gateway.proxy import RetryPolicy
from services.gateway.resilient_limits import FallbackPolicy, ResilientLimits
from services.gateway.settings import AuthMode, BackendTls, GatewaySettings, QuotaStoreSettings

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


def test_each_group_builds_its_policy_from_the_same_flat_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in {
        "IMAGE_GENERATION_ADDR": "a:1",
        "IMAGE_TRANSLATION_ADDR": "b:1",
        "TEXT_GENERATION_ADDR": "c:1",
        "AUTH_MODE": "open",
        "DEVELOPMENT_MODE": "true",
        "BACKEND_RETRY_MAX_ATTEMPTS": "4",
        "BACKEND_RETRY_INITIAL_BACKOFF_S": "0.2",
        "BACKEND_RETRY_MAX_BACKOFF_S": "2",
        "BACKEND_RETRY_BUDGET_TOKENS": "20",
        "BACKEND_RETRY_BUDGET_RATIO": "0.5",
        "BACKEND_EJECT_AFTER_FAILURES": "7",
        "BACKEND_EJECT_BASE_S": "3",
        "BACKEND_EJECT_MAX_S": "30",
        "BACKEND_MAX_EJECTED_PERCENT": "25",
        "BACKEND_TLS_CA_FILE": str(tmp_path / "ca.pem"),
        "BACKEND_TLS_SERVER_NAME": "backend.internal",
        "OPEN_RATE_PER_S": "3",
        "OPEN_BURST": "4",
        "OPEN_MAX_CONCURRENT": "5",
        "VERIFY_MEMORY_MB": "64",
    }.items():
        monkeypatch.setenv(f"GENMEDIA_{name}", value)
    settings = load_settings(GatewaySettings)
    assert settings.backend_addr(TEXT_GENERATION) == "c:1"
    assert settings.retry_policy() == RetryPolicy(4, 0.2, 2.0)
    budget = settings.retry_budget()
    assert (budget.max_tokens, budget.ratio) == (20.0, 0.5)
    assert settings.retry_budget() is not budget  # one per backend pool
    assert settings.ejection_policy() == EjectionPolicy(7, 3.0, 30.0, 25)
    assert settings.backend_tls() == BackendTls(tmp_path / "ca.pem", None, None, "backend.internal")
    assert settings.open_limits() == OpenLimits(3.0, 4, 5)
    assert settings.verify_memory_bytes == 64 * 1024 * 1024


def test_a_bad_value_in_a_group_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in BACKENDS.items():
        monkeypatch.setenv(f"GENMEDIA_{name.upper()}", value)
    monkeypatch.setenv("GENMEDIA_AUTH_MODE", "open")
    monkeypatch.setenv("GENMEDIA_DEVELOPMENT_MODE", "true")
    monkeypatch.setenv("GENMEDIA_BACKEND_EJECT_AFTER_FAILURES", "0")
    with pytest.raises(SettingsError, match="GENMEDIA_BACKEND_EJECT_AFTER_FAILURES"):
        load_settings(GatewaySettings)


# -- the quota store ------------------------------------------------------------------


def test_the_quota_store_is_memory_by_default_and_redis_by_url(tmp_path: Path) -> None:
    assert isinstance(QuotaStoreSettings().key_limits(), MemoryLimits)
    password = tmp_path / "redis-password"
    password.write_text("s3cret-from-a-secret\n")
    settings = QuotaStoreSettings(
        quota_store="rediss://redis.internal:6380/2",
        quota_store_password_file=password,
        quota_fallback="fail-closed",
    )
    assert settings.redis_password() == "s3cret-from-a-secret"
    store = settings.key_limits()
    assert isinstance(store, ResilientLimits) and store.policy is FallbackPolicy.FAIL_CLOSED
    address = store.redis.pipe.address
    assert (address.host, address.port, address.db, address.tls) == (
        "redis.internal",
        6380,
        2,
        True,
    )
    assert address.password == "s3cret-from-a-secret"
    assert "s3cret" not in repr(address)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"quota_store": "localhost:6379"}, "use 'memory' or a Redis URL"),
        ({"quota_store": "memcached://x:1"}, "use 'memory' or a Redis URL"),
        ({"quota_fallback": "maybe"}, "local"),
        (
            {"quota_store_password": "a", "quota_store_password_file": Path("p")},
            "both set; keep one",
        ),
    ],
)
def test_a_bad_quota_store_setting_says_what_to_fix(setting: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        QuotaStoreSettings(**setting)


def test_an_unreadable_redis_password_file_names_the_setting(tmp_path: Path) -> None:
    settings = QuotaStoreSettings(
        quota_store="redis://r:6379/0", quota_store_password_file=tmp_path / "missing"
    )
    with pytest.raises(ValueError, match="GENMEDIA_QUOTA_STORE_PASSWORD_FILE: cannot read"):
        settings.key_limits()
