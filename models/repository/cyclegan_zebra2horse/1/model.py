"""cyclegan_zebra2horse: the shared CycleGAN model; the direction comes from this model's name."""

import importlib.util
import sys
from pathlib import Path

# Triton's python-backend stub runs an isolated interpreter that ignores
# PYTHONPATH; unless genmedia_models is installed, use the copy beside this
# repository (models/genmedia_models).
if importlib.util.find_spec("genmedia_models") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from genmedia_models.triton_cyclegan import TritonPythonModel

__all__ = ["TritonPythonModel"]
