"""floor: answers each request with ``reply_bytes`` bytes and does nothing else."""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "data").as_numpy()
            size = int(pb_utils.get_input_tensor_by_name(request, "reply_bytes").as_numpy()[0])
            reply = data if data.size == size else np.zeros(size, dtype=np.uint8)
            responses.append(
                pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("data", reply)])
            )
        return responses
