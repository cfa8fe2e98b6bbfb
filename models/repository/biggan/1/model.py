"""biggan: class-conditional BigGAN-deep images as uint8 HWC.

Inputs per row: `z` FP32 [128], `class_vector` FP32 [num_classes],
`truncation` FP32 [1] in (0, 1]. Output: `image` UINT8 [H, W, 3].
All requests of a dynamic batch run together; rows are grouped by truncation
because BigGAN takes one truncation per forward pass.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from genmedia_models.biggan import generate_images, load_biggan, validate_request
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
    """BigGAN-deep generator."""

    def initialize(self, args: dict[str, str]) -> None:
        model_config: dict[str, Any] = json.loads(args["model_config"])
        self.model_name = args["model_name"]
        configure_torch_threads()
        device = select_device(args)
        directory = weights_path_from_config(model_config)
        self.model = load_biggan(directory, device)
        self.delay = injected_delay(self.model_name, model_config)
        self.cancelled_family, self.requests_cancelled = cancelled_requests_counter(self.model_name)
        config = self.model.config
        pb_utils.Logger.log_info(
            f"{self.model_name}: loaded {directory} ({config.output_dim}px, "
            f"{config.num_classes} classes, channel_width={config.channel_width}) on {device}"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        self.delay.hold(lambda: all(request.is_cancelled() for request in requests))
        answer_cancelled(requests, responses, self.requests_cancelled)
        accepted: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        for index, request in enumerate(requests):
            if responses[index] is not None:
                continue
            try:
                z = input_array(request, "z")
                class_vector = input_array(request, "class_vector")
                truncation = input_array(request, "truncation")
                validate_request(z, class_vector, truncation, self.model.config)
            except InvalidInputError as error:
                responses[index] = error_response(str(error))
                continue
            accepted.append((index, z, class_vector, truncation))
        if not accepted:
            return responses

        # One concatenated batch for every valid request, split back by row counts.
        try:
            images = generate_images(
                self.model,
                np.concatenate([z for _, z, _, _ in accepted]),
                np.concatenate([class_vector for _, _, class_vector, _ in accepted]),
                np.concatenate([truncation for _, _, _, truncation in accepted]),
            )
        except Exception as error:  # noqa: BLE001 - answer each request, do not fail the batch
            for index, *_ in accepted:
                responses[index] = internal_error_response(self.model_name, error)
            return responses
        offsets = np.cumsum([len(z) for _, z, _, _ in accepted])[:-1]
        for (index, *_), part in zip(accepted, np.split(images, offsets), strict=True):
            responses[index] = pb_utils.InferenceResponse(
                output_tensors=[output_tensor("image", part)]
            )
        return responses

    def finalize(self) -> None:
        # Nothing to flush: execute() answers every request before it returns.
        pb_utils.Logger.log_info(f"{self.model_name}: unloaded")
