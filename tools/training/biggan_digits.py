"""BigGAN-deep trained as a GAN on scikit-learn's handwritten digits: the demo pack's `biggan`.

    python -m tools.training.biggan_digits --out DIR

The generator is the `pytorch_pretrained_biggan.BigGAN` class itself, small
(32x32, channel width 8, 10 classes, z_dim 128 as Triton's `z` input
expects), saved in its published layout (config.json + pytorch_model.bin).
The discriminator is a small conditional projection discriminator with
spectral norm; the losses are hinge losses and the saved weights are an
exponential moving average of the generator's, as in BigGAN.

BigGAN's batch norm (`BigGANBatchNorm`) only ever normalises with stored
statistics, one row per truncation on a grid over [0, 1]. So training swaps
in batch statistics (`batch_statistics`), and afterwards the stored rows are
filled with the batch statistics of truncated noise at each grid truncation
(`fill_truncation_statistics`), as the published checkpoints were made. The
saved weights then load strictly into the unmodified class, and the Triton
model generates with them exactly as with ImageNet BigGAN.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from pytorch_pretrained_biggan import BigGAN, BigGANConfig
from pytorch_pretrained_biggan.model import BigGANBatchNorm
from torch import nn
from tqdm import tqdm

from genmedia_models.biggan import CONFIG_NAME, WEIGHTS_NAME, generate_images, load_biggan
from services.image_generation.noise import truncated_noise
from tools.training.digits import (
    DIGIT_NAMES,
    SIDE,
    DigitSet,
    ImageClassifier,
    from_rgb_uint8,
    handwritten_digits,
    image_grid,
)
from tools.training.report import QualityReport, TrainingReport

MODEL_NAME = "biggan-digits"
NUM_CLASSES = len(DIGIT_NAMES)
Z_DIM = 128  # Triton's `z` input is FP32 [128]
SERVICE_TRUNCATION = 0.4  # GENMEDIA_DEFAULT_TRUNCATION
EVAL_TRUNCATIONS = (0.4, 1.0)
TARGET_ACCURACY = 0.80
SMALLEST_TRUNCATION = 1e-3  # stands in for t = 0, which cannot be sampled
NOISE_BOUND = 2.0  # the service's truncated normal lies in [-2, 2] before scaling


@dataclass(frozen=True)
class Hyperparameters:
    steps: int = 1000
    batch_size: int = 32
    channel_width: int = 8
    generator_lr: float = 2e-4
    discriminator_lr: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.999)
    discriminator_width: int = 16
    ema_decay: float = 0.995
    ema_start: int = 100
    n_stats: int = 51
    """Stored batch-norm statistics rows, for truncations 0, 1/50, ..., 1 (as published)."""
    statistics_batch: int = 120
    """Samples per truncation when filling the stored batch-norm statistics."""


def biggan_config(channel_width: int, n_stats: int) -> BigGANConfig:
    """BigGAN-deep's layout cut down to 32x32: three up-sampling blocks and one plain one.

    The first block's input is always 16 x channel_width (the linear layer's
    4x4 output), each block either keeps or halves its channels, and the last
    one must end at channel_width, the final batch norm's size.
    """
    return BigGANConfig(
        output_dim=SIDE,
        z_dim=Z_DIM,
        class_embed_dim=Z_DIM,  # unused by the class: its embedding always has z_dim outputs
        channel_width=channel_width,
        num_classes=NUM_CLASSES,
        layers=[(True, 16, 8), (True, 8, 4), (True, 4, 2), (False, 2, 1)],
        attention_layer_position=1,  # self-attention at 8x8, before the second block
        eps=1e-4,
        n_stats=n_stats,
    )


class Discriminator(nn.Module):
    """A small conditional discriminator: strided convolutions, spectral norm, class projection.

    Projection as in Miyato & Koyama (2018), used by SNGAN, SAGAN and BigGAN:
    score = linear(h) + <embed(class), h> for pooled features h.
    """

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        sn = nn.utils.spectral_norm
        channels = [3, width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        for inner, outer in itertools.pairwise(channels):  # 32 -> 16 -> 8 -> 4 pixels
            layers += [sn(nn.Conv2d(inner, outer, 4, stride=2, padding=1)), nn.LeakyReLU(0.1)]
        layers += [sn(nn.Conv2d(channels[-1], channels[-1], 3, padding=1)), nn.LeakyReLU(0.1)]
        self.features = nn.Sequential(*layers)
        self.linear = sn(nn.Linear(channels[-1], 1))
        self.embed = sn(nn.Embedding(num_classes, channels[-1]))

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.features(expand_darks(images)).sum(dim=(2, 3))
        return self.linear(h).squeeze(1) + (self.embed(labels) * h).sum(dim=1)


def expand_darks(images: torch.Tensor) -> torch.Tensor:
    """Cube root of the intensity, back in [-1, 1]: what the discriminator looks at.

    The training digits' background is exactly black, and the quality
    classifier (standardised pixels) reads a faint haze of a few levels out
    of 255 around a digit as a different digit. In [-1, 1] that haze is a
    shift of ~0.02 that a discriminator barely notices; after a cube root it
    is ~0.3, so the generator learns true black. The map is one-to-one, so
    the distribution the GAN matches is unchanged; only what D sees easily is.
    """
    return ((images + 1) / 2 + 1e-3) ** (1 / 3) * 2 - 1


def _batch_norms(model: nn.Module) -> list[BigGANBatchNorm]:
    return [module for module in model.modules() if isinstance(module, BigGANBatchNorm)]


def _batch_stat_forward(
    norm: BigGANBatchNorm, record: Callable[[torch.Tensor, torch.Tensor], None] | None
) -> Callable[..., torch.Tensor]:
    """BigGANBatchNorm.forward with the batch's own mean and variance instead of stored ones."""

    def forward(
        x: torch.Tensor, truncation: float, condition_vector: torch.Tensor | None = None
    ) -> torch.Tensor:
        if record is not None:
            var, mean = torch.var_mean(x.transpose(0, 1).flatten(1), dim=1, correction=0)
            record(mean, var)
        if not norm.conditional:
            return F.batch_norm(x, None, None, norm.weight, norm.bias, training=True, eps=norm.eps)
        # BatchNorm2d's training-mode normalisation (native kernel, fast backward),
        # then BigGAN's class- and noise-conditional gain and bias.
        normalised = F.batch_norm(x, None, None, training=True, eps=norm.eps)
        weight = 1 + norm.scale(condition_vector)[:, :, None, None]
        bias = norm.offset(condition_vector)[:, :, None, None]
        return normalised * weight + bias

    return forward


@contextmanager
def batch_statistics(
    model: BigGAN,
    record: Callable[[BigGANBatchNorm, torch.Tensor, torch.Tensor], None] | None = None,
) -> Iterator[None]:
    """Within the block, every BigGANBatchNorm of `model` normalises with batch statistics.

    Only the instances' `forward` is replaced (an instance attribute shadows
    the class's), so the state dict and every other BigGAN are untouched.
    `record(norm, mean, var)` sees each layer's statistics as they are used.
    """
    norms = _batch_norms(model)
    for norm in norms:
        hook = None if record is None else _bind_record(record, norm)
        norm.forward = _batch_stat_forward(norm, hook)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for norm in norms:
            del norm.forward


def _bind_record(
    record: Callable[[BigGANBatchNorm, torch.Tensor, torch.Tensor], None], norm: BigGANBatchNorm
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    return lambda mean, var: record(norm, mean, var)


def truncated_normal(rows: int, truncation: float, generator: torch.Generator) -> torch.Tensor:
    """[rows, Z_DIM] noise like the service's: normal resampled into [-2, 2], times truncation."""
    noise = torch.randn(rows, Z_DIM, generator=generator)
    outside = noise.abs() > NOISE_BOUND
    while outside.any():
        noise[outside] = torch.randn(int(outside.sum()), generator=generator)
        outside = noise.abs() > NOISE_BOUND
    return noise * truncation


def grid_truncations(n_stats: int) -> list[float]:
    """The truncation of each stored statistics row: i / (n_stats - 1), with t = 0 nudged up."""
    return [max(i / (n_stats - 1), SMALLEST_TRUNCATION) for i in range(n_stats)]


@torch.no_grad()
def fill_truncation_statistics(model: BigGAN, samples: int, seed: int) -> None:
    """Store, for every grid truncation, each batch norm's statistics over truncated noise.

    Runs in eval mode (spectral norm keeps its vectors) with batch statistics,
    over all classes in equal shares, which is what a stored row stands for.
    The same noise, scaled by each truncation, serves every row, so the rows
    change smoothly with the truncation (the class interpolates between them).
    """
    generator = torch.Generator().manual_seed(seed)
    noise = truncated_normal(samples, 1.0, generator)
    classes = F.one_hot(torch.arange(samples) % NUM_CLASSES, NUM_CLASSES).float()
    model.eval()
    seen: dict[BigGANBatchNorm, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(norm: BigGANBatchNorm, mean: torch.Tensor, var: torch.Tensor) -> None:
        seen[norm] = (mean, var)

    with batch_statistics(model, record):
        for row, truncation in enumerate(grid_truncations(model.config.n_stats)):
            model(noise * truncation, classes, truncation)
            for norm, (mean, var) in seen.items():
                norm.running_means[row] = mean
                norm.running_vars[row] = var


def _init_unconditional_norm(model: BigGAN) -> None:
    # The final (unconditional) batch norm allocates its affine parameters uninitialised.
    nn.init.ones_(model.generator.bn.weight)
    nn.init.zeros_(model.generator.bn.bias)


def _real_batches(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled batches, reshuffled every epoch, dropping the ragged tail."""
    while True:
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            yield images[index], labels[index]


def _training_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Train split as [N, 3, 32, 32] in [-1, 1] (grey replicated to RGB, BigGAN's tanh range)."""
    digits = handwritten_digits("train")
    grey = torch.from_numpy(digits.images) * 2 - 1
    return grey[:, None].expand(-1, 3, -1, -1).contiguous(), torch.from_numpy(digits.labels)


@torch.no_grad()
def _update_ema(ema: BigGAN, model: BigGAN, decay: float) -> None:
    for target, source in zip(ema.parameters(), model.parameters(), strict=True):
        target.lerp_(source, 1 - decay)


@torch.no_grad()
def _settle_spectral_norms(model: BigGAN, generator: torch.Generator, rounds: int = 20) -> None:
    """Power-iterate the EMA copy's spectral-norm vectors to its own (averaged) weights."""
    model.train()
    with batch_statistics(model):
        for _ in range(rounds):
            classes = torch.randint(NUM_CLASSES, (8,), generator=generator)
            model(truncated_normal(8, 1.0, generator), F.one_hot(classes, NUM_CLASSES).float(), 1.0)


def train(
    out_dir: Path,
    seed: int = 0,
    max_seconds: float = 240.0,
    steps: int | None = None,
    hyperparameters: Hyperparameters | None = None,
) -> TrainingReport:
    """Train the generator, fill its truncation statistics, write config.json + pytorch_model.bin.

    Runs `steps` (default: the fixed count of `hyperparameters`) unless
    `max_seconds` pass first; the report says which.
    """
    hp = hyperparameters or Hyperparameters()
    total_steps = hp.steps if steps is None else steps
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images, labels = _training_images()

    model = BigGAN(biggan_config(hp.channel_width, hp.n_stats))
    _init_unconditional_norm(model)
    discriminator = Discriminator(hp.discriminator_width, NUM_CLASSES)
    ema = copy.deepcopy(model)
    g_optimizer = torch.optim.Adam(model.parameters(), lr=hp.generator_lr, betas=hp.betas)
    d_optimizer = torch.optim.Adam(
        discriminator.parameters(), lr=hp.discriminator_lr, betas=hp.betas
    )
    batches = _real_batches(images, labels, hp.batch_size, generator)

    started = time.monotonic()
    done = 0
    losses = {"d": math.nan, "g": math.nan}
    model.train()
    with batch_statistics(model), tqdm(total=total_steps, desc=MODEL_NAME, unit="step") as bar:
        for done in range(1, total_steps + 1):
            losses = _training_step(
                model, discriminator, g_optimizer, d_optimizer, batches, generator
            )
            # Average the generator's weights (BigGAN's G_ema) once it has left the start.
            _update_ema(ema, model, 0.0 if done <= hp.ema_start else hp.ema_decay)
            bar.update()
            if done % 10 == 0:
                bar.set_postfix(d_loss=f"{losses['d']:.3f}", g_loss=f"{losses['g']:.3f}")
            if time.monotonic() - started > max_seconds:
                break
    loop_seconds = time.monotonic() - started
    _settle_spectral_norms(ema, generator)
    fill_truncation_statistics(ema, hp.statistics_batch, seed)
    _save(ema, out_dir)
    seconds = (loop_seconds, time.monotonic() - started)
    return _training_report(ema, hp, done, total_steps, seconds, losses, len(labels))


def _training_step(
    model: BigGAN,
    discriminator: Discriminator,
    g_optimizer: torch.optim.Optimizer,
    d_optimizer: torch.optim.Optimizer,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    generator: torch.Generator,
) -> dict[str, float]:
    """One discriminator and one generator update (hinge losses) on the same fake batch."""
    real, real_labels = next(batches)
    fake_labels = torch.randint(NUM_CLASSES, (len(real_labels),), generator=generator)
    z = truncated_normal(len(real_labels), 1.0, generator)
    fake = model(z, F.one_hot(fake_labels, NUM_CLASSES).float(), 1.0)

    d_loss = (
        F.relu(1 - discriminator(real, real_labels)).mean()
        + F.relu(1 + discriminator(fake.detach(), fake_labels)).mean()
    )
    d_optimizer.zero_grad(set_to_none=True)
    d_loss.backward()
    d_optimizer.step()

    g_loss = -discriminator(fake, fake_labels).mean()
    g_optimizer.zero_grad(set_to_none=True)
    g_loss.backward()
    g_optimizer.step()
    return {"d": d_loss.item(), "g": g_loss.item()}


def _save(model: BigGAN, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG_NAME).write_text(model.config.to_json_string(), encoding="utf-8")
    torch.save(model.state_dict(), out_dir / WEIGHTS_NAME)


def _training_report(
    model: BigGAN,
    hp: Hyperparameters,
    done: int,
    planned: int,
    seconds: tuple[float, float],
    losses: dict[str, float],
    train_size: int,
) -> TrainingReport:
    """`seconds`: (training loop, everything including statistics and saving)."""
    config = model.config
    details = {key: str(value) for key, value in asdict(hp).items()}
    details.update(
        planned_steps=str(planned),
        training_loop_seconds=f"{seconds[0]:.1f}",
        stopped_by_time_cap=str(done < planned),
        final_d_loss=f"{losses['d']:.4f}",
        final_g_loss=f"{losses['g']:.4f}",
        loss="hinge",
        discriminator="SNGAN CNN with class projection, spectral norm",
        torch_threads=str(torch.get_num_threads()),
    )
    return TrainingReport(
        model=MODEL_NAME,
        architecture=(
            f"BigGAN-deep (pytorch-pretrained-biggan BigGAN class), {config.output_dim}x"
            f"{config.output_dim}, channel width {config.channel_width}, "
            f"{len(config.layers)} blocks, self-attention at block "
            f"{config.attention_layer_position}, {config.n_stats} truncation statistics"
        ),
        dataset=(
            f"scikit-learn handwritten digits, train split ({train_size} images, 8x8 scans "
            f"upscaled to {SIDE}x{SIDE}, grey as RGB)"
        ),
        resolution=config.output_dim,
        steps=done,
        seconds=round(seconds[1], 1),
        parameters=sum(p.numel() for p in model.parameters()),
        details=details,
    )


def generate(model: BigGAN, classes: np.ndarray, truncation: float, seed: int) -> np.ndarray:
    """uint8 [N, 32, 32, 3] for the class indices, with the service's seeded noise."""
    z = truncated_noise(seed, len(classes), Z_DIM, truncation)
    class_vector = np.eye(NUM_CLASSES, dtype=np.float32)[classes]
    truncations = np.full((len(classes), 1), truncation, dtype=np.float32)
    return generate_images(model, z, class_vector, truncations)


def evaluate(out_dir: Path, samples_per_class: int = 50, seed: int = 1) -> QualityReport:
    """Does a classifier fit on held-out real digits recognise the class asked for?"""
    model = load_biggan(out_dir)
    held = handwritten_digits("heldout")
    train_split = handwritten_digits("train")
    classifier = ImageClassifier().fit(held.images, held.labels)
    figures = {
        "heldout_classifier_accuracy_on_real_train": classifier.accuracy(
            train_split.images, train_split.labels
        )
    }
    classes = np.repeat(np.arange(NUM_CLASSES), samples_per_class)
    for truncation in EVAL_TRUNCATIONS:
        grey = from_rgb_uint8(generate(model, classes, truncation, seed))
        predicted = classifier.predict(grey)
        per_class = [(predicted[classes == c] == c).mean() for c in range(NUM_CLASSES)]
        figures[f"class_accuracy_t{truncation}"] = float((predicted == classes).mean())
        figures[f"worst_class_accuracy_t{truncation}"] = float(min(per_class))
        figures[f"diversity_ratio_t{truncation}"] = _diversity_ratio(grey, classes, train_split)
    key = f"class_accuracy_t{SERVICE_TRUNCATION}"
    return QualityReport(
        figures={name: round(value, 4) for name, value in figures.items()},
        targets={key: f">= {TARGET_ACCURACY:.2f}"},
        passed=figures[key] >= TARGET_ACCURACY,
        method=(
            f"{samples_per_class} images per digit at truncations "
            f"{', '.join(map(str, EVAL_TRUNCATIONS))}, generated through genmedia_models.biggan "
            "(the Triton model's loader and forward pass) with the service's seeded "
            "truncated noise, classified by an RBF support-vector classifier on 16x16 "
            "thumbnails fit on the held-out real digits (never seen in training); "
            "class_accuracy is the fraction recognised as the digit asked for. "
            "diversity_ratio is the mean per-pixel standard deviation within a digit's "
            "images, generated over real (1 = as varied as the training digits, 0 = one "
            "image per digit)."
        ),
    )


def _diversity_ratio(grey: np.ndarray, classes: np.ndarray, real: DigitSet) -> float:
    generated = np.mean([grey[classes == c].std(axis=0).mean() for c in range(NUM_CLASSES)])
    reference = np.mean(
        [real.images[real.labels == c].std(axis=0).mean() for c in range(NUM_CLASSES)]
    )
    return float(generated / reference)


def sample_grid(out_dir: Path, png_path: Path, per_class: int = 8, seed: int = 2) -> None:
    """PNG of 10 rows (zero..nine) x `per_class` images at the service's default truncation."""
    model = load_biggan(out_dir)
    classes = np.repeat(np.arange(NUM_CLASSES), per_class)
    images = generate(model, classes, SERVICE_TRUNCATION, seed)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, columns=per_class).save(png_path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=240.0, help="training time cap")
    parser.add_argument(
        "--grid", type=Path, help="sample grid PNG to write (default: OUT/samples.png)"
    )
    args = parser.parse_args(argv)
    report = train(args.out, seed=args.seed, max_seconds=args.max_seconds)
    print(f"trained {report.steps} steps in {report.seconds:.1f} s, {report.parameters} parameters")
    if report.details["stopped_by_time_cap"] == "True":
        print(f"WARNING: stopped by --max-seconds before {report.details['planned_steps']} steps")
    quality = evaluate(args.out)
    for name, value in quality.figures.items():
        print(f"{name}: {value:.4f}")
    print(f"target {quality.targets}: {'passed' if quality.passed else 'FAILED'}")
    grid = args.grid or args.out / "samples.png"
    sample_grid(args.out, grid)
    print(f"samples: {grid}")


if __name__ == "__main__":
    main()
