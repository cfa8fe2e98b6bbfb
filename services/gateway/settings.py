"""Settings of the gateway (``GENMEDIA_*``)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from genmedia_shared.text_watermark import DEVELOPMENT_KEY
from services.common.registry import GATEWAY
from services.common.settings import (
    ENV_PREFIX,
    ImageWatermarkKeySettings,
    ServerSettings,
    check_key,
    grpc_port_field,
    metrics_port_field,
    secret_from,
)

BACKEND_ADDR_HELP = (
    "backend replicas: comma-separated host:port entries; a host name is re-resolved "
    "periodically to all its addresses (a Kubernetes headless Service). Required."
)


class AuthMode(StrEnum):
    API_KEYS = "api-keys"
    OPEN = "open"


class GatewaySettings(ServerSettings, ImageWatermarkKeySettings):
    grpc_port: int = grpc_port_field(GATEWAY.grpc_port)
    metrics_port: int = metrics_port_field(GATEWAY.metrics_port)
    image_generation_addr: str = Field(
        ..., min_length=1, description="image-generation " + BACKEND_ADDR_HELP
    )
    image_translation_addr: str = Field(
        ..., min_length=1, description="image-translation " + BACKEND_ADDR_HELP
    )
    text_generation_addr: str = Field(
        ..., min_length=1, description="text-generation " + BACKEND_ADDR_HELP
    )

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
    max_in_flight: int = Field(
        256, ge=1, description="Calls the gateway handles at once; more are refused, not queued."
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
    overload_retry_after_s: float = Field(
        1.0, gt=0, description="retry-after hint sent when max_in_flight is reached."
    )
    default_deadline_s: float = Field(
        300.0, gt=0, description="Deadline given to backend calls when the caller set none."
    )

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
    backend_resolve_interval_s: float = Field(
        10.0, gt=0, description="Seconds between DNS resolutions of backend host names."
    )
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
    def _keys_given_when_required(self) -> GatewaySettings:
        if self.auth_mode is AuthMode.API_KEYS and self.api_keys_file is None:
            raise ValueError(
                "GENMEDIA_AUTH_MODE is api-keys but GENMEDIA_API_KEYS_FILE is not set; "
                "set it, or set GENMEDIA_AUTH_MODE=open for local development"
            )
        if self.auth_mode is AuthMode.OPEN and self.api_keys_file is not None:
            raise ValueError(
                "GENMEDIA_AUTH_MODE=open would ignore GENMEDIA_API_KEYS_FILE; unset one of them"
            )
        client_tls = (self.backend_tls_cert_file, self.backend_tls_key_file)
        if self.backend_tls_ca_file is None and (any(client_tls) or self.backend_tls_server_name):
            raise ValueError(
                "backend TLS settings are set but GENMEDIA_BACKEND_TLS_CA_FILE is not; "
                "set it to the CA that signed the backends' certificates"
            )
        if self.backend_retry_max_backoff_s < self.backend_retry_initial_backoff_s:
            raise ValueError("GENMEDIA_BACKEND_RETRY_MAX_BACKOFF_S is below the initial backoff")
        check_key(
            ENV_PREFIX + "TEXT_WATERMARK_KEY",
            self.text_watermark_key,
            self.text_watermark_key_file,
            DEVELOPMENT_KEY,
            self.development_mode,
        )
        return self

    def backend_addr(self, process_name: str) -> str:
        return getattr(self, process_name.replace("-", "_") + "_addr")

    def watermark_key(self) -> str:
        return secret_from(self.text_watermark_key, self.text_watermark_key_file)
