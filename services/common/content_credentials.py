"""Content Credentials (C2PA) on every image genmedia serves, with ``c2pa-python``.

Each image gets a signed manifest that says it was made by a trained
algorithm (IPTC digital source type ``trainedAlgorithmicMedia``), names the
model and its version, and carries genmedia's provenance record. A
translated image also records its input: the input is a ``parentOf``
ingredient, opened and then edited by the model. Anyone with a C2PA
validator (or ``genmedia verify``) can read it; editing the pixels breaks
the manifest's hash, and re-encoding drops it, which is why images also
carry an invisible watermark.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from typing import Any

from c2pa import Builder, C2paError, C2paSignerInfo, Context, Reader, Signer
from google.protobuf import json_format
from PIL import Image

from genmedia.v1 import common_pb2
from services.common.provenance import GENERATOR, TRAINED_ALGORITHMIC_MEDIA, provenance_record
from services.common.settings import ImageServiceSettings, SettingsError
from services.common.signing_keys import SigningCredentials, development_credentials

logger = logging.getLogger(__name__)

MIME_TYPES = {
    common_pb2.IMAGE_FORMAT_PNG: "image/png",
    common_pb2.IMAGE_FORMAT_JPEG: "image/jpeg",
    common_pb2.IMAGE_FORMAT_WEBP: "image/webp",
}
PROVENANCE_ASSERTION = "org.genmedia.provenance"
INPUT_LABEL = "input_image"
ALGORITHMS = ("es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519")


@dataclass(frozen=True)
class SourceImage:
    """The image a translation started from."""

    data: bytes
    mime: str


def sniff_mime(data: bytes) -> str:
    """The MIME type of PNG, JPEG or WebP bytes (already checked by the decoder)."""
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise ValueError("not a PNG, JPEG or WebP file")


def manifest_definition(
    provenance: common_pb2.Provenance, translated: bool, what: str = "image"
) -> dict[str, Any]:
    agent = {"name": f"genmedia {provenance.model}", "version": provenance.model_version}
    if translated:
        actions: list[dict[str, Any]] = [
            {"action": "c2pa.opened", "parameters": {"ingredientIds": [INPUT_LABEL]}},
            {
                "action": "c2pa.edited",
                "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                "softwareAgent": agent,
                "description": f"{what} translation by a trained model, frame by frame"
                if what == "video"
                else "image-to-image translation by a trained model",
            },
        ]
    else:
        actions = [
            {
                "action": "c2pa.created",
                "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                "softwareAgent": agent,
            }
        ]
    name, _, version = GENERATOR.partition("/")
    return {
        "claim_generator_info": [{"name": name, "version": version}],
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": actions}},
            {"label": PROVENANCE_ASSERTION, "data": provenance_record(provenance)},
        ],
    }


class ContentCredentials:
    """Signs encoded images; one instance is shared by every request thread."""

    def __init__(self, credentials: SigningCredentials, algorithm: str = "es256") -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"signing algorithm {algorithm!r} is not one of {ALGORITHMS}")
        info = C2paSignerInfo(algorithm, credentials.chain_pem, credentials.key_pem, None)
        # No timestamp authority: signing must work offline; the manifest
        # then carries the signing time claimed by the signer only.
        self._signer = Signer.from_info(info)
        # The default embeds a thumbnail: 30x the signing time and a second
        # copy of a PNG. The image is the thumbnail.
        self._context = Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
        self._check_signing()

    def _check_signing(self) -> None:
        """Signs a tiny image once: a key that does not match its certificate, or a
        certificate C2PA refuses, fails here at start instead of on every request."""
        tiny = io.BytesIO()
        Image.new("RGB", (8, 8)).save(tiny, "PNG")
        self.sign(tiny.getvalue(), "image/png", common_pb2.Provenance(model="self-check"))

    @classmethod
    def from_settings(cls, settings: ImageServiceSettings) -> ContentCredentials:
        if settings.c2pa_key_file is None or settings.c2pa_cert_file is None:
            return cls.development()
        try:
            credentials = SigningCredentials.from_files(
                settings.c2pa_key_file, settings.c2pa_cert_file
            )
            return cls(credentials, settings.c2pa_algorithm)
        except (OSError, C2paError) as exc:
            raise SettingsError(
                f"cannot sign Content Credentials with GENMEDIA_C2PA_KEY_FILE="
                f"{settings.c2pa_key_file} and GENMEDIA_C2PA_CERT_FILE="
                f"{settings.c2pa_cert_file}: {exc}"
            ) from None

    @classmethod
    def development(cls) -> ContentCredentials:
        logger.warning(
            "Content Credentials are signed with a throwaway development key: set "
            "GENMEDIA_C2PA_KEY_FILE and GENMEDIA_C2PA_CERT_FILE so that verifiers can trust them"
        )
        return cls(development_credentials())

    def sign(
        self,
        data: bytes,
        mime: str,
        provenance: common_pb2.Provenance,
        source: SourceImage | None = None,
        what: str = "image",
    ) -> bytes:
        """``data`` with a signed C2PA manifest embedded (``what``: "image" or "video")."""
        definition = manifest_definition(provenance, translated=source is not None, what=what)
        signed = io.BytesIO()
        with Builder(definition, context=self._context) as builder:
            if source is not None:
                builder.add_ingredient(
                    {"title": f"input {what}", "relationship": "parentOf", "label": INPUT_LABEL},
                    source.mime,
                    io.BytesIO(source.data),
                )
            builder.sign(self._signer, mime, io.BytesIO(data), signed)
        return signed.getvalue()


@dataclass(frozen=True)
class CredentialsReport:
    """What a C2PA validator says about an image's Content Credentials."""

    present: bool
    state: str = ""
    """c2pa's validation state: Trusted, Valid (signature fine, signer not trusted) or Invalid."""
    failures: tuple[str, ...] = ()
    """Validation status codes of what failed, e.g. ``assertion.dataHash.mismatch``."""
    digital_source_type: str = ""
    software_agent: str = ""
    actions: tuple[str, ...] = ()
    signer: str = ""
    provenance: dict[str, Any] | None = None

    @property
    def synthetic(self) -> bool:
        return self.digital_source_type == TRAINED_ALGORITHMIC_MEDIA


MALFORMED_MANIFEST = "genmedia.manifest.malformed"
"""Failure code reported for a manifest that validates but is not shaped as C2PA says."""
MALFORMED_PROVENANCE = "genmedia.provenance.malformed"
"""Failure code reported for an org.genmedia.provenance assertion that is not genmedia's."""


def read_credentials(
    data: bytes, trust_anchors_pem: str | None = None, mime: str | None = None
) -> CredentialsReport:
    """Validates the manifest embedded in ``data`` (trusting ``trust_anchors_pem``'s roots).

    The file is the caller's: a manifest c2pa cannot read, or one whose parts are not the
    shapes C2PA defines, is reported Invalid (one log line), never raised.
    """
    settings: dict[str, Any] = {"verify": {"remote_manifest_fetch": False}}
    if trust_anchors_pem:
        settings["trust"] = {"user_anchors": trust_anchors_pem}
    try:
        mime = mime or sniff_mime(data)
        reader = Reader.try_create(mime, io.BytesIO(data), context=Context.from_dict(settings))
    except (ValueError, C2paError):
        return CredentialsReport(present=False)
    if reader is None:
        return CredentialsReport(present=False)
    try:
        with reader:
            store = json.loads(reader.json())
            manifest = reader.get_active_manifest() or {}
            state = str(reader.get_validation_state())
        return _report(store, manifest, state)
    except (C2paError, ValueError, TypeError, AttributeError, KeyError) as exc:
        logger.info("an image's C2PA manifest is malformed: %s: %s", type(exc).__name__, exc)
        return CredentialsReport(present=True, state="Invalid", failures=(MALFORMED_MANIFEST,))


def _report(store: dict[str, Any], manifest: dict[str, Any], state: str) -> CredentialsReport:
    actions: list[dict[str, Any]] = []
    provenance = None
    for assertion in manifest.get("assertions", []):
        if assertion.get("label", "").startswith("c2pa.actions"):
            actions.extend(assertion.get("data", {}).get("actions", []))
        elif assertion.get("label") == PROVENANCE_ASSERTION:
            provenance = assertion.get("data")
    if provenance is not None and not _is_provenance_record(provenance):
        # genmedia's own label with something else under it: forged or damaged.
        logger.info("an image's %s is not genmedia's provenance record", PROVENANCE_ASSERTION)
        return CredentialsReport(
            present=True,
            state="Invalid",
            failures=(MALFORMED_PROVENANCE,),
            signer=_signer(manifest),
        )
    generative = next((a for a in actions if a.get("digitalSourceType")), {})
    agent = generative.get("softwareAgent", "")
    if isinstance(agent, dict):
        agent = " ".join(str(agent.get(k, "")) for k in ("name", "version")).strip()
    return CredentialsReport(
        present=True,
        state=state,
        failures=tuple(str(s["code"]) for s in store.get("validation_status", [])),
        digital_source_type=str(generative.get("digitalSourceType", "")),
        software_agent=str(agent),
        actions=tuple(str(a.get("action", "")) for a in actions),
        signer=_signer(manifest),
        provenance=provenance,
    )


def _signer(manifest: dict[str, Any]) -> str:
    return str(manifest.get("signature_info", {}).get("common_name", ""))


def _is_provenance_record(value: object) -> bool:
    """Whether ``value`` reads as genmedia's Provenance message (unknown fields allowed)."""
    if not isinstance(value, dict):
        return False
    try:
        json_format.ParseDict(value, common_pb2.Provenance(), ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError):
        return False
    return True
