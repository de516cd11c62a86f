"""Train a normalizing flow on two moons and draw its exact density.

Fits a `NeuralSplineFlow` (or `RealNVP`/`Glow`) to points from
`zoo.data.TwoMoons` by maximum likelihood with plain `fit`, reports the
held-out negative log-likelihood against the data's true entropy (the best
any model can do), and writes one PNG: the learned density exp(log_prob) on
a grid, the training data, and samples from the flow. Keras prints one line
per epoch (`--verbose 1`: the progress bar); on PyTorch the script uses only
the CPU cores other processes leave idle unless `OMP_NUM_THREADS` is set
(`zoo.core.threads.limit_torch_threads`; see docs/cli.md).

Run from the repository root under any backend (about a minute on a CPU):

    KERAS_BACKEND=jax python examples/flow_moons.py
    KERAS_BACKEND=torch python examples/flow_moons.py --model realnvp --out out/realnvp.png
"""

import argparse
import os
import sys
import time

# So that the example runs from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from zoo.core.threads import limit_torch_threads  # noqa: E402
from zoo.data import TwoMoons  # noqa: E402
from zoo.flow import Glow, NeuralSplineFlow, RealNVP  # noqa: E402
from zoo.images import caption_font, scatter_image  # noqa: E402

MODELS = {
    "nsf": lambda seed: NeuralSplineFlow((2,), num_couplings=4, num_bins=8, seed=seed),
    "realnvp": lambda seed: RealNVP((2,), num_couplings=8, seed=seed),
    "glow": lambda seed: Glow((2,), steps_per_scale=8, seed=seed),
}
LIMITS = (-1.75, 2.75)
PANEL = 400


def density_image(model, size=PANEL, limits=LIMITS):
    """exp(log_prob) on a size x size grid as an RGB panel (dark = 0)."""
    low, high = limits
    step = (high - low) / size
    axis = low + step * (np.arange(size) + 0.5)
    # Row 0 of an image is the top: largest y first.
    gx, gy = np.meshgrid(axis, axis[::-1])
    points = np.stack([gx.ravel(), gy.ravel()], axis=1).astype("float32")
    density = np.exp(model.log_prob(points, batch_size=size * size).astype(np.float64))
    mass = density.sum() * step * step  # ~1: the density is normalized
    value = (density / density.max()).reshape(size, size)
    # A dark-blue -> yellow ramp; the square root shows the low-density tails.
    ramp = np.array([[10, 10, 40], [40, 90, 170], [90, 190, 140], [250, 230, 90]], float)
    position = np.sqrt(value) * (len(ramp) - 1)
    lower = np.minimum(position.astype(int), len(ramp) - 2)
    frac = (position - lower)[..., None]
    rgb = ramp[lower] * (1 - frac) + ramp[lower + 1] * frac
    panel = Image.new("RGB", (size, size + 20), "white")
    panel.paste(Image.fromarray(rgb.astype(np.uint8)), (0, 20))
    ImageDraw.Draw(panel).text((5, 3), f"learned density (mass on grid {mass:.3f})",
                               fill="black", font=caption_font())
    return panel


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=list(MODELS), default="nsf")
    parser.add_argument("--steps", type=int, default=2000, help="training steps")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/flow_moons.png")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2,
                        help="Keras's fit verbosity: 2 one line per epoch (default), "
                        "1 a progress bar, 0 silent")
    args = parser.parse_args()
    if args.steps < 10 or args.batch_size < 1:
        parser.error("--steps must be >= 10 (10 epochs of steps / 10) and --batch-size >= 1")
    limit_torch_threads()

    start = time.perf_counter()
    moons = TwoMoons(noise=0.1)
    train = moons.sample(args.steps * args.batch_size // 10, seed=args.seed)
    test = moons.sample(10_000, seed=args.seed + 1)

    model = MODELS[args.model](args.seed)
    schedule = keras.optimizers.schedules.CosineDecay(3e-3, args.steps, alpha=0.01)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    model.fit(train, batch_size=args.batch_size, epochs=10,
              verbose=args.verbose)
    train_seconds = time.perf_counter() - start

    nll = -model.log_prob(test).mean()
    entropy = moons.entropy()
    samples = model.sample(2000, seed=args.seed)

    scatter = scatter_image(
        {"data": train[:2000], f"{args.model} samples": samples}, size=PANEL,
        limits=LIMITS,
    )
    figure = Image.new("RGB", (3 * PANEL, PANEL + 20), "white")
    figure.paste(density_image(model), (0, 0))
    figure.paste(scatter, (PANEL, 0))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    figure.save(args.out)

    print(f"backend {keras.backend.backend()}, model {args.model}: test NLL "
          f"{nll:.4f} nats, true entropy {entropy:.4f} (gap {nll - entropy:.4f})")
    print(f"training {train_seconds:.1f} s, total {time.perf_counter() - start:.1f} s; "
          f"wrote {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
