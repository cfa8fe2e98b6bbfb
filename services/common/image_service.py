"""What both image services hold for every call: their settings, the Triton client, the
Content Credentials signer and the audit log (the last two injectable, for tests)."""

from __future__ import annotations

from services.common.audit import AuditLog
from services.common.content_credentials import ContentCredentials
from services.common.registry import ProcessSpec
from services.common.settings import ImageServiceSettings
from services.common.triton import TritonClient


class ImageService:
    def __init__(
        self,
        process: ProcessSpec,
        settings: ImageServiceSettings,
        triton: TritonClient,
        credentials: ContentCredentials | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self._triton = triton
        self._credentials = credentials or ContentCredentials.from_settings(settings)
        self._audit = audit or AuditLog(settings.audit_log, process.name)
