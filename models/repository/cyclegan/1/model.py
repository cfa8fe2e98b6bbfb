"""cyclegan_<direction>: one CycleGAN generator per translation direction.

The repository builder serves this model once per direction whose weights
are there, as ``cyclegan_<direction>``; the direction comes from the model's
name, its generator from ``<weights_path>/<direction>/latest_net_G.pth`` (or
from ``weights_path`` itself when that names a .pth file).

Contract: input ``image`` UINT8 [B, H, W, 3] -> output ``image`` UINT8
[B, H, W, 3], H and W multiples of 4 (the generator downsamples twice by 2).
Requests of equal size share one forward pass.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from genmedia_models.cyclegan import (
    checkpoint_path,
    direction_from_model_name,
    load_generator,
    translate,
    validate_images,
)
from genmedia_models.runtime import InvalidInputError, configure_torch_threads, select_device
from genmedia_models.triton_utils import (
    answer_cancelled,
    cancelled_requests_counter,
    error_response,
    injected_delay,
    input_array,
    internal_error_response,
    output_tensor,
)
from genmedia_models.weights import weights_path_from_config


class TritonPythonModel:
    """CycleGAN generator for one translation direction."""

    def initialize(self, args: dict[str, str]) -> None:
        model_config: dict[str, Any] = json.loads(args["model_config"])
        self.model_name = args["model_name"]
        self.direction = direction_from_model_name(self.model_name)
        configure_torch_threads()
        device = select_device(args)
        path = checkpoint_path(weights_path_from_config(model_config), self.direction)
        self.net = load_generator(path, device)
        self.delay = injected_delay(self.model_name, model_config)
        self.cancelled_family, self.requests_cancelled = cancelled_requests_counter(self.model_name)
        pb_utils.Logger.log_info(
            f"{self.model_name}: loaded {path} (ngf={self.net.config.ngf}, "
            f"n_blocks={self.net.config.n_blocks}) on {device}"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        self.delay.hold(lambda: all(request.is_cancelled() for request in requests))
        answer_cancelled(requests, responses, self.requests_cancelled)
        # Requests of equal size share one forward pass; Triton's dynamic
        # batcher normally only groups equal shapes, but do not rely on it.
        by_size: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = defaultdict(list)
        for index, request in enumerate(requests):
            if responses[index] is not None:
                continue
            try:
                images = input_array(request, "image")
                validate_images(images)
            except InvalidInputError as error:
                responses[index] = error_response(str(error))
                continue
            by_size[images.shape[1:3]].append((index, images))

        for members in by_size.values():
            try:
                translated = translate(self.net, np.concatenate([images for _, images in members]))
            except Exception as error:  # noqa: BLE001 - answer each request, do not fail the batch
                for index, _ in members:
                    responses[index] = internal_error_response(self.model_name, error)
                continue
            offsets = np.cumsum([len(images) for _, images in members])[:-1]
            for (index, _), part in zip(members, np.split(translated, offsets), strict=True):
                responses[index] = pb_utils.InferenceResponse(
                    output_tensors=[output_tensor("image", part)]
                )
        return responses

    def finalize(self) -> None:
        # Nothing to flush: execute() answers every request before it returns.
        pb_utils.Logger.log_info(f"{self.model_name}: unloaded")
