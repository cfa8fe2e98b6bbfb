"""Write small, deterministic checkpoints in the real published formats.

    python -m tools.test_weights --out DIR

DIR then holds the layout that GENMEDIA_WEIGHTS_DIR expects:

    biggan/config.json, biggan/pytorch_model.bin            (pytorch-pretrained-biggan)
    cyclegan/<direction>/latest_net_G.pth                   (original CycleGAN state dicts)
    gpt2/config.json, model.safetensors, generation_config.json,
         tokenizer.json, tokenizer_config.json, vocab.json, merges.txt   (Hugging Face)

The networks are randomly initialised (fixed seeds) and tiny, but exercise
every code path of the full-size ones: same layer layouts, key names and
files. Files whose content would not change are left untouched.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from pytorch_pretrained_biggan import BigGAN, BigGANConfig
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as transformers_logging

from genmedia_models import biggan, cyclegan
from genmedia_models.gpt2.loading import save_tokenizer_files
from genmedia_models.metadata import write_metadata

SEED = 20240229
BIGGAN_CHANNEL_WIDTH = 4
CYCLEGAN_NGF = 8
CYCLEGAN_DIRECTIONS = ("horse2zebra", "zebra2horse")
GPT2_VOCAB_SIZE = 1000
END_OF_TEXT = "<|endoftext|>"

# English prose that ships with every Python: standard-library docstrings.
CORPUS_MODULES = (
    "argparse", "collections", "contextlib", "csv", "dataclasses", "datetime", "decimal",
    "difflib", "email.message", "enum", "fractions", "functools", "heapq", "http.client",
    "inspect", "io", "itertools", "json", "logging", "pathlib", "pickle", "random", "shutil",
    "statistics", "string", "textwrap", "threading", "unittest", "urllib.parse", "uuid",
    "zipfile",
)  # fmt: skip


def write_biggan(
    directory: Path, config: BigGANConfig | None = None, settle_steps: int = 15
) -> None:
    """BigGAN-deep weights for ``config``; by default the 128x128 layer layout with
    channel_width 4 and 1000 ImageNet classes."""
    torch.manual_seed(SEED)
    config = config or BigGANConfig(channel_width=BIGGAN_CHANNEL_WIDTH, num_classes=1000)
    model = BigGAN(config)
    generator = model.generator
    # The unconditional final batch norm allocates its affine parameters uninitialised.
    torch.nn.init.ones_(generator.bn.weight)
    torch.nn.init.zeros_(generator.bn.bias)
    for module in model.modules():
        # Give every truncation its own batch-norm statistics, as the trained
        # model has, so that truncation visibly changes the output.
        if hasattr(module, "running_means"):
            module.running_means.normal_(0.0, 0.1)
            module.running_vars.uniform_(0.5, 1.5)
        if hasattr(module, "gamma"):
            module.gamma.data.fill_(0.1)
    # Eval mode uses the stored spectral-norm vectors as they are: run the
    # power iteration (it runs on training-mode forwards) until they settle.
    model.train()
    with torch.no_grad():
        z = torch.randn(4, config.z_dim)
        classes = torch.eye(config.num_classes)[:4]
        for _ in range(settle_steps):
            model(z, classes, 1.0)
    model.eval()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / biggan.CONFIG_NAME).write_text(config.to_json_string(), encoding="utf-8")
    torch.save(model.state_dict(), directory / biggan.WEIGHTS_NAME)


def write_cyclegan(directory: Path, direction: str, seed: int, ngf: int = CYCLEGAN_NGF) -> None:
    """The original 9-block ResNet generator (ngf 8 here, 64 published), init N(0, 0.02)."""
    torch.manual_seed(seed)
    net = cyclegan.ResnetGenerator(cyclegan.ResnetGeneratorConfig(ngf=ngf, n_blocks=9))
    for module in net.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            torch.nn.init.normal_(module.weight, 0.0, 0.02)
            torch.nn.init.zeros_(module.bias)
    target = directory / direction
    target.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), target / "latest_net_G.pth")


def corpus() -> Iterator[str]:
    """Docstrings of standard-library modules and their public members, in a fixed order."""
    for name in CORPUS_MODULES:
        module = importlib.import_module(name)
        yield inspect.getdoc(module) or ""
        for attribute, member in sorted(vars(module).items()):
            documented = inspect.isclass(member) or inspect.isroutine(member)
            if (
                attribute.startswith("_")
                or not documented
                or getattr(member, "__module__", None) != name
            ):
                continue
            yield inspect.getdoc(member) or ""
            if inspect.isclass(member):
                for method, value in sorted(vars(member).items()):
                    if not method.startswith("_") and (
                        inspect.isroutine(value) or isinstance(value, property)
                    ):
                        yield inspect.getdoc(value) or ""


@dataclass(frozen=True)
class GPT2Size:
    """Layer sizes; the default is tiny, ``GPT2Size.published_124m()`` is GPT-2 small."""

    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 2
    vocab_size: int | None = None
    """None: the trained tokenizer's size. Larger: unused tokens pad the tokenizer to it."""

    @classmethod
    def published_124m(cls) -> GPT2Size:
        return cls(n_embd=768, n_layer=12, n_head=12, vocab_size=50257)


def write_gpt2(directory: Path, size: GPT2Size = GPT2Size()) -> None:
    """A byte-level BPE tokenizer trained on docstrings and a GPT-2 of ``size`` sized to it."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = ByteLevelBPETokenizer(add_prefix_space=False)
    tokenizer.train_from_iterator(
        (text for text in corpus() if text),
        vocab_size=GPT2_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[END_OF_TEXT],
        show_progress=False,
    )
    if size.vocab_size is not None and size.vocab_size > tokenizer.get_vocab_size():
        # Every id the model can sample must decode: pad with tokens no text produces.
        padding = size.vocab_size - tokenizer.get_vocab_size()
        tokenizer.add_tokens([f"<|unused{number}|>" for number in range(padding)])
    save_tokenizer_files(tokenizer, directory, END_OF_TEXT, 1024)
    end_of_text = tokenizer.token_to_id(END_OF_TEXT)

    torch.manual_seed(SEED)
    config = GPT2Config(
        vocab_size=tokenizer.get_vocab_size(),
        n_positions=1024,
        n_embd=size.n_embd,
        n_layer=size.n_layer,
        n_head=size.n_head,
        bos_token_id=end_of_text,
        eos_token_id=end_of_text,
    )
    GPT2LMHeadModel(config).save_pretrained(directory, safe_serialization=True)


def sync_tree(source: Path, destination: Path) -> list[tuple[str, bool]]:
    """Copy files whose bytes differ; returns (relative path, written) for every file."""
    report: list[tuple[str, bool]] = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = path.relative_to(source)
        target = destination / relative
        content = path.read_bytes()
        if target.is_file() and target.read_bytes() == content:
            report.append((str(relative), False))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(path, staging)
        os.replace(staging, target)
        report.append((str(relative), True))
    return report


def write_all(out: Path) -> list[tuple[str, bool]]:
    """Write every test checkpoint under `out`; returns what sync_tree reports."""
    with tempfile.TemporaryDirectory(prefix="genmedia-test-weights-") as scratch:
        staged = Path(scratch)
        write_biggan(staged / "biggan")
        write_metadata(
            staged / "biggan", "biggan-test", "BigGAN-deep (random weights)", 128,
            "none (random initialisation)", classes="imagenet",
        )  # fmt: skip
        for offset, direction in enumerate(CYCLEGAN_DIRECTIONS):
            write_cyclegan(staged / "cyclegan", direction, SEED + offset)
            write_metadata(
                staged / "cyclegan" / direction, f"{direction}-test",
                "CycleGAN ResNet generator (random weights)", 256, "none (random initialisation)",
            )  # fmt: skip
        write_gpt2(staged / "gpt2")
        write_metadata(
            staged / "gpt2", "gpt2-test", "GPT-2 (random weights)", 0,
            "none (random initialisation)",
        )  # fmt: skip
        return sync_tree(staged, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="weights root to write (GENMEDIA_WEIGHTS_DIR)"
    )
    args = parser.parse_args(argv)
    transformers_logging.disable_progress_bar()
    for relative, written in write_all(args.out):
        size = (args.out / relative).stat().st_size
        print(f"{'wrote    ' if written else 'unchanged'} {args.out / relative} ({size} bytes)")


if __name__ == "__main__":
    main()
