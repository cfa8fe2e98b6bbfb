"""Settings of the text-generation service (``GENMEDIA_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from services.common.registry import TEXT_GENERATION
from services.common.settings import TritonBackedSettings, grpc_port_field, metrics_port_field


class TextGenerationSettings(TritonBackedSettings):
    grpc_port: int = grpc_port_field(TEXT_GENERATION.grpc_port)
    metrics_port: int = metrics_port_field(TEXT_GENERATION.metrics_port)
    text_model: str = Field("gpt2", description="Triton model that generates text (decoupled).")
    tokenizer_dir: Path = Field(
        ...,
        description="Directory with the model's tokenizer.json and config.json (required).",
    )
    default_max_new_tokens: int = Field(64, ge=1, description="max_new_tokens when unset.")
    max_new_tokens_limit: int = Field(1024, ge=1, description="Largest max_new_tokens accepted.")
    max_prompt_chars: int = Field(8192, ge=1, description="Longest prompt accepted, in characters.")
    audit_prompts: bool = Field(
        False,
        description="Put each prompt's text in its audit event (prompts can hold personal "
        "data: off unless your policy allows it; the event always has the prompt's SHA-256).",
    )
    log_prompts: bool = Field(
        False,
        description="Debugging only: log each prompt at debug level (prompts can hold personal "
        "data; they are never logged otherwise).",
    )

    @model_validator(mode="after")
    def _default_within_limit(self) -> TextGenerationSettings:
        if self.default_max_new_tokens > self.max_new_tokens_limit:
            raise ValueError(
                "GENMEDIA_DEFAULT_MAX_NEW_TOKENS must not exceed GENMEDIA_MAX_NEW_TOKENS_LIMIT"
            )
        return self
