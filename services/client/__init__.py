"""Python SDK for genmedia: ``from services.client import GenmediaClient``."""

from services.client.sdk import GenmediaClient, GenmediaError

__all__ = ["GenmediaClient", "GenmediaError"]
