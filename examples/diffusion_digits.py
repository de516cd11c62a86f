"""Train a DDPM on the 8x8 digits and write PNGs of samples and a trajectory.

    KERAS_BACKEND=jax python examples/diffusion_digits.py --epochs 60

Writes `<out>/diffusion_samples.png` (64 samples, DPM-Solver++ 20 steps) and
`<out>/diffusion_trajectory.png` (rows: 8 samples from noise to digits).
Keras prints one line per epoch (`--verbose 1`: the progress bar). On
PyTorch the script uses only the CPU cores other processes leave idle
unless `OMP_NUM_THREADS` is set (`zoo.core.threads.limit_torch_threads`;
see docs/cli.md).
"""

import argparse
import os
import sys
import time

# So that the example runs from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from zoo.core.threads import limit_torch_threads  # noqa: E402
from zoo.data import digits  # noqa: E402
from zoo.diffusion import DDPM  # noqa: E402
from zoo.images import save_image_grid  # noqa: E402


def train(epochs, seed=0, verbose=1):
    keras.utils.set_random_seed(seed)
    images, _ = digits("train")
    model = DDPM((8, 8, 1), channels=32, channel_multipliers=(1, 2), seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(images, batch_size=64, epochs=epochs, verbose=verbose)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--out", default="out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2,
                        help="Keras's fit verbosity: 2 one line per epoch (default), "
                        "1 a progress bar, 0 silent")
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    limit_torch_threads()
    start = time.perf_counter()
    model = train(args.epochs, args.seed, verbose=args.verbose)
    trained = time.perf_counter() - start
    samples = model.sample(64, steps=20, sampler="dpm++2m", seed=args.seed)
    _, trajectory = model.sample(8, steps=50, sampler="ddim", seed=args.seed,
                                 return_trajectory=True)
    os.makedirs(args.out, exist_ok=True)
    paths = [os.path.join(args.out, "diffusion_samples.png"),
             os.path.join(args.out, "diffusion_trajectory.png")]
    save_image_grid(samples, paths[0])
    # One row per sample, noise on the left, digits on the right.
    frames = np.transpose(np.clip(trajectory, -1, 1), (1, 0, 2, 3, 4))
    save_image_grid(frames.reshape((-1,) + frames.shape[2:]),
                    paths[1],
                    num_columns=trajectory.shape[0])
    print(f"{keras.backend.backend()}: trained {args.epochs} epochs in {trained:.0f}s; "
          f"wrote {', '.join(os.path.abspath(path) for path in paths)}")


if __name__ == "__main__":
    main()
