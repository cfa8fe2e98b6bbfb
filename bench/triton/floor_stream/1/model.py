"""floor_stream: sends ``count`` one-token responses, then the final flag, and nothing else."""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            count = int(pb_utils.get_input_tensor_by_name(request, "count").as_numpy()[0])
            sender = request.get_response_sender()
            for token in range(count):
                output = pb_utils.Tensor("token_id", np.array([token], dtype=np.int64))
                sender.send(pb_utils.InferenceResponse(output_tensors=[output]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
