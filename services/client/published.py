"""The published checkpoints that `genmedia models fetch` installs, and where they come from.

Every URL is the one the model's publisher (or the library we load it with)
uses, so a fetch gets byte-for-byte what everyone else gets:

- BigGAN-deep: `pytorch_pretrained_biggan.model.PRETRAINED_MODEL_ARCHIVE_MAP`
  and `PRETRAINED_CONFIG_ARCHIVE_MAP` (Hugging Face's S3 bucket).
- CycleGAN: the authors' `scripts/download_cyclegan_model.sh` in
  junyanz/pytorch-CycleGAN-and-pix2pix (one generator per direction), over
  https (the script says http; the same host serves both).
- GPT-2: the `openai-community/<name>` repositories on the Hugging Face Hub;
  `gpt2` at a fixed revision, whose files are pinned below.

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
CYCLEGAN_BASE_URL = "https://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models"
HUGGING_FACE_BASE_URL = "https://huggingface.co/openai-community"
GPT2_REVISION = "607a30d783dfa663caf39e06633721c8d4cfcd7e"
"""The openai-community/gpt2 commit whose files are pinned (its main branch since 2024)."""

MB = 1_000_000

# SHA-256 of published files, by URL. A pinned file is checked against its pin
# whatever the transport (a mirror over plain http included); an unpinned one
# only comes over https without a downgrading redirect, and is checked against
# the size the server declares and, where it sends one, an ETag or X-Linked-ETag
# that is a SHA-256 (the Hugging Face Hub sends the LFS digest of every large
# file). The digests below are the ones many independent projects pin for the
# same URLs (GPT-2's vocab.json and merges.txt are also OpenAI's encoder.json
# and vocab.bpe, whose digests tiktoken pins). A wrong pin makes every fetch of
# that file fail, never install a wrong file. No digests were found published
# for the CycleGAN generators, the other BigGAN-deep sizes or the larger GPT-2s.
_GPT2 = f"{HUGGING_FACE_BASE_URL}/gpt2/resolve/{GPT2_REVISION}"
PINNED_SHA256: MappingProxyType[str, str] = MappingProxyType(
    {
        f"{_GPT2}/model.safetensors": (
            "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707"
        ),
        f"{_GPT2}/config.json": "0daed7749b4f02b8f76240d5444551d7b08712dab4d0adb8239c56ba823bb7b4",
        f"{_GPT2}/generation_config.json": (
            "ed0b32ac72c0f5f44a719abb2d7786ea5146c871f83717b7f2018065954de02b"
        ),
        f"{_GPT2}/tokenizer.json": (
            "8414cab924d8b9b33013f0d221c5862f365ee9be39c5c2bfae8a5a9e970478a6"
        ),
        f"{_GPT2}/vocab.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
        f"{_GPT2}/merges.txt": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
        f"{BIGGAN_BASE_URL}/biggan-deep-256-pytorch_model.bin": (
            "5900ef4065047e3aa0d1b66197b7f2664dceb59b27080e414ad57e203c485bc5"
        ),
        f"{BIGGAN_BASE_URL}/biggan-deep-256-config.json": (
            "edd106f65ff28ee1638491a978cfa6bc50dfa0344aab70749a7b8eb08bbec677"
        ),
    }
)


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


def _gpt2(name: str, approx_weights_bytes: int, revision: str = "main") -> PublishedModel:
    return PublishedModel(
        name=name,
        family=Family.GPT2,
        install_path="gpt2",
        architecture="GPT2LMHeadModel (transformers)",
        resolution=0,
        dataset="WebText",
        files=tuple(
            PublishedFile(
                f"{HUGGING_FACE_BASE_URL}/{name}/resolve/{revision}/{file_name}",
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
        _gpt2("gpt2", 548 * MB, GPT2_REVISION),
        _gpt2("gpt2-medium", 1_520 * MB),
        _gpt2("gpt2-large", 3_250 * MB),
        _gpt2("gpt2-xl", 6_430 * MB),
    )
}
