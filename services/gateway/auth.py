"""Who is calling: API keys from ``authorization: Bearer <key>`` metadata."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

from services.common.errors import PermissionDenied, Unauthenticated
from services.gateway.keys import KeyFileError, KeyPolicy, hash_key, load_keys

logger = logging.getLogger(__name__)

AUTHORIZATION_HEADER = "authorization"
OPEN_MODE_CALLER = "open-mode"


class Authenticator:
    """Maps a call's metadata to the policy of its key, or refuses the call."""

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> KeyPolicy | None:
        """The caller's policy; None means no per-key limits apply (open mode)."""
        raise NotImplementedError

    @staticmethod
    def authorize(policy: KeyPolicy | None, grpc_service: str) -> None:
        if policy is not None and grpc_service not in policy.services:
            short = grpc_service.rsplit(".", 1)[-1]
            raise PermissionDenied(
                f"API key {policy.name!r} may not call {short}; ask for a key with access to it"
            )


class OpenAccess(Authenticator):
    """Local development: anyone may call anything, without per-key limits."""

    def __init__(self) -> None:
        logger.warning(
            "AUTHENTICATION IS OFF (GENMEDIA_AUTH_MODE=open): anyone who reaches this port "
            "can call every model without limits. Use api-keys outside local development."
        )

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> KeyPolicy | None:
        return None


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The key in ``authorization: Bearer <key>``; raises Unauthenticated if absent."""
    for key, value in metadata or ():
        if key != AUTHORIZATION_HEADER:
            continue
        scheme, _, token = str(value).strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization metadata must be 'Bearer <API key>'")
        return token.strip()
    raise Unauthenticated(
        "missing API key: send metadata 'authorization: Bearer <API key>' "
        "(the genmedia CLI reads it from GENMEDIA_API_KEY)"
    )


class ApiKeys(Authenticator):
    """Keys from a file of hashes, re-read when the file changes (key rotation)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._digest = self._file_digest()
        self._policies = load_keys(path)
        logger.info("loaded %d API keys from %s", len(self._policies), path)

    def _file_digest(self) -> str | None:
        # The content, not the mtime: swapping one hash for another keeps the
        # size, and two writes can share a timestamp. The file is small.
        try:
            return hashlib.sha256(self._path.read_bytes()).hexdigest()
        except OSError:
            return None

    def reload_if_changed(self) -> bool:
        """Re-reads the file if it changed; a bad new file keeps the old keys (logged)."""
        digest = self._file_digest()
        if digest is None or digest == self._digest:
            return False
        try:
            policies = load_keys(self._path)
        except KeyFileError as exc:
            logger.error("keeping the previous API keys: %s", exc)
            return False
        self._policies, self._digest = policies, digest
        logger.info("reloaded %d API keys from %s", len(policies), self._path)
        return True

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> KeyPolicy:
        policy = self._policies.get(hash_key(bearer_token(metadata)))
        if policy is None:
            raise Unauthenticated("API key not recognised; check it or ask for a new one")
        return policy
