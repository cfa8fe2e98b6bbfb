"""The key and certificate chain that sign Content Credentials.

In a cluster they come from a Secret (``GENMEDIA_C2PA_KEY_FILE`` and
``GENMEDIA_C2PA_CERT_FILE``), issued by the operator's CA. For local runs
and tests, :func:`development_credentials` makes a throwaway root CA and a
signing certificate with the properties C2PA validators require (EC P-256,
digitalSignature key usage, the emailProtection extended key usage, key
identifiers, a chain of signer then issuer).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_FILE, CHAIN_FILE, ROOT_FILE = "signing.key", "signing-chain.pem", "signing-root.pem"


@dataclass(frozen=True)
class SigningCredentials:
    key_pem: bytes
    chain_pem: bytes
    """The signing certificate first, then its issuers."""
    root_pem: bytes | None = None
    """The root that issued the chain, for verifiers to trust; None when not known here."""

    @classmethod
    def from_files(cls, key_file: Path, chain_file: Path) -> SigningCredentials:
        return cls(key_file.read_bytes(), chain_file.read_bytes())

    def write(self, directory: Path) -> dict[str, Path]:
        """Writes the key (owner-only), the chain and the root; returns their paths."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = {"key": directory / KEY_FILE, "chain": directory / CHAIN_FILE}
        paths["key"].touch(mode=0o600)
        paths["key"].write_bytes(self.key_pem)
        paths["chain"].write_bytes(self.chain_pem)
        if self.root_pem is not None:
            paths["root"] = directory / ROOT_FILE
            paths["root"].write_bytes(self.root_pem)
        return paths


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "genmedia development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def development_credentials(common_name: str = "genmedia development signer") -> SigningCredentials:
    """A new root CA and an ES256 signing certificate it issued (valid one year)."""
    now = dt.datetime.now(dt.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name("genmedia development root CA")
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), False)
        .sign(root_key, hashes.SHA256())
    )
    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(root_name)
        .public_key(signer_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(signer_key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256())
    )
    key_pem = signer_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return SigningCredentials(key_pem, _pem(signer), _pem(root))


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description="Write a development root CA and a Content Credentials signing key and "
        "chain (for trials and laptop clusters; use your own CA in production)."
    )
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    args = parser.parse_args()
    for role, path in development_credentials().write(args.out).items():
        print(f"{role:6s} {path}")


if __name__ == "__main__":
    main()
