"""A stand-in for TritonClient, for servicer tests that need no Triton."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import numpy as np


class FakeTriton:
    def __init__(self, tokens: list[int] | None = None, image_side: int = 32) -> None:
        self.tokens = tokens or []
        self.image_side = image_side
        self.calls: list[tuple[str, dict[str, np.ndarray]]] = []
        self.streams_closed = 0
        self.parameters: dict[str, dict[str, str]] = {}
        self.loaded = ["biggan", "cyclegan_horse2zebra", "cyclegan_zebra2horse", "gpt2"]

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: list[str],
        request_id: str,
        timeout_s: float | None,
    ) -> dict[str, np.ndarray]:
        self.calls.append((model, dict(inputs)))
        if "z" in inputs:
            rows = inputs["z"].shape[0]
            side = self.image_side
            # Deterministic in the noise, like a generator would be.
            level = (np.abs(inputs["z"]).sum(axis=1) * 10 % 255).astype(np.uint8)
            return {
                "image": np.broadcast_to(level[:, None, None, None], (rows, side, side, 3)).copy()
            }
        return {"image": 255 - inputs["image"]}

    async def stream(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        output: str,
        request_id: str,
        timeout_s: float | None,
    ) -> AsyncIterator[np.ndarray]:
        self.calls.append((model, dict(inputs)))
        try:
            for token in self.tokens[: int(inputs["max_new_tokens"][0])]:
                yield np.asarray([token], dtype=np.int64)
        finally:
            self.streams_closed += 1

    async def model_version(self, model: str) -> str:
        return "1"

    async def is_model_ready(self, model: str) -> bool:
        return True

    async def model_parameters(self, model: str) -> dict[str, str]:
        return self.parameters.get(model, {})

    async def ready_models(self, prefix: str) -> list[str]:
        return [name for name in self.loaded if name.startswith(prefix)]
