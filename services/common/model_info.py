"""What Triton says a served model is, from the ``genmedia_*`` config parameters."""

from __future__ import annotations

from genmedia.v1 import common_pb2
from services.common.triton import TritonClient

PREFIX = "genmedia_"


async def model_info(triton: TritonClient, model: str) -> common_pb2.ModelInfo:
    parameters = await triton.model_parameters(model)
    resolution = parameters.get(PREFIX + "resolution", "0")
    return common_pb2.ModelInfo(
        name=parameters.get(PREFIX + "name", model),
        triton_model=model,
        version=await triton.model_version(model),
        architecture=parameters.get(PREFIX + "architecture", ""),
        resolution=int(resolution) if resolution.isdigit() else 0,
        dataset=parameters.get(PREFIX + "dataset", ""),
    )


async def model_parameter(triton: TritonClient, model: str, key: str) -> str | None:
    return (await triton.model_parameters(model)).get(PREFIX + key)
