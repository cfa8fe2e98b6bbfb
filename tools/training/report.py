"""What each demo-pack trainer reports, for the model cards and the manifest."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainingReport:
    model: str
    """Card name, e.g. "biggan-digits"."""
    architecture: str
    """e.g. "BigGAN-deep (pytorch-pretrained-biggan BigGAN class), channel width 16"."""
    dataset: str
    """What it was trained on, with sizes."""
    resolution: int
    """Side of the images in pixels (0 for text)."""
    steps: int
    seconds: float
    parameters: int
    details: dict[str, str] = field(default_factory=dict)
    """Anything else worth a line on the card (losses, batch size, optimiser)."""


@dataclass
class QualityReport:
    figures: dict[str, float]
    """Named figures, e.g. {"class_accuracy_t0.4": 0.93}."""
    targets: dict[str, str]
    """The issue's target for each figure, e.g. {"class_accuracy_t0.4": ">= 0.80"}."""
    passed: bool
    method: str
    """How the figures were measured, one paragraph for the card."""
