"""Python SDK for genmedia: ``from services.client import GenmediaClient`` (or
``AsyncGenmediaClient`` for asyncio)."""

from services.client.async_sdk import AsyncGenmediaClient
from services.client.sdk import GenmediaClient, GenmediaError, tls_credentials

__all__ = ["AsyncGenmediaClient", "GenmediaClient", "GenmediaError", "tls_credentials"]
