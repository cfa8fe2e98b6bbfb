"""Full-size architectures with random weights, in the published checkpoint formats.

    python -m bench.full_size --out var/bench-weights/cpu
    python -m bench.full_size --out DIR --biggan 512 --gpt2 124m     # the GPU bench's set

Writes what ``GENMEDIA_WEIGHTS_DIR`` expects: BigGAN-deep at 128 (or 256,
512) pixels with the published layer layout and channel width 128 over
1000 classes; the CycleGAN ResNet generator with ngf 64 and 9 blocks at
256x256; and GPT-2, either the demo pack's (the CPU bench measures text on
the demo model) or GPT-2 small (124M, 12 layers, 768 wide, 50257 tokens).
Random weights cost the same time as trained ones: only the sizes matter.
The set is written once; a stamp records what it holds.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from pytorch_pretrained_biggan import BigGANConfig
from tqdm import tqdm

from bench.common import DEMO_WEIGHTS
from genmedia_models.metadata import write_metadata
from tools.test_weights import GPT2Size, write_biggan, write_cyclegan, write_gpt2

STAMP = ".bench-weights.json"
DIRECTION = "horse2zebra"
# BigGAN-deep layer layouts (up-sample, in and out channel multipliers) of the
# published 128, 256 and 512 pixel checkpoints: one up-sampling block per doubling from 4x4.
_TAIL = [(False, 16, 16), (True, 16, 16), (False, 16, 16), (True, 16, 8), (False, 8, 8)]
BIGGAN_DEEP_LAYERS = {
    128: [*_TAIL, (True, 8, 4), (False, 4, 4), (True, 4, 2), (False, 2, 2), (True, 2, 1)],
    256: [*_TAIL, (True, 8, 8), (False, 8, 8), (True, 8, 4), (False, 4, 4), (True, 4, 2),
          (False, 2, 2), (True, 2, 1)],
    512: [*_TAIL, (True, 8, 8), (False, 8, 8), (True, 8, 4), (False, 4, 4), (True, 4, 2),
          (False, 2, 2), (True, 2, 1), (False, 1, 1), (True, 1, 1)],
}  # fmt: skip


GPT2_SMALL = GPT2Size.published_124m()


@dataclass(frozen=True)
class FullSizeSet:
    biggan_resolution: int = 128
    biggan_channel_width: int = 128
    cyclegan_ngf: int = 64
    cyclegan_side: int = 256
    gpt2: str = "demo"
    """"demo" (copied from the demo pack) or "124m"."""
    gpt2_size: GPT2Size = GPT2_SMALL

    def describe(self) -> str:
        size = self.gpt2_size
        text = (
            "the demo GPT-2"
            if self.gpt2 == "demo"
            else "GPT-2 124M"
            if size == GPT2_SMALL
            else f"GPT-2 ({size.n_layer} layers, {size.n_embd} wide)"
        )
        return (
            f"BigGAN-deep-{self.biggan_resolution} (channel width {self.biggan_channel_width}), "
            f"CycleGAN ngf {self.cyclegan_ngf} at {self.cyclegan_side}x{self.cyclegan_side}, {text}"
        )


def biggan_config(resolution: int, channel_width: int) -> BigGANConfig:
    if resolution not in BIGGAN_DEEP_LAYERS:
        raise ValueError(
            f"BigGAN-deep comes in {sorted(BIGGAN_DEEP_LAYERS)} pixels, not {resolution}"
        )
    return BigGANConfig(
        output_dim=resolution,
        channel_width=channel_width,
        num_classes=1000,
        layers=BIGGAN_DEEP_LAYERS[resolution],
    )


def write_full_size(out: Path, spec: FullSizeSet = FullSizeSet(), progress: bool = True) -> Path:
    """Writes the set into ``out`` unless the stamp says it is there already; returns ``out``."""
    stamp = out / STAMP
    wanted = json.dumps(asdict(spec), sort_keys=True)
    if stamp.is_file() and stamp.read_text() == wanted:
        return out
    shutil.rmtree(out, ignore_errors=True)
    steps = ["biggan", "cyclegan", "gpt2"]
    with tqdm(steps, desc="full-size random weights", disable=not progress) as bar:
        for step in bar:
            bar.set_postfix_str(step)
            if step == "biggan":
                config = biggan_config(spec.biggan_resolution, spec.biggan_channel_width)
                # No spectral-norm settling: timing does not depend on the weights' values.
                write_biggan(out / "biggan", config, settle_steps=0)
                write_metadata(
                    out / "biggan", f"biggan-deep-{spec.biggan_resolution}-random",
                    "BigGAN-deep (random weights)", spec.biggan_resolution,
                    "none (random initialisation)", classes="imagenet",
                )  # fmt: skip
            elif step == "cyclegan":
                write_cyclegan(out / "cyclegan", DIRECTION, seed=1, ngf=spec.cyclegan_ngf)
                write_metadata(
                    out / "cyclegan" / DIRECTION, f"{DIRECTION}-random",
                    "CycleGAN ResNet generator (random weights)", spec.cyclegan_side,
                    "none (random initialisation)",
                )  # fmt: skip
            elif spec.gpt2 == "demo":
                shutil.copytree(DEMO_WEIGHTS / "gpt2", out / "gpt2")
            else:
                write_gpt2(out / "gpt2", spec.gpt2_size)
                write_metadata(
                    out / "gpt2", "gpt2-124m-random", "GPT-2 (random weights)", 0,
                    "none (random initialisation)",
                )  # fmt: skip
    stamp.write_text(wanted)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--biggan", type=int, default=128, choices=sorted(BIGGAN_DEEP_LAYERS))
    parser.add_argument("--gpt2", default="demo", choices=("demo", "124m"))
    args = parser.parse_args()
    spec = FullSizeSet(biggan_resolution=args.biggan, gpt2=args.gpt2)
    write_full_size(args.out, spec)
    print(f"{args.out}: {spec.describe()}")


if __name__ == "__main__":
    main()
