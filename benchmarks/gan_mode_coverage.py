"""Mode coverage of the GAN family on the ring of 8 and the 5x5 grid.

The benchmark of VEEGAN (Srivastava et al., 2017) and PacGAN (Lin et al.,
2018): 2-D mixtures of Gaussians with std 0.02, modes 2 apart; 2,500
samples from the trained generator; a sample is *high quality* within 3 std
of its nearest mode; a mode counts as covered with at least 20 high-quality
samples (PacGAN's rule; VEEGAN's rule, at least 1, is reported beside it).
The models run with their default settings: `GAN(data_shape=(2,))` (or
`WGANGP`) and a bare `compile()`; only the batch size and the number of
steps are the benchmark's.

Run from the repository root, once per backend:

    KERAS_BACKEND=jax python benchmarks/gan_mode_coverage.py
    KERAS_BACKEND=tensorflow python benchmarks/gan_mode_coverage.py
    KERAS_BACKEND=torch python benchmarks/gan_mode_coverage.py

Prints one line per data set and, with `--out`, writes a scatter plot of
data and samples per data set.
"""

import argparse
import json
import os
import time

import _markdown

import keras
import numpy as np

from zoo.data import Grid, Ring, mode_coverage
from zoo.gan import GAN, WGANGP

# The literature's settings: VEEGAN's ring (radius 2, std 0.02) and the
# grid of VEEGAN and PacGAN (spacing 2, std 0.05; PacGAN's config.py).
# "grid_0.02" is the same grid with zoo.data's default std, a harder case.
DENSITIES = {
    "ring": lambda: Ring(std=0.02),
    "grid": lambda: Grid(std=0.05),
    "grid_0.02": lambda: Grid(std=0.02),
}
MODELS = {"gan": GAN, "wgan_gp": WGANGP}
NUM_SAMPLES = 2500


def _mode_std(points, density):
    """Per-coordinate RMS distance of the high-quality points to their mode."""
    distance = np.min(
        np.linalg.norm(points[:, None, :] - density.modes[None], axis=-1), axis=1
    )
    good = distance <= 3 * density.std
    return round(float(np.sqrt(np.mean(distance[good] ** 2) / 2)), 4)


def run(dataset, model_name, steps, batch_size, seed, num_data, out=None):
    density = DENSITIES[dataset]()
    data = density.sample(num_data, seed=seed)
    model = MODELS[model_name](data_shape=(2,), seed=seed)
    model.compile()
    steps_per_epoch = num_data // batch_size
    epochs = max(1, round(steps / steps_per_epoch))
    start = time.perf_counter()
    model.fit(data, batch_size=batch_size, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    samples = model.sample(NUM_SAMPLES, seed=seed)
    pacgan = mode_coverage(samples, density.modes, density.std, min_count=20)
    veegan = mode_coverage(samples, density.modes, density.std, min_count=1)
    result = {
        "backend": keras.backend.backend(),
        "dataset": dataset,
        "model": model_name,
        "modes": pacgan["modes_covered"],
        "modes_min1": veegan["modes_covered"],
        "num_modes": pacgan["num_modes"],
        "high_quality": round(pacgan["high_quality"], 4),
        "reverse_kl": round(pacgan["reverse_kl"], 4),
        # Spread of the good samples around their modes, against the same
        # figure for data: smaller means modes collapsed towards centres.
        "mode_std": _mode_std(samples, density),
        "data_mode_std": _mode_std(data[:NUM_SAMPLES], density),
        "steps": epochs * steps_per_epoch,
        "batch_size": batch_size,
        "train_seconds": round(seconds, 1),
    }
    if out:
        from zoo.images import save_scatter

        root, ext = os.path.splitext(out)
        save_scatter(
            {f"{dataset}: data": data[:NUM_SAMPLES], f"{model_name}: samples": samples},
            f"{root}_{dataset}_{result['backend']}{ext or '.png'}",
            limits=(-5.0, 5.0) if dataset == "grid" else (-2.6, 2.6),
        )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=[*DENSITIES, "both"], default="both",
                        help="both: ring and grid")
    parser.add_argument("--model", choices=list(MODELS), default="gan")
    parser.add_argument("--steps", type=int, default=12000,
                        help="training steps (batches), rounded to whole epochs")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--num-data", type=int, default=102_400,
                        help="training points drawn from the density")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None,
                        help="scatter plot path, e.g. out/gan_modes.png")
    _markdown.add_argument(parser)
    args = parser.parse_args()
    datasets = ["ring", "grid"] if args.dataset == "both" else [args.dataset]
    results = []
    for dataset in datasets:
        result = run(dataset, args.model, args.steps, args.batch_size, args.seed,
                     args.num_data, args.out)
        print(json.dumps(result), flush=True)
        results.append(result)
    print("\n| backend | data | model | modes (>= 20 good samples) | high quality "
          "| reverse KL | good samples' spread / data's | training s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['backend']} | {r['dataset']} | {r['model']} | {r['modes']}/{r['num_modes']} "
              f"| {r['high_quality']:.1%} | {r['reverse_kl']} "
              f"| {r['mode_std']} / {r['data_mode_std']} | {r['train_seconds']} |")


if __name__ == "__main__":
    with _markdown.capture_argv('GAN mode coverage'):
        main()
