"""What each service does besides calling Triton, run in the bench process with its own functions.

A service hop does necessary work: image-generation draws the noise, then
resizes, watermarks, encodes and signs each image; image-translation decodes
and resizes the input, then the same for the output; text-generation
tokenizes the prompt and turns tokens into text. Timed here on the same
inputs, it is the part of a service hop that is not transport, so the rest
can be set beside the floor of a Python gRPC hop (``bench.serving``).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
from tokenizers import Tokenizer

from bench.inprocess import InProcessModels
from bench.workloads import PROMPT, Workloads
from genmedia_models.gpt2.batching import generate_one
from genmedia_models.gpt2.sampling import SamplingParams
from services.common import image_watermark
from services.common.content_credentials import ContentCredentials, SourceImage
from services.common.images import (
    EncodeOptions,
    ImageLimits,
    decode_image,
    resize,
    resize_and_encode,
)
from services.common.provenance import make_provenance
from services.common.signing_keys import development_credentials
from services.text_generation.detokenizer import IncrementalDetokenizer

LIMITS = ImageLimits(max_bytes=32 * 1024 * 1024, max_pixels=16_000_000)


class ServiceWork:
    def __init__(self, work: Workloads, models: InProcessModels) -> None:
        self.work = work
        self.models = models
        # What a service encodes with: PNG, signed, watermarked.
        self.encoding = EncodeOptions(
            credentials=ContentCredentials(development_credentials()),
            watermark_key=image_watermark.DEVELOPMENT_KEY,
        )
        self.tokenizer = Tokenizer.from_file(str(models.weights / "gpt2" / "tokenizer.json"))

    @cached_property
    def generated(self) -> np.ndarray:
        """One image as biggan returns it, [H, W, 3] uint8."""
        return self.models.generate_images(self.work.images, 1)[0]

    @cached_property
    def translated(self) -> np.ndarray:
        return self.models.translate(self.work.translate)[0]

    @cached_property
    def token_ids(self) -> list[int]:
        """The tokens of one generation, to detokenize."""
        params = self.work.text
        sampling = SamplingParams(max_new_tokens=params.max_new_tokens, temperature=1.0, seed=1)
        return list(generate_one(self.models.gpt2, params.prompt_ids, sampling))

    def triton_bytes(self, call: str) -> tuple[int, int]:
        """Bytes the service sends Triton and gets back for ``call``."""
        if call == "GenerateImages":
            sent = sum(array.nbytes for array in self.work.images.tensors(1).values())
            return sent, self.generated.nbytes
        if call == "TranslateImage":
            return self.work.translate.pixels.nbytes, self.translated.nbytes
        raise ValueError(f"no tensors for {call}")

    def run(self, call: str, seed: int) -> object:
        provenance = make_provenance("bench", "1", seed, "bench")
        if call == "GenerateImages":
            self.work.images.tensors(seed)  # the noise and the class vector
            height, width = self.generated.shape[:2]
            return resize_and_encode(self.generated, (width, height), provenance, self.encoding)
        if call == "TranslateImage":
            translate = self.work.translate
            pixels = decode_image(translate.png, LIMITS)
            resize(pixels, translate.side, translate.side)
            height, width = pixels.shape[:2]
            source = SourceImage(translate.png, "image/png")
            return resize_and_encode(
                self.translated, (width, height), provenance, self.encoding, source
            )
        if call == "GenerateText":
            self.tokenizer.encode(PROMPT)
            return IncrementalDetokenizer(self.tokenizer).push_many(self.token_ids)
        raise ValueError(f"unknown call {call!r}")
