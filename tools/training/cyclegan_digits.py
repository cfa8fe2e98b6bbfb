"""CycleGAN demo pair: handwritten digits <-> typeset digits, trained unpaired.

Both generators are the original CycleGAN ResNet generator
(`genmedia_models.cyclegan.ResnetGenerator`, InstanceNorm without affine, the
original state-dict key layout), saved as `<out>/<direction>/latest_net_G.pth`
exactly where the Triton `cyclegan_<direction>` models look. The recipe is the
original one scaled down to 32x32 digits and a CPU budget of a few minutes:
LSGAN adversarial losses against two small PatchGAN discriminators, cycle
consistency (lambda 10; 5 for the handwritten round trip), identity loss
(0.5 lambda), Adam(2e-4, beta1 0.5) with a linear decay to zero over the
second half, and a pool of past fakes for the discriminators. One addition,
from CyCADA: a frozen digit reader per domain must read the source digit in
each translation (semantic consistency), since cycle consistency alone lets
the generators swap digits as long as they swap them back.

Quality is measured on data no generator saw (the held-out handwritten split,
typeset digits rendered with another seed), through the same uint8
pre/post-processing that Triton serves: the digit class of each output is read
by a classifier trained on the target domain, and a handwritten-vs-typeset
classifier says which domain the output looks like.

    python -m tools.training.cyclegan_digits --out var/demo/cyclegan
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from genmedia_models.cyclegan import (
    ResnetGenerator,
    ResnetGeneratorConfig,
    load_generator,
)
from genmedia_models.runtime import signed_unit_to_uint8, uint8_to_signed_unit
from tools.training import digits
from tools.training.pacing import steps_that_fit
from tools.training.report import QualityReport, TrainingReport

DIRECTIONS = ("handwritten2typeset", "typeset2handwritten")
CHECKPOINT_NAME = "latest_net_G.pth"
MODEL_NAME = "cyclegan-digits"
TARGET = 0.80
# Typeset training digits are always rendered with this seed (the data is
# fixed, like the handwritten split); evaluation renders with EVAL_RENDER_BASE
# + seed so its typeset digits are never the training ones.
TRAIN_RENDER_SEED = 0
EVAL_RENDER_BASE = 1000


@dataclass(frozen=True)
class CycleGanDigitsConfig:
    """Everything that shapes a run; defaults fit 5.5 minutes on 2 CPU cores."""

    ngf: int = 16
    ngf_t2h: int | None = None
    """Base filters of the typeset -> handwritten generator (None: ngf)."""
    n_blocks: int = 4
    ndf: int = 32
    batch_size: int = 16
    steps: int = 620
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_cycle: float = 10.0
    lambda_cycle_a: float | None = 5.0
    """Cycle weight of handwritten -> typeset -> handwritten (None: lambda_cycle). Lower
    lets the typeset rendering drop the blur a perfect round trip would need to keep."""
    lambda_identity: float = 0.5
    """Times lambda_cycle, as the original's --lambda_identity."""
    pool_size: int = 50
    typeset_per_class: int = 150
    class_aware: bool = False
    """Discriminators judge (image, source label) pairs; see PatchDiscriminator."""
    lambda_semantic: float = 1.0
    """CyCADA's semantic consistency: a frozen target-domain CNN must read the source label."""
    lambda_semantic_t2h: float | None = 3.0
    """The same for typeset -> handwritten only (None: lambda_semantic). Blurry handwriting
    loses a digit more easily; a stronger pull on handwritten -> typeset instead teaches
    it textures that fool its reader."""
    classifier_steps: int = 300
    dark_view: bool = True
    """Discriminators also see the image on a log scale; see PatchDiscriminator."""
    label_input: bool = False
    """Class-aware discriminators get the label as input planes, not a projection."""

    def generator_config(self, direction: str = DIRECTIONS[0]) -> ResnetGeneratorConfig:
        ngf = self.ngf_t2h if direction == DIRECTIONS[1] and self.ngf_t2h else self.ngf
        return ResnetGeneratorConfig(ngf=ngf, n_blocks=self.n_blocks)


class PatchDiscriminator(nn.Module):
    """A small PatchGAN (the original's NLayerDiscriminator, two stride-2 layers), class-aware.

    At 32x32 it scores a 6x6 grid of overlapping 34-pixel patches, so each
    score sees the whole digit: stroke width and glyph size are what tell
    the domains apart. With `num_classes`, each patch score gets a projection
    term <embed(label), features> (Miyato & Koyama's projection discriminator):
    a fake is then judged as "a real typeset 3?" with the label of the image it
    was translated from, which is what stops the unpaired generators from
    swapping digits. The generators never see labels, so serving needs none.
    """

    def __init__(
        self,
        ndf: int,
        num_classes: int = 0,
        input_nc: int = 3,
        dark_view: bool = False,
        label_input: bool = False,
    ) -> None:
        super().__init__()
        self.dark_view = dark_view
        self.label_input = label_input
        self.num_classes = num_classes
        in_channels = input_nc * (2 if dark_view else 1) + (num_classes if label_input else 0)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, kernel_size=4, stride=2, padding=1),
            nn.InstanceNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, ndf * 4, kernel_size=4, stride=1, padding=1),
            nn.InstanceNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, True),
        )
        self.head = nn.Conv2d(ndf * 4, 1, kernel_size=4, stride=1, padding=1)
        self.embed = nn.Embedding(num_classes, ndf * 4) if num_classes and not label_input else None
        if self.embed is not None:
            # Start as a plain PatchGAN; the class terms grow as D learns them.
            nn.init.zeros_(self.embed.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.dark_view:
            # The image again on a log scale (0 -> -1, 1/255 -> -0.2, 1 -> 1): faint
            # specks that survive rounding to uint8 look as loud as ink. Near black,
            # log(ink) is linear in tanh's input, so its gradient does not vanish.
            unit = ((x + 1.0) / 2.0).clamp(0.0, 1.0)
            x = torch.cat([x, torch.log10(unit + 1e-4) / 2.0 + 1.0], dim=1)
        if self.label_input:
            planes = nn.functional.one_hot(labels, self.num_classes).float() * 2.0 - 1.0
            x = torch.cat([x, planes[:, :, None, None].expand(-1, -1, *x.shape[2:])], dim=1)
        h = self.features(x)
        score = self.head(h)
        if self.embed is not None and labels is not None:
            # Same 4x4 window as the head, so the projection lines up with its patches.
            projection = (h * self.embed(labels)[:, :, None, None]).sum(1, keepdim=True)
            score = score + nn.functional.avg_pool2d(
                projection, 4, stride=1, padding=1, count_include_pad=False
            )
        return score


class ImagePool:
    """The original's history of generated images: D sees a mix of old and new fakes.

    It damps the oscillation between generator and discriminator. Labels travel
    with their images for the class-aware discriminators.
    """

    def __init__(self, size: int, generator: torch.Generator) -> None:
        self.size = size
        self.images: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.generator = generator

    def query(self, batch: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.size == 0:
            return batch.detach(), labels
        out = []
        for item in zip(batch.detach(), labels, strict=True):
            if len(self.images) < self.size:
                self.images.append(item)
                out.append(item)
            elif torch.rand((), generator=self.generator) < 0.5:
                index = int(torch.randint(self.size, (), generator=self.generator))
                out.append(self.images[index])
                self.images[index] = item
            else:
                out.append(item)
        return torch.stack([image for image, _ in out]), torch.stack([label for _, label in out])


class DigitNet(nn.Module):
    """A small CNN digit reader, one per domain, frozen while the generators train.

    CyCADA (Hoffman et al., 2018) adds this semantic-consistency term to
    CycleGAN for exactly this kind of digit translation: cycle consistency
    alone lets the generators swap digits as long as they can swap back.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv2d(3, width, kernel_size=3, stride=2, padding=1),
            nn.ReLU(True),
            nn.Conv2d(width, width * 2, kernel_size=3, stride=2, padding=1),
            nn.ReLU(True),
            nn.Conv2d(width * 2, width * 4, kernel_size=3, stride=2, padding=1),
            nn.ReLU(True),
            nn.Flatten(),
            nn.Linear(width * 4 * 2 * 2, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # It reads a 16x16 box-filtered thumbnail: pixel-level speckle, which a
        # generator could learn to use as a code only this reader understands,
        # averages away, so the loss rewards the digit's shape.
        return self.model(nn.functional.avg_pool2d(x, 2))


def _fit_digit_net(
    images: torch.Tensor, labels: torch.Tensor, steps: int, generator: torch.Generator
) -> DigitNet:
    """Train a DigitNet on one domain's training images; returned frozen, in eval mode."""
    net = DigitNet()
    optimiser = torch.optim.Adam(net.parameters(), 1e-3)
    loss = nn.CrossEntropyLoss()
    for _ in range(steps):
        pick = torch.randint(len(images), (64,), generator=generator)
        # Shifts of up to 2 pixels, so the reader keys on shape, not on place.
        dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=generator))
        batch = torch.roll(images[pick], shifts=(dy, dx), dims=(2, 3))
        optimiser.zero_grad(set_to_none=True)
        loss(net(batch), labels[pick]).backward()
        optimiser.step()
    return net.eval().requires_grad_(False)


def _served_tensor(images: np.ndarray) -> torch.Tensor:
    """Greyscale [N, 32, 32] in [0, 1] -> what the served generator gets: [N, 3, 32, 32] in [-1, 1].

    Going through uint8 like a request does, so training sees served inputs.
    """
    return uint8_to_signed_unit(torch.from_numpy(digits.to_rgb_uint8(images)))


@torch.inference_mode()
def translate(net: ResnetGenerator, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Greyscale [N, 32, 32] in [0, 1] through `net` as served: uint8 RGB in, uint8 RGB out.

    Same conversions as the Triton model (genmedia_models.cyclegan.translate),
    which cannot be imported outside Triton; returns greyscale [N, 32, 32] in [0, 1].
    """
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = uint8_to_signed_unit(
            torch.from_numpy(digits.to_rgb_uint8(images[start : start + batch_size]))
        )
        outputs.append(signed_unit_to_uint8(net(batch)).numpy())
    return digits.from_rgb_uint8(np.concatenate(outputs))


def _training_sets() -> tuple[digits.DigitSet, digits.DigitSet]:
    return (
        digits.handwritten_digits("train"),
        digits.typeset_digits(CycleGanDigitsConfig.typeset_per_class, TRAIN_RENDER_SEED),
    )


def _lr_factor(step: int, total_steps: int) -> float:
    """The original's schedule: constant for the first half, then linearly to zero."""
    half = total_steps // 2
    return 1.0 if step < half else max(0.0, 1.0 - (step - half) / max(1, total_steps - half))


def train(
    out_dir: Path,
    seed: int = 0,
    max_seconds: float = 330.0,
    steps: int | None = None,
    config: CycleGanDigitsConfig | None = None,
) -> TrainingReport:
    """Train both generators; writes `out_dir/<direction>/latest_net_G.pth`.

    A fixed step count keeps runs reproducible; `max_seconds` only guards
    against a much slower machine (training stops early, the report says so).
    """
    config = config or CycleGanDigitsConfig()
    total_steps = config.steps if steps is None else steps
    torch.manual_seed(seed)
    sampler = torch.Generator().manual_seed(seed)

    handwritten = digits.handwritten_digits("train")
    typeset = digits.typeset_digits(config.typeset_per_class, TRAIN_RENDER_SEED)
    domain_a, domain_b = _served_tensor(handwritten.images), _served_tensor(typeset.images)
    labels_a, labels_b = torch.from_numpy(handwritten.labels), torch.from_numpy(typeset.labels)

    g_ab = ResnetGenerator(config.generator_config())  # handwritten -> typeset
    g_ba = ResnetGenerator(config.generator_config(DIRECTIONS[1]))  # typeset -> handwritten
    num_classes = len(digits.DIGIT_NAMES) if config.class_aware else 0
    d_a, d_b = (
        PatchDiscriminator(
            config.ndf, num_classes, dark_view=config.dark_view, label_input=config.label_input
        )
        for _ in range(2)
    )
    for net in (g_ab, g_ba, d_a, d_b):
        _init_weights(net)
    betas = (config.beta1, 0.999)
    opt_g = torch.optim.Adam([*g_ab.parameters(), *g_ba.parameters()], config.lr, betas=betas)
    opt_d = torch.optim.Adam([*d_a.parameters(), *d_b.parameters()], config.lr, betas=betas)
    pool_a, pool_b = ImagePool(config.pool_size, sampler), ImagePool(config.pool_size, sampler)
    mse, l1 = nn.MSELoss(), nn.L1Loss()
    lambda_idt = config.lambda_cycle * config.lambda_identity
    reader_a = _fit_digit_net(domain_a, labels_a, config.classifier_steps, sampler)
    reader_b = _fit_digit_net(domain_b, labels_b, config.classifier_steps, sampler)
    cross_entropy = nn.CrossEntropyLoss()

    started = time.monotonic()
    done, planned = 0, total_steps
    losses: dict[str, float] = {}
    progress = tqdm(total=planned, desc="cyclegan-digits", unit="step")
    while done < planned:
        elapsed = time.monotonic() - started
        if elapsed > max_seconds:
            break  # last resort; the re-planning below normally finishes in time
        planned = steps_that_fit(done, total_steps, max_seconds, elapsed, elapsed)
        progress.total = planned
        for optimiser in (opt_g, opt_d):
            for group in optimiser.param_groups:
                group["lr"] = config.lr * _lr_factor(done, planned)
        pick_a = torch.randint(len(domain_a), (config.batch_size,), generator=sampler)
        pick_b = torch.randint(len(domain_b), (config.batch_size,), generator=sampler)
        real_a, label_a, real_b, label_b = (
            domain_a[pick_a],
            labels_a[pick_a],
            domain_b[pick_b],
            labels_b[pick_b],
        )

        # Generators: fool both discriminators, come back around, leave own domain alone.
        fake_b, fake_a = g_ab(real_a), g_ba(real_b)
        for net in (d_a, d_b):
            net.requires_grad_(False)
        pred_b, pred_a = d_b(fake_b, label_a), d_a(fake_a, label_b)
        loss_gan = mse(pred_b, torch.ones_like(pred_b)) + mse(pred_a, torch.ones_like(pred_a))
        lambda_a = config.lambda_cycle if config.lambda_cycle_a is None else config.lambda_cycle_a
        loss_cycle = (lambda_a / config.lambda_cycle) * l1(g_ba(fake_b), real_a) + l1(
            g_ab(fake_a), real_b
        )
        loss_idt = (
            l1(g_ab(real_b), real_b) + l1(g_ba(real_a), real_a)
            if lambda_idt > 0
            else torch.zeros(())
        )
        lambda_t2h = (
            config.lambda_semantic
            if config.lambda_semantic_t2h is None
            else config.lambda_semantic_t2h
        )
        loss_semantic_ab = cross_entropy(reader_b(fake_b), label_a)
        loss_semantic_ba = cross_entropy(reader_a(fake_a), label_b)
        loss_g = (
            loss_gan
            + config.lambda_cycle * loss_cycle
            + lambda_idt * loss_idt
            + config.lambda_semantic * loss_semantic_ab
            + lambda_t2h * loss_semantic_ba
        )
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

        # Discriminators: real -> 1, (pooled) fake -> 0, halved as in the original.
        for net in (d_a, d_b):
            net.requires_grad_(True)
        loss_d = torch.zeros(())
        for net, real, real_label, (fake, fake_label) in (
            (d_a, real_a, label_a, pool_a.query(fake_a, label_b)),
            (d_b, real_b, label_b, pool_b.query(fake_b, label_a)),
        ):
            pred_real, pred_fake = net(real, real_label), net(fake, fake_label)
            loss_d = loss_d + 0.5 * (
                mse(pred_real, torch.ones_like(pred_real))
                + mse(pred_fake, torch.zeros_like(pred_fake))
            )
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        done += 1
        progress.update()
        losses = {
            "gan": loss_gan.item(),
            "cycle": loss_cycle.item(),
            "identity": loss_idt.item(),
            "semantic": loss_semantic_ab.item() + loss_semantic_ba.item(),
            "d": loss_d.item(),
        }
        if done % 25 == 0:
            progress.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
    progress.close()
    seconds = time.monotonic() - started

    for direction, net in zip(DIRECTIONS, (g_ab, g_ba), strict=True):
        path = out_dir / direction / CHECKPOINT_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), path)

    details = {key: str(value) for key, value in asdict(config).items()}
    details.update(
        {
            "planned_steps": str(total_steps),
            "replanned_steps": str(planned),
            "stopped_early": str(done < total_steps),
            "seed": str(seed),
            "torch_threads": str(torch.get_num_threads()),
            "final_losses": ", ".join(f"{k} {v:.4f}" for k, v in losses.items()),
            "optimiser": f"Adam(lr {config.lr}, betas {betas}), linear decay over 2nd half",
            "discriminator": f"PatchGAN ndf {config.ndf}, LSGAN, pool {config.pool_size}",
        }
    )
    return TrainingReport(
        model=MODEL_NAME,
        architecture=(
            "CycleGAN ResNet generator (original layout, InstanceNorm), "
            f"ngf {config.ngf}, {config.n_blocks} residual blocks, one per direction"
        ),
        dataset=(
            f"unpaired: {len(handwritten)} handwritten digits (scikit-learn, train split) and "
            f"{len(typeset)} typeset digits (Pillow's bundled font, render seed "
            f"{TRAIN_RENDER_SEED}), {digits.SIDE}x{digits.SIDE} greyscale as RGB"
        ),
        resolution=digits.SIDE,
        steps=done,
        seconds=seconds,
        parameters=sum(p.numel() for net in (g_ab, g_ba) for p in net.parameters()),
        details=details,
    )


def _init_weights(net: nn.Module) -> None:
    """The original's init_type normal: N(0, 0.02) weights, zero biases."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def load_pair(out_dir: Path) -> dict[str, ResnetGenerator]:
    """Both generators, loaded strictly the way Triton loads them."""
    return {
        direction: load_generator(out_dir / direction / CHECKPOINT_NAME) for direction in DIRECTIONS
    }


def evaluate(out_dir: Path, seed: int = 1) -> QualityReport:
    """Class preservation and target-domain rate per direction, on data never trained on."""
    hand_train, type_train = _training_sets()
    hand_test = digits.handwritten_digits("heldout")
    type_test = digits.typeset_digits(50, EVAL_RENDER_BASE + seed)

    # The class judge knows both domains: it reads the digit, whatever the style;
    # style is the domain classifier's question. Domain labels: 0 handwritten, 1 typeset.
    both = np.concatenate([hand_train.images, type_train.images])
    class_classifier = digits.ImageClassifier().fit(
        both, np.concatenate([hand_train.labels, type_train.labels])
    )
    domain_classifier = digits.ImageClassifier().fit(
        both, np.concatenate([np.zeros(len(hand_train)), np.ones(len(type_train))]).astype(np.int64)
    )

    nets = load_pair(out_dir)
    cases = {"handwritten2typeset": (hand_test, 1), "typeset2handwritten": (type_test, 0)}
    figures: dict[str, float] = {}
    targets: dict[str, str] = {}
    for direction, (inputs, target_domain) in cases.items():
        outputs = translate(nets[direction], inputs.images)
        figures[f"{direction}_class_preserved"] = class_classifier.accuracy(outputs, inputs.labels)
        figures[f"{direction}_target_domain"] = float(
            (domain_classifier.predict(outputs) == target_domain).mean()
        )
        targets[f"{direction}_class_preserved"] = f">= {TARGET:.2f}"
        targets[f"{direction}_target_domain"] = f">= {TARGET:.2f}"
    # Context: how well the judges themselves do on real held-out digits.
    figures["class_judge_accuracy_handwritten"] = class_classifier.accuracy(
        hand_test.images, hand_test.labels
    )
    figures["class_judge_accuracy_typeset"] = class_classifier.accuracy(
        type_test.images, type_test.labels
    )
    real_domains = np.concatenate([np.zeros(len(hand_test)), np.ones(len(type_test))])
    figures["domain_classifier_accuracy"] = float(
        (
            domain_classifier.predict(np.concatenate([hand_test.images, type_test.images]))
            == real_domains
        ).mean()
    )
    passed = all(figures[name] >= TARGET for name in targets)
    method = (
        f"Inputs never used in training: the {len(hand_test)} held-out handwritten digits and "
        f"{len(type_test)} typeset digits rendered with seed {EVAL_RENDER_BASE + seed}, sent "
        "through each generator as uint8 RGB with the served pre/post-processing. "
        "class_preserved: an RBF support-vector digit classifier trained on the real "
        "training digits of both domains reads the output's class, compared with the input's "
        "label. target_domain: a handwritten-vs-typeset classifier of the same kind, trained "
        "on both training sets, assigns the output to the target domain. class_judge_* and "
        "domain_classifier_accuracy: the judges themselves on real held-out digits."
    )
    return QualityReport(figures=figures, targets=targets, passed=passed, method=method)


def sample_grid(out_dir: Path, png_path: Path, per_direction: int = 10, seed: int = 2) -> None:
    """For each direction a row of unseen inputs (digits 0, 1, ...) and the row of their outputs."""
    rng = np.random.default_rng(seed)
    hand_test = digits.handwritten_digits("heldout")
    type_test = digits.typeset_digits(1, EVAL_RENDER_BASE + seed)
    sources = {"handwritten2typeset": hand_test, "typeset2handwritten": type_test}
    nets = load_pair(out_dir)
    rows = []
    for direction in DIRECTIONS:
        source = sources[direction]
        # One input per digit 0..9 (cycling past 9), picked at random among that class.
        picks = [
            int(rng.choice(np.flatnonzero(source.labels == index % 10)))
            for index in range(per_direction)
        ]
        inputs = source.images[picks]
        rows += [inputs, translate(nets[direction], inputs)]
    grid = digits.image_grid(digits.to_rgb_uint8(np.concatenate(rows)), columns=per_direction)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(png_path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="weights directory to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=330.0)
    args = parser.parse_args(argv)

    report = train(args.out, seed=args.seed, max_seconds=args.max_seconds)
    print(f"trained {report.steps} steps in {report.seconds:.1f} s ({report.parameters} params)")
    quality = evaluate(args.out)
    for name, value in quality.figures.items():
        target = quality.targets.get(name, "")
        print(f"  {name:40s} {value:.3f} {target}")
    print("passed" if quality.passed else "FAILED")
    sample_grid(args.out, args.out / "samples.png")
    print(f"samples: {args.out / 'samples.png'}")


if __name__ == "__main__":
    main()
