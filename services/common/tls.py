"""TLS and mutual TLS credentials from PEM files named in settings."""

from __future__ import annotations

from pathlib import Path

import grpc


class TLSConfigError(SystemExit):
    """A certificate setting is incomplete or names a file that cannot be read."""


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"cannot read the {what} {path}: {exc.strerror}") from None


def server_credentials(
    cert_file: Path | None, key_file: Path | None, client_ca_file: Path | None
) -> grpc.ServerCredentials | None:
    """Server TLS when a certificate is set; mutual TLS when a client CA is set too.

    With a client CA, callers without a certificate signed by it are refused
    during the handshake.
    """
    if cert_file is None and key_file is None:
        if client_ca_file is not None:
            raise TLSConfigError("a client CA is set but no server certificate and key")
        return None
    if cert_file is None or key_file is None:
        raise TLSConfigError("TLS needs both a certificate file and a key file")
    pair = (_read(key_file, "TLS key"), _read(cert_file, "TLS certificate"))
    client_ca = _read(client_ca_file, "client CA bundle")
    return grpc.ssl_server_credentials(
        [pair],  # type: ignore[list-item]
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def channel_credentials(
    ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None
) -> grpc.ChannelCredentials:
    """Client TLS that trusts ``ca_file`` (system roots if None), with an optional client pair."""
    if (cert_file is None) != (key_file is None):
        raise TLSConfigError("a client certificate needs both its certificate and key files")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file, "CA bundle"),
        private_key=_read(key_file, "client key"),
        certificate_chain=_read(cert_file, "client certificate"),
    )
