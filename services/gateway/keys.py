"""API keys: the file of hashes, names and limits, and making new keys.

Only SHA-256 hashes of keys are stored: keys are 256-bit random strings, so a
fast hash cannot be brute-forced, and a slow password hash (bcrypt, argon2)
would cost milliseconds on every call. The file is JSON (valid YAML too), so
it can live in a Kubernetes Secret::

    {
      "defaults": {"rate_per_s": 5, "burst": 10, "max_concurrent": 4,
                   "daily": {"images": 1000, "megapixels": 50, "tokens": 200000}},
      "keys": [
        {"name": "alice", "sha256": "<64 hex digits>"},
        {"name": "batch-job", "sha256": "...", "services": ["image-generation"],
         "rate_per_s": 50, "daily": {"images": 100000}}
      ]
    }

A key inherits every limit it does not set from ``defaults`` (daily units
one by one); a limit left out everywhere is unlimited. ``services`` lists
the processes a key may call (``image-generation``, ``image-translation``,
``text-generation``) or ``*``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.common.registry import BACKENDS
from services.common.usage import Usage

KEY_PREFIX = "gm_"
ALL_SERVICES = "*"
SERVICE_NAMES = {backend.name: backend for backend in BACKENDS}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class DailyBudget(BaseModel):
    """Units a key may generate per UTC day; unset means unlimited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    images: float | None = Field(None, ge=0)
    megapixels: float | None = Field(None, ge=0)
    tokens: float | None = Field(None, ge=0)


UNLIMITED = DailyBudget()


class LimitsEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    services: list[str] | None = None
    rate_per_s: float | None = Field(None, gt=0)
    burst: int | None = Field(None, ge=1)
    max_concurrent: int | None = Field(None, ge=1)
    daily: DailyBudget | None = None

    @field_validator("services")
    @classmethod
    def _known_services(cls, services: list[str] | None) -> list[str] | None:
        if services is not None and not services:
            raise ValueError("services is empty; list the services the key may call, or '*'")
        for name in services or ():
            if name != ALL_SERVICES and name not in SERVICE_NAMES:
                known = ", ".join([ALL_SERVICES, *SERVICE_NAMES])
                raise ValueError(f"unknown service {name!r}; use one of {known}")
        return services


class KeyEntry(LimitsEntry):
    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$")


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: LimitsEntry = LimitsEntry()
    keys: list[KeyEntry] = Field(default_factory=list)


@dataclass(frozen=True)
class KeyPolicy:
    """What one key may do: the key file's entry merged over its defaults."""

    name: str
    services: frozenset[str]
    """gRPC service names (``genmedia.v1.TextGenerationService``) the key may call."""
    rate_per_s: float | None = None
    burst: int = 1
    max_concurrent: int | None = None
    daily: DailyBudget = UNLIMITED

    def daily_limit(self) -> Usage | None:
        """The budget as a Usage with infinities for unlimited units; None if all are."""
        limits = (self.daily.images, self.daily.megapixels, self.daily.tokens)
        if all(limit is None for limit in limits):
            return None
        return Usage(*(math.inf if limit is None else limit for limit in limits))


def _grpc_services(names: list[str]) -> frozenset[str]:
    backends = BACKENDS if ALL_SERVICES in names else [SERVICE_NAMES[n] for n in names]
    return frozenset(service for backend in backends for service in backend.grpc_services)


def _merged_daily(entry: KeyEntry, defaults: LimitsEntry) -> DailyBudget:
    """Each unit from the key if it sets it, else from the defaults."""

    def unit(name: str) -> float | None:
        for budget in (entry.daily, defaults.daily):
            value = None if budget is None else getattr(budget, name)
            if value is not None:
                return value
        return None

    return DailyBudget(images=unit("images"), megapixels=unit("megapixels"), tokens=unit("tokens"))


def _policy(entry: KeyEntry, defaults: LimitsEntry) -> KeyPolicy:
    def pick(field: str) -> object:
        value = getattr(entry, field)
        return getattr(defaults, field) if value is None else value

    rate = pick("rate_per_s")
    burst = pick("burst") or max(1, math.ceil(rate or 1))
    return KeyPolicy(
        name=entry.name,
        services=_grpc_services(pick("services") or [ALL_SERVICES]),  # type: ignore[arg-type]
        rate_per_s=rate,  # type: ignore[arg-type]
        burst=burst,  # type: ignore[arg-type]
        max_concurrent=pick("max_concurrent"),  # type: ignore[arg-type]
        daily=_merged_daily(entry, defaults),
    )


class KeyFileError(ValueError):
    """The keys file cannot be read or is not valid; the message says where."""


def load_keys(path: Path) -> dict[str, KeyPolicy]:
    """Policies by key hash."""
    try:
        parsed = KeysFile.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise KeyFileError(f"cannot read API keys file {path}: {exc.strerror}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise KeyFileError(f"invalid API keys file {path}: {problems}") from None
    for what, values in (
        ("key names", [entry.name for entry in parsed.keys]),
        ("key hashes", [entry.sha256 for entry in parsed.keys]),
    ):
        if len(set(values)) != len(values):
            raise KeyFileError(f"invalid API keys file {path}: {what} must be unique")
    return {entry.sha256: _policy(entry, parsed.defaults) for entry in parsed.keys}


def main(argv: list[str] | None = None) -> None:
    """``python -m services.gateway.keys NAME``: a new key and its entry for the keys file."""
    parser = argparse.ArgumentParser(
        prog="python -m services.gateway.keys",
        description="Make a new API key. The key is printed once; store only the entry.",
    )
    parser.add_argument("name", help="name of the key's owner, shown in logs and metrics")
    parser.add_argument(
        "--services", nargs="+", default=[ALL_SERVICES], choices=[ALL_SERVICES, *SERVICE_NAMES]
    )
    args = parser.parse_args(argv)
    key = new_key()
    entry = KeyEntry(name=args.name, sha256=hash_key(key), services=args.services)
    print(f"key (give it to {args.name}; it is not stored anywhere): {key}")
    print("entry for the keys file:")
    print(json.dumps(entry.model_dump(exclude_none=True)))


if __name__ == "__main__":
    main()
