"""The published checkpoints that `genmedia models fetch` installs, and where they come from.

Every URL is the one the model's publisher (or the library we load it with)
uses, so a fetch gets byte-for-byte what everyone else gets:

- BigGAN-deep: `pytorch_pretrained_biggan.model.PRETRAINED_MODEL_ARCHIVE_MAP`
  and `PRETRAINED_CONFIG_ARCHIVE_MAP` (Hugging Face's S3 bucket).
- CycleGAN: the authors' `scripts/download_cyclegan_model.sh` in
  junyanz/pytorch-CycleGAN-and-pix2pix (one generator per direction).
- GPT-2: the `openai-community/<name>` repositories on the Hugging Face Hub.

Installed under a weights root in the layout Triton's models read
(`GENMEDIA_WEIGHTS_DIR`): `biggan/`, `cyclegan/<direction>/latest_net_G.pth`,
`gpt2/`. Only one BigGAN and one GPT-2 are served at a time, so fetching
another size replaces the one installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

BIGGAN_BASE_URL = "https://s3.amazonaws.com/models.huggingface.co/biggan"
CYCLEGAN_BASE_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models"
HUGGING_FACE_BASE_URL = "https://huggingface.co/openai-community"

MB = 1_000_000

# SHA-256 of published files, by URL, pinned from a verified download (the
# `sha256` that genmedia.json records). A fetch also checks the size the server
# declares and, where the server sends one, an ETag or X-Linked-ETag that is a
# SHA-256 (the Hugging Face Hub sends the LFS digest of every large file).
# Only add a digest taken from a download you have verified: a wrong pin makes
# every fetch of that file fail.
PINNED_SHA256: MappingProxyType[str, str] = MappingProxyType({})


class Family(StrEnum):
    BIGGAN = "biggan"
    CYCLEGAN = "cyclegan"
    GPT2 = "gpt2"


@dataclass(frozen=True)
class PublishedFile:
    """One file of a checkpoint: where it is published and the name it is installed under."""

    url: str
    name: str
    approx_bytes: int | None = None  # for `models list` only; never checked

    @property
    def sha256(self) -> str | None:
        """The pinned digest, when PINNED_SHA256 knows this URL."""
        return PINNED_SHA256.get(self.url)


@dataclass(frozen=True)
class PublishedModel:
    """A checkpoint as published, and what genmedia.json says about it once installed."""

    name: str
    family: Family
    install_path: str  # relative to the weights root
    architecture: str
    resolution: int  # output side in pixels; 0 for text
    dataset: str
    files: tuple[PublishedFile, ...]
    extra: dict[str, str] = field(default_factory=dict)  # more genmedia.json fields

    @property
    def approx_bytes(self) -> int | None:
        sizes = [f.approx_bytes for f in self.files]
        return None if None in sizes else sum(s for s in sizes if s is not None)


def _biggan(resolution: int, approx_weights_bytes: int) -> PublishedModel:
    name = f"biggan-deep-{resolution}"
    return PublishedModel(
        name=name,
        family=Family.BIGGAN,
        install_path="biggan",
        architecture="BigGAN-deep (pytorch-pretrained-biggan)",
        resolution=resolution,
        dataset="ImageNet-1k",
        files=(
            PublishedFile(f"{BIGGAN_BASE_URL}/{name}-config.json", "config.json", 1_000),
            PublishedFile(
                f"{BIGGAN_BASE_URL}/{name}-pytorch_model.bin",
                "pytorch_model.bin",
                approx_weights_bytes,
            ),
        ),
        extra={"classes": "imagenet"},
    )


# The CycleGAN authors' pretrained generators and the dataset each was trained
# on (names as in their scripts/download_cyclegan_dataset.sh). style_* map
# photos to a painter's style and were trained on <painter>2photo.
CYCLEGAN_DATASETS: MappingProxyType[str, str] = MappingProxyType(
    {
        "apple2orange": "apple2orange",
        "orange2apple": "apple2orange",
        "summer2winter_yosemite": "summer2winter_yosemite",
        "winter2summer_yosemite": "summer2winter_yosemite",
        "horse2zebra": "horse2zebra",
        "zebra2horse": "horse2zebra",
        "monet2photo": "monet2photo",
        "style_monet": "monet2photo",
        "style_cezanne": "cezanne2photo",
        "style_ukiyoe": "ukiyoe2photo",
        "style_vangogh": "vangogh2photo",
        "sat2map": "maps",
        "map2sat": "maps",
        "cityscapes_photo2label": "cityscapes",
        "cityscapes_label2photo": "cityscapes",
        "facades_photo2label": "facades",
        "facades_label2photo": "facades",
        "iphone2dslr_flower": "iphone2dslr_flower",
    }
)
# ResnetGenerator(ngf=64, n_blocks=9): 11.4M float32 parameters.
_CYCLEGAN_APPROX_BYTES = 46 * MB


def _cyclegan(direction: str) -> PublishedModel:
    return PublishedModel(
        name=direction,
        family=Family.CYCLEGAN,
        install_path=f"cyclegan/{direction}",
        architecture="CycleGAN ResnetGenerator (9 blocks, ngf 64, instance norm)",
        resolution=256,
        dataset=CYCLEGAN_DATASETS[direction],
        files=(
            PublishedFile(
                f"{CYCLEGAN_BASE_URL}/{direction}.pth", "latest_net_G.pth", _CYCLEGAN_APPROX_BYTES
            ),
        ),
    )


# The files a served GPT-2 needs: model, config and tokenizer (the
# text-generation service reads tokenizer.json and config.json).
_GPT2_FILES = (
    ("config.json", 1_000),
    ("generation_config.json", 200),
    ("model.safetensors", None),
    ("tokenizer.json", 1_360_000),
    ("vocab.json", 1_040_000),
    ("merges.txt", 456_000),
)


def _gpt2(name: str, approx_weights_bytes: int) -> PublishedModel:
    return PublishedModel(
        name=name,
        family=Family.GPT2,
        install_path="gpt2",
        architecture="GPT2LMHeadModel (transformers)",
        resolution=0,
        dataset="WebText",
        files=tuple(
            PublishedFile(
                f"{HUGGING_FACE_BASE_URL}/{name}/resolve/main/{file_name}",
                file_name,
                approx_weights_bytes if size is None else size,
            )
            for file_name, size in _GPT2_FILES
        ),
    )


# Approximate sizes: float32 parameters and buffers (BigGAN-deep 50.4M, 55.9M
# and 56.2M parameters; GPT-2 safetensors files include the attention masks).
CATALOGUE: dict[str, PublishedModel] = {
    model.name: model
    for model in (
        _biggan(128, 211 * MB),
        _biggan(256, 234 * MB),
        _biggan(512, 235 * MB),
        *(_cyclegan(direction) for direction in CYCLEGAN_DATASETS),
        _gpt2("gpt2", 548 * MB),
        _gpt2("gpt2-medium", 1_520 * MB),
        _gpt2("gpt2-large", 3_250 * MB),
        _gpt2("gpt2-xl", 6_430 * MB),
    )
}
