"""Python SDK for genmedia: ``from services.client import GenmediaClient``."""

from services.client.sdk import GenmediaClient, GenmediaError, tls_credentials

__all__ = ["GenmediaClient", "GenmediaError", "tls_credentials"]
