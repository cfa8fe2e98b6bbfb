"""Every test runs as local development does (``make run``): the public development
watermark keys are allowed. Tests of the refusal outside development set
GENMEDIA_DEVELOPMENT_MODE=false themselves."""

from __future__ import annotations

import os

os.environ.setdefault("GENMEDIA_DEVELOPMENT_MODE", "true")
