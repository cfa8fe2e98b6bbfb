"""The models run in the bench process with the code Triton runs: the baseline with no serving.

Same loaders (``genmedia_models``), same weights, same inputs as the
tensors the services send, same torch thread count as Triton's instances
(``GENMEDIA_TORCH_THREADS``, else the launcher's default for this machine),
so the difference to a call through Triton is the serving path alone. Only
benches import this module: it pulls in torch.
"""

from __future__ import annotations

import os
import time
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from bench.workloads import ImageCall, StreamTiming, TextCall, TranslateCall
from genmedia_models.biggan import generate_images, load_biggan
from genmedia_models.cyclegan import load_generator, translate
from genmedia_models.gpt2.batching import generate_one
from genmedia_models.gpt2.loading import eos_token_ids, load_gpt2
from genmedia_models.gpt2.sampling import SamplingParams
from genmedia_models.gpt2.watermark import DEFAULT_DELTA, DEFAULT_GAMMA, GreenList
from genmedia_models.gpt2.watermark import DEVELOPMENT_KEY as TEXT_DEVELOPMENT_KEY
from genmedia_models.runtime import configure_torch_threads
from services.launcher.triton import TORCH_THREADS_ENV, local_torch_threads


class InProcessModels:
    """Each model loaded on first use, on ``device`` (``cpu`` here, ``cuda`` on a GPU machine)."""

    def __init__(self, weights: Path, device: str = "cpu") -> None:
        self.weights = weights
        self.device = torch.device(device)
        self._cyclegans: dict[str, torch.nn.Module] = {}
        configure_torch_threads(
            {TORCH_THREADS_ENV: os.environ.get(TORCH_THREADS_ENV, str(local_torch_threads()))}
        )

    @cached_property
    def biggan(self) -> torch.nn.Module:
        return load_biggan(self.weights / "biggan", self.device)

    def cyclegan(self, direction: str) -> torch.nn.Module:
        if direction not in self._cyclegans:
            path = self.weights / "cyclegan" / direction / "latest_net_G.pth"
            self._cyclegans[direction] = load_generator(path, self.device)
        return self._cyclegans[direction]

    @cached_property
    def gpt2(self) -> torch.nn.Module:
        return load_gpt2(self.weights / "gpt2", self.device)

    def _synchronize(self) -> None:
        # CUDA runs asynchronously: a timing must wait for the work to finish.
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def generate_images(self, call: ImageCall, seed: int, count: int = 1) -> np.ndarray:
        tensors = call.tensors(seed)
        if count > 1:
            tensors = {name: np.repeat(array, count, axis=0) for name, array in tensors.items()}
        images = generate_images(
            self.biggan, tensors["z"], tensors["class_vector"], tensors["truncation"]
        )
        self._synchronize()
        return images

    def translate(self, call: TranslateCall, count: int = 1) -> np.ndarray:
        pixels = np.repeat(call.pixels, count, axis=0) if count > 1 else call.pixels
        translated = translate(self.cyclegan(call.direction), pixels)
        self._synchronize()
        return translated

    @cached_property
    def watermark(self) -> GreenList:
        """The green list the served gpt2 marks with (its config's defaults, the local stack's
        development key): the watermark is the model's own work, not serving."""
        vocab = int(self.gpt2.config.vocab_size)
        return GreenList(TEXT_DEVELOPMENT_KEY, vocab, DEFAULT_GAMMA, DEFAULT_DELTA)

    def stream(self, call: TextCall, seed: int) -> StreamTiming:
        """The generate loop Triton's gpt2 model runs, watermark included, timed like a stream."""
        params = SamplingParams(max_new_tokens=call.max_new_tokens, temperature=1.0, seed=seed)
        model = self.gpt2
        started = time.perf_counter()
        first: float | None = None
        tokens = 0
        stops = eos_token_ids(model)
        for _ in generate_one(model, call.prompt_ids, params, stops, self.watermark):
            first = time.perf_counter() - started if first is None else first
            tokens += 1
        return StreamTiming(first or 0.0, time.perf_counter() - started, tokens)
