"""Settings shared by every process, read once from ``GENMEDIA_*`` variables.

Each process subclasses :class:`ServerSettings` with its own fields and
defaults; the result is frozen and validated at start-up so a bad value
fails fast with the variable's name in the message.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from genmedia_shared.keys import DEVELOPMENT_MODE_ENV, weak_key_reason
from services.common.image_watermark import DEVELOPMENT_KEY as IMAGE_WATERMARK_DEVELOPMENT_KEY
from services.common.secrets import SecretFile

ENV_PREFIX = "GENMEDIA_"
GRPC_PORT_HELP = "gRPC listen port."
METRICS_PORT_HELP = "Prometheus /metrics port."
MIB = 1024 * 1024


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


class SettingsGroup(BaseSettings):
    """Related settings a process's settings class mixes in. Its fields keep their flat
    ``GENMEDIA_*`` names (no nesting delimiter), so grouping never renames a variable; the
    group builds the objects its fields configure."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")


class ServerSettings(SettingsGroup):
    """What every gRPC process needs to listen, report and shut down."""

    host: str = Field("[::]", description="Address the gRPC and metrics servers bind to.")
    grpc_port: int = Field(0, ge=0, le=65535, description=GRPC_PORT_HELP)
    metrics_port: int = Field(0, ge=0, le=65535, description=METRICS_PORT_HELP)
    log_level: LogLevel = Field(LogLevel.INFO, description="Log level.")
    log_format: LogFormat = Field(
        LogFormat.JSON,
        description="json: one JSON object per line (time, level, logger, message, request_id, "
        "caller, and method/code/duration_ms on access lines); text: for people.",
    )
    shutdown_grace_s: float = Field(
        10.0, gt=0, description="Seconds in-flight calls get to finish after SIGTERM."
    )
    max_message_bytes: int = Field(
        32 * MIB, ge=MIB, description="Largest gRPC message sent or received."
    )
    health_poll_s: float = Field(
        2.0, gt=0, description="Seconds between readiness checks of upstreams."
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate chain to serve gRPC over TLS (with the key file)."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of the TLS certificate.")
    tls_client_ca_file: Path | None = Field(
        None,
        description="PEM CA bundle; when set, clients must present a certificate it signed (mTLS).",
    )
    otlp_endpoint: str | None = Field(
        None,
        description="host:port of an OTLP/gRPC collector to send traces to; tracing is off "
        "(and costs nothing) when unset.",
    )
    max_connection_age_s: float = Field(
        600.0,
        gt=0,
        description="Connections are closed (gracefully) after this age so clients re-balance "
        "over new replicas.",
    )
    max_connection_age_grace_s: float = Field(
        300.0, gt=0, description="Time calls on an aged connection get to finish."
    )
    max_concurrent_streams: int = Field(
        256,
        ge=1,
        description="Calls one client connection may have open at once (HTTP/2 "
        "MAX_CONCURRENT_STREAMS); more wait in the client.",
    )
    development_mode: bool = Field(
        False,
        description="Local development: allows the public development watermark keys (and "
        "says so in the log). Off, a process refuses to start with a development, "
        "placeholder, empty or short key. `make run` sets it.",
    )


def grpc_port_field(default: int) -> Any:
    """The grpc_port field with a process's own default, same bounds."""
    return Field(default, ge=0, le=65535, description=GRPC_PORT_HELP)


def metrics_port_field(default: int) -> Any:
    return Field(default, ge=0, le=65535, description=METRICS_PORT_HELP)


class TritonBackedSettings(ServerSettings):
    """A service that talks to Triton."""

    triton_url: str = Field(
        ..., min_length=1, description="Triton gRPC address host:port (required)."
    )
    triton_timeout_s: float = Field(
        60.0, gt=0, description="Longest a Triton call may take when the caller set no deadline."
    )
    audit_log: str = Field(
        "stdout",
        min_length=1,
        description="Where each generation's audit event (one JSON line: request id, hashed key "
        "name, model, parameters, output SHA-256, marks) goes: stdout or a file path.",
    )


def secret_from(value: SecretStr, file: Path | None) -> str:
    """A secret from its file when one is set (a mounted Secret), else from its variable."""
    return file.read_text().strip() if file is not None else value.get_secret_value()


class CachedSecret:
    """A secret from its file (read once, re-read when it changes: services/common/secrets.py)
    or else from its variable."""

    def __init__(self, value: SecretStr, file: Path | None) -> None:
        self._value = value
        self._file = None if file is None else SecretFile(file)

    def get(self) -> str:
        return self._value.get_secret_value() if self._file is None else self._file.read()


def check_key(
    name: str, value: SecretStr, file: Path | None, development_key: str, development: bool
) -> None:
    """Refuses a weak key at start-up unless in development mode (the message never holds
    the key)."""
    try:
        key = secret_from(value, file)
    except OSError as exc:
        raise ValueError(f"cannot read {name}_FILE {file}: {exc.strerror}") from None
    reason = weak_key_reason(key, development_key)
    if reason is not None and not development:
        where = f"the file {file}" if file is not None else name
        raise ValueError(
            f"the key in {where} {reason}: anyone could forge or strip genmedia's marks with "
            f"it. Set a random key (`openssl rand -hex 32`) in {name}_FILE (a mounted Secret) "
            f"or {name}, or set {DEVELOPMENT_MODE_ENV}=true for local development"
        )


class ImageWatermarkKeySettings(SettingsGroup):
    """The invisible image watermark's key: the image services mark with it, the gateway
    looks for it."""

    image_watermark_key: SecretStr = Field(
        SecretStr(IMAGE_WATERMARK_DEVELOPMENT_KEY),
        description="Key of the invisible image watermark, at least 32 random characters "
        "(`openssl rand -hex 32`); default: the public development key, accepted only with "
        "GENMEDIA_DEVELOPMENT_MODE.",
    )
    image_watermark_key_file: Path | None = Field(
        None,
        description="File holding the image watermark key (a mounted Secret); overrides "
        "GENMEDIA_IMAGE_WATERMARK_KEY.",
    )

    _image_key: CachedSecret | None = PrivateAttr(None)

    def image_watermark(self) -> str:
        """The key, read from its file once and again only when the file changes (the image
        services ask for it for every image)."""
        if self._image_key is None:
            self._image_key = CachedSecret(self.image_watermark_key, self.image_watermark_key_file)
        return self._image_key.get()

    @model_validator(mode="after")
    def _image_key_strong(self) -> ImageWatermarkKeySettings:
        check_key(
            ENV_PREFIX + "IMAGE_WATERMARK_KEY",
            self.image_watermark_key,
            self.image_watermark_key_file,
            IMAGE_WATERMARK_DEVELOPMENT_KEY,
            bool(getattr(self, "development_mode", False)),
        )
        return self


class ImageServiceSettings(TritonBackedSettings, ImageWatermarkKeySettings):
    """A service whose images carry signed Content Credentials (C2PA) and a watermark."""

    c2pa_key_file: Path | None = Field(
        None,
        description="PEM private key (PKCS#8) that signs every image's Content Credentials; "
        "unset: a throwaway development key made at start (logged; verifiers will not trust it).",
    )
    c2pa_cert_file: Path | None = Field(
        None,
        description="PEM certificate chain of that key: the signing certificate first, then its "
        "issuers (not the root). Set with the key file.",
    )
    c2pa_algorithm: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = (
        Field("es256", description="Signature algorithm of the key (es256: EC P-256).")
    )

    @model_validator(mode="after")
    def _key_and_chain_together(self) -> ImageServiceSettings:
        if (self.c2pa_key_file is None) != (self.c2pa_cert_file is None):
            raise ValueError("set GENMEDIA_C2PA_KEY_FILE and GENMEDIA_C2PA_CERT_FILE together")
        return self


class SettingsError(SystemExit):
    """Raised at start-up when the environment does not give valid settings."""


S = TypeVar("S", bound=BaseSettings)


def load_settings(settings_class: type[S]) -> S:
    """Reads settings from the environment, naming the variables that are wrong."""
    from pydantic import ValidationError

    try:
        return settings_class()
    except ValidationError as exc:
        problems = [
            f"{ENV_PREFIX}{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        ]
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from None
