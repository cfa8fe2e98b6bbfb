"""Settings of the gateway (``GENMEDIA_*``), in groups.

Each group is a mixin with its own fields, checks and the object it configures
(a retry policy, an ejection policy, TLS to the backends, ...); the fields keep
their flat variable names (docs/SETTINGS.md), so grouping renames nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, SecretStr, create_model, model_validator

from genmedia_shared.text_watermark import DEVELOPMENT_KEY
from services.common.registry import BACKENDS, GATEWAY, ProcessSpec
from services.common.settings import (
    ENV_PREFIX,
    MIB,
    CachedSecret,
    ImageWatermarkKeySettings,
    ServerSettings,
    SettingsGroup,
    check_key,
    grpc_port_field,
    metrics_port_field,
)
from services.gateway.backends import EjectionPolicy, RetryBudget
from services.gateway.key_limits import KeyLimits
from services.gateway.memory_limits import MemoryLimits
from services.gateway.open_service import OpenLimits
from services.gateway.proxy import RetryPolicy
from services.gateway.redis_limits import RedisLimits
from services.gateway.resilient_limits import FallbackPolicy, ResilientLimits

BACKEND_ADDR_HELP = (
    "backend replicas: comma-separated host:port entries; a host name is re-resolved "
    "periodically to all its addresses (a Kubernetes headless Service). Required."
)


class AuthMode(StrEnum):
    API_KEYS = "api-keys"
    OPEN = "open"


class _BackendCalls(SettingsGroup):
    backend_resolve_interval_s: float = Field(
        10.0, gt=0, description="Seconds between DNS resolutions of backend host names."
    )
    default_deadline_s: float = Field(
        300.0, gt=0, description="Deadline given to backend calls when the caller set none."
    )

    def backend_addr(self, backend: ProcessSpec) -> str:
        """The backend's replicas, as its ``GENMEDIA_<NAME>_ADDR`` gives them."""
        return str(getattr(self, backend.addr_field))


BackendSettings: Any = create_model(
    "BackendSettings",
    __base__=_BackendCalls,
    __module__=__name__,
    __doc__="Where the backends are, and how long a call to them may take: one required "
    "``<name>_addr`` field (GENMEDIA_<NAME>_ADDR) per backend in the registry.",
    **{
        backend.addr_field: (
            str,
            Field(..., min_length=1, description=f"{backend.name} {BACKEND_ADDR_HELP}"),
        )
        for backend in BACKENDS
    },
)


@dataclass(frozen=True)
class BackendTls:
    """How the gateway calls its backends over TLS."""

    ca_file: Path
    cert_file: Path | None
    key_file: Path | None
    server_name: str | None
    """Checked against the backends' certificates instead of the address's host name."""


class BackendTlsSettings(SettingsGroup):
    backend_tls_ca_file: Path | None = Field(
        None, description="PEM CA bundle: when set, the gateway calls its backends over TLS."
    )
    backend_tls_cert_file: Path | None = Field(
        None, description="PEM client certificate for mutual TLS to the backends."
    )
    backend_tls_key_file: Path | None = Field(None, description="PEM key of that certificate.")
    backend_tls_server_name: str | None = Field(
        None,
        description="Name the backends' certificates are checked against (default: the "
        "host name in the backend address).",
    )

    @model_validator(mode="after")
    def _tls_needs_a_ca(self) -> BackendTlsSettings:
        client_tls = (self.backend_tls_cert_file, self.backend_tls_key_file)
        if self.backend_tls_ca_file is None and (any(client_tls) or self.backend_tls_server_name):
            raise ValueError(
                "backend TLS settings are set but GENMEDIA_BACKEND_TLS_CA_FILE is not; "
                "set it to the CA that signed the backends' certificates"
            )
        return self

    def backend_tls(self) -> BackendTls | None:
        """None: the backends are called in plaintext."""
        if self.backend_tls_ca_file is None:
            return None
        return BackendTls(
            self.backend_tls_ca_file,
            self.backend_tls_cert_file,
            self.backend_tls_key_file,
            self.backend_tls_server_name,
        )


class BackendRetrySettings(SettingsGroup):
    backend_retry_max_attempts: int = Field(
        3, ge=1, le=10, description="Attempts per call for UNAVAILABLE (1 disables retries)."
    )
    backend_retry_initial_backoff_s: float = Field(
        0.05, gt=0, description="Backoff before the first retry; doubles each time, jittered."
    )
    backend_retry_max_backoff_s: float = Field(1.0, gt=0, description="Longest backoff.")
    backend_retry_budget_tokens: float = Field(
        10.0,
        gt=0,
        description="Retry budget per backend: retries stop while fewer than half "
        "of these tokens are left (each failure takes 1, each success gives back the ratio).",
    )
    backend_retry_budget_ratio: float = Field(
        0.1, gt=0, le=1, description="Tokens a successful call adds to the retry budget."
    )

    @model_validator(mode="after")
    def _backoffs_in_order(self) -> BackendRetrySettings:
        if self.backend_retry_max_backoff_s < self.backend_retry_initial_backoff_s:
            raise ValueError("GENMEDIA_BACKEND_RETRY_MAX_BACKOFF_S is below the initial backoff")
        return self

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            self.backend_retry_max_attempts,
            self.backend_retry_initial_backoff_s,
            self.backend_retry_max_backoff_s,
        )

    def retry_budget(self) -> RetryBudget:
        """A fresh budget: each backend pool gets its own."""
        return RetryBudget(self.backend_retry_budget_tokens, self.backend_retry_budget_ratio)


class BackendEjectionSettings(SettingsGroup):
    backend_eject_after_failures: int = Field(
        5, ge=1, description="Consecutive server-side failures that eject a replica."
    )
    backend_eject_base_s: float = Field(
        10.0, gt=0, description="First ejection time; doubles with each ejection in a row."
    )
    backend_eject_max_s: float = Field(300.0, gt=0, description="Longest ejection time.")
    backend_max_ejected_percent: int = Field(
        50, ge=0, le=100, description="Never eject more than this share of a backend's replicas."
    )

    def ejection_policy(self) -> EjectionPolicy:
        return EjectionPolicy(
            self.backend_eject_after_failures,
            self.backend_eject_base_s,
            self.backend_eject_max_s,
            self.backend_max_ejected_percent,
        )


class AccessSettings(SettingsGroup):
    """Who may call: API keys, and the limits on calls without one."""

    auth_mode: AuthMode = Field(
        AuthMode.API_KEYS,
        description="api-keys: every API call needs 'authorization: Bearer <key>'; "
        "open: no authentication, for local development only (logged as a warning).",
    )
    api_keys_file: Path | None = Field(
        None, description="JSON file of API key hashes, names and limits (required for api-keys)."
    )
    api_keys_reload_s: float = Field(
        10.0, gt=0, description="Seconds between checks of the keys file for changes."
    )
    open_rate_per_s: float = Field(
        2.0,
        gt=0,
        description="Calls a second each client address may make without an API key "
        "(ProvenanceService); more are refused with RESOURCE_EXHAUSTED and retry-after-ms.",
    )
    open_burst: int = Field(
        10, ge=1, description="Calls without an API key a client address may make at once."
    )
    open_max_concurrent: int = Field(
        8,
        ge=1,
        description="Calls without an API key in progress at once, all addresses together.",
    )

    @model_validator(mode="after")
    def _keys_given_when_required(self) -> AccessSettings:
        if self.auth_mode is AuthMode.API_KEYS and self.api_keys_file is None:
            raise ValueError(
                "GENMEDIA_AUTH_MODE is api-keys but GENMEDIA_API_KEYS_FILE is not set; "
                "set it, or set GENMEDIA_AUTH_MODE=open for local development"
            )
        if self.auth_mode is AuthMode.OPEN and self.api_keys_file is not None:
            raise ValueError(
                "GENMEDIA_AUTH_MODE=open would ignore GENMEDIA_API_KEYS_FILE; unset one of them"
            )
        return self

    def open_limits(self) -> OpenLimits:
        return OpenLimits(self.open_rate_per_s, self.open_burst, self.open_max_concurrent)


class LoadSettings(SettingsGroup):
    """How much the gateway takes on at once."""

    max_in_flight: int = Field(
        256, ge=1, description="Calls the gateway handles at once; more are refused, not queued."
    )
    overload_retry_after_s: float = Field(
        1.0, gt=0, description="retry-after hint sent when max_in_flight is reached."
    )


MEMORY_STORE = "memory"
REDIS_SCHEMES = ("redis://", "rediss://")


class QuotaStoreSettings(SettingsGroup):
    """Where the keys' limits are kept, and what happens while that store cannot answer."""

    quota_store: str = Field(
        MEMORY_STORE,
        description="memory: each gateway keeps the keys' limits itself (a key gets them once "
        "per replica); redis://[:password@]host:port/db or rediss:// (TLS): every replica "
        "shares them in that Redis (docs/RELIABILITY.md).",
    )
    quota_store_password: SecretStr | None = Field(
        None, description="Redis password when the URL carries none."
    )
    quota_store_password_file: Path | None = Field(
        None,
        description="File holding the Redis password (a mounted Kubernetes Secret); read at "
        "start, instead of GENMEDIA_QUOTA_STORE_PASSWORD.",
    )
    quota_store_timeout_ms: float = Field(
        20.0,
        gt=0,
        description="Longest wait for one Redis quota round trip; past it the call is admitted "
        "by the fallback policy and Redis is tried again after quota_store_retry_s.",
    )
    quota_store_retry_s: float = Field(
        1.0, gt=0, description="Seconds between tries of a Redis that stopped answering."
    )
    quota_fallback: FallbackPolicy = Field(
        FallbackPolicy.LOCAL,
        description="While Redis does not answer: local (each replica enforces its share of "
        "every limit: the limit divided by the replicas it last saw), fail-open (no per-key "
        "limits) or fail-closed (keyed calls refused with UNAVAILABLE).",
    )
    quota_fallback_replicas: int = Field(
        1,
        ge=1,
        description="Replicas a gateway assumes for the local fallback before it has seen the "
        "count in Redis (set it to the HPA's maximum).",
    )
    quota_lease_margin_s: float = Field(
        10.0,
        ge=0,
        description="Added to a call's deadline for its concurrency lease and budget hold in "
        "Redis: how long they outlive a gateway that dies holding them.",
    )
    stream_charge_interval_s: float = Field(
        5.0,
        gt=0,
        description="How often a bidirectional stream (TranslateFrames, TranslateVideo) is "
        "charged what it has generated so far, as it goes; a stream whose key's daily budget "
        "runs out ends then with RESOURCE_EXHAUSTED.",
    )

    @model_validator(mode="after")
    def _known_store(self) -> QuotaStoreSettings:
        if self.quota_store != MEMORY_STORE and not self.quota_store.startswith(REDIS_SCHEMES):
            raise ValueError(
                f"GENMEDIA_QUOTA_STORE={self.quota_store!r}: use 'memory' or a Redis URL, "
                "redis://[:password@]host:port/db or rediss://... for TLS"
            )
        if self.quota_store_password is not None and self.quota_store_password_file is not None:
            raise ValueError(
                "GENMEDIA_QUOTA_STORE_PASSWORD and GENMEDIA_QUOTA_STORE_PASSWORD_FILE are both "
                "set; keep one"
            )
        return self

    def redis_password(self) -> str | None:
        if self.quota_store_password_file is not None:
            try:
                return self.quota_store_password_file.read_text().strip() or None
            except OSError as exc:
                raise ValueError(
                    f"GENMEDIA_QUOTA_STORE_PASSWORD_FILE: cannot read "
                    f"{self.quota_store_password_file}: {exc.strerror}"
                ) from None
        password = self.quota_store_password
        return None if password is None else password.get_secret_value()

    def key_limits(self) -> KeyLimits:
        """The store the settings name (start() it before use, close() it after)."""
        if self.quota_store == MEMORY_STORE:
            return MemoryLimits()
        redis = RedisLimits.from_url(self.quota_store, password=self.redis_password())
        return ResilientLimits(
            redis,
            self.quota_fallback,
            timeout_s=self.quota_store_timeout_ms / 1000,
            retry_s=self.quota_store_retry_s,
            assumed_replicas=self.quota_fallback_replicas,
        )


class WatermarkSettings(ImageWatermarkKeySettings):
    """The keys and thresholds VerifyImage and VerifyText look for the watermarks with."""

    text_watermark_key: SecretStr = Field(
        SecretStr(DEVELOPMENT_KEY),
        description="Key of the text watermark: the one the gpt2 model marks with (its "
        "GENMEDIA_TEXT_WATERMARK_KEY[_FILE]); default: the public development key both sides "
        "use, accepted only with GENMEDIA_DEVELOPMENT_MODE.",
    )
    text_watermark_key_file: Path | None = Field(
        None,
        description="File holding the text watermark key (a mounted Secret); overrides "
        "GENMEDIA_TEXT_WATERMARK_KEY.",
    )
    text_watermark_gamma: float = Field(
        0.25,
        gt=0,
        lt=1,
        description="Green fraction of the text watermark (gpt2's watermark_gamma).",
    )
    text_watermark_z_threshold: float = Field(
        4.0, gt=0, description="z-score at or above which VerifyText finds the watermark."
    )

    _text_key: CachedSecret | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _text_key_strong(self) -> WatermarkSettings:
        check_key(
            ENV_PREFIX + "TEXT_WATERMARK_KEY",
            self.text_watermark_key,
            self.text_watermark_key_file,
            DEVELOPMENT_KEY,
            bool(getattr(self, "development_mode", False)),
        )
        return self

    def watermark_key(self) -> str:
        """The text watermark's key (from its file once, again only when the file changes)."""
        if self._text_key is None:
            self._text_key = CachedSecret(self.text_watermark_key, self.text_watermark_key_file)
        return self._text_key.get()


class VerificationSettings(SettingsGroup):
    """What VerifyImage and VerifyText need, and what they may take."""

    c2pa_trust_anchors_file: Path | None = Field(
        None,
        description="PEM root certificates whose signers VerifyImage reports as trusted (your "
        "Content Credentials CA); unset: only c2pa's built-in trust list.",
    )
    tokenizer_dir: Path | None = Field(
        None,
        description="Directory with the text model's tokenizer.json, for VerifyText; unset: "
        "VerifyText answers FAILED_PRECONDITION.",
    )
    verify_concurrency: int = Field(
        2,
        ge=1,
        description="Verifications (VerifyImage, VerifyText) running at once, on threads of "
        "their own.",
    )
    verify_memory_mb: int = Field(
        256,
        ge=32,
        description="Memory verifications may take at once: each image reserves its decode's "
        "estimated peak (16 MB + 4 bytes a pixel, 16 for WebP) and waits until it fits; one "
        "larger than this runs alone (docs/RELIABILITY.md).",
    )

    @property
    def verify_memory_bytes(self) -> int:
        return self.verify_memory_mb * MIB


class HttpSettings(SettingsGroup):
    """The HTTP door: the OpenAI-compatible API and JSON for every RPC (docs/HTTP.md)."""

    http_port: int = Field(
        GATEWAY.http_port,
        ge=0,
        le=65535,
        description="HTTP port of the OpenAI-compatible API and the JSON API, on the gRPC "
        "port's address and with its TLS certificate; 0 turns the HTTP door off.",
    )
    http_max_body_bytes: int = Field(
        48 * MIB,
        ge=MIB,
        description="Largest HTTP request body; more is refused with 413 before it is read. "
        "JSON carries bytes as base64 (4/3 of their size), so this sits above "
        "GENMEDIA_MAX_MESSAGE_BYTES.",
    )
    http_keep_alive_s: float = Field(
        5.0, gt=0, description="Seconds an idle HTTP connection stays open."
    )
    http_body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Seconds a request body may take to arrive (or the call's deadline, if "
        "sooner); a slower sender gets 408 and the connection is freed.",
    )


class GatewaySettings(
    ServerSettings,
    HttpSettings,
    BackendSettings,
    BackendTlsSettings,
    BackendRetrySettings,
    BackendEjectionSettings,
    AccessSettings,
    LoadSettings,
    QuotaStoreSettings,
    VerificationSettings,
    WatermarkSettings,
):
    grpc_port: int = grpc_port_field(GATEWAY.grpc_port)
    metrics_port: int = metrics_port_field(GATEWAY.metrics_port)
