"""Small helpers over Triton's python-backend API, shared by the model.py files.

Importable only inside Triton's python backend stub (it provides
`triton_python_backend_utils`); unit tests install a stand-in module.
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from genmedia_models.runtime import InvalidInputError


def input_array(request: pb_utils.InferenceRequest, name: str) -> np.ndarray:
    """A request's input as numpy; InvalidInputError when the caller left it out."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise InvalidInputError(f'missing input "{name}"')
    return tensor.as_numpy()


def scalar_input(request: pb_utils.InferenceRequest, name: str) -> np.generic:
    """The single element of a dims [1] input."""
    values = input_array(request, name).reshape(-1)
    if values.size != 1:
        raise InvalidInputError(f'input "{name}" must hold exactly one value, got {values.size}')
    return values[0]


def error_response(message: str, code: int | None = None) -> pb_utils.InferenceResponse:
    """A response carrying only a TritonError (default code: INVALID_ARG, a caller error)."""
    code = pb_utils.TritonError.INVALID_ARG if code is None else code
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def internal_error_response(model_name: str, error: BaseException) -> pb_utils.InferenceResponse:
    """Log an unexpected failure and answer with a generic INTERNAL error."""
    pb_utils.Logger.log_error(f"{model_name}: {type(error).__name__}: {error}")
    return error_response(f"{model_name} failed to run this request", pb_utils.TritonError.INTERNAL)
