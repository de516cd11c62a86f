"""Train a VAE (or a conditional VAE, or a VQ-VAE) on the 8x8 sklearn digits.

Writes PNG grids to `--out`: test digits over their reconstructions,
samples from the prior, and (VAE, ConditionalVAE) a walk through latent
space between pairs of test digits. Prints the training time and the
test-set negative log-likelihood bound (nats per image, bits per dim) of
the discretized likelihood over the digits' 17 intensity levels.

    KERAS_BACKEND=jax python examples/vae_digits.py --out out/
    KERAS_BACKEND=torch python examples/vae_digits.py --model cvae

About a minute on 2 CPU cores with the defaults; Keras prints one line per
epoch (`--verbose 1`: the progress bar). On PyTorch the script uses only the
CPU cores other processes leave idle unless `OMP_NUM_THREADS` is set
(`zoo.core.threads.limit_torch_threads`; see docs/cli.md).
"""

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from zoo.core import backend_name  # noqa: E402
from zoo.core.threads import limit_torch_threads  # noqa: E402
from zoo.data import digits  # noqa: E402
from zoo.images import save_image_grid  # noqa: E402
from zoo.vae import VAE, VQVAE, ConditionalVAE  # noqa: E402


def build(name, seed):
    common = {"num_levels": 17, "filters": 16, "hidden_units": (256,), "seed": seed}
    if name == "vae":
        return VAE((8, 8, 1), 8, kl_warmup_steps=500, **common)
    if name == "cvae":
        return ConditionalVAE((8, 8, 1), 10, 8, kl_warmup_steps=500, **common)
    return VQVAE((8, 8, 1), 64, 8, ema_decay=0.95, **common)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("vae", "cvae", "vqvae"), default="vae")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--k", type=int, default=100,
                        help="importance samples for the test-set bound")
    parser.add_argument("--out", default="out/", help="directory for the PNGs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2,
                        help="Keras's fit verbosity: 2 one line per epoch (default), "
                        "1 a progress bar, 0 silent")
    args = parser.parse_args()
    if args.epochs < 1 or args.batch_size < 1 or args.k < 1:
        parser.error("--epochs, --batch-size and --k must be >= 1")
    limit_torch_threads()

    keras.utils.set_random_seed(args.seed)
    x_train, y_train = digits("train")
    x_test, y_test = digits("test")
    conditional = args.model == "cvae"
    labels = (y_test,) if conditional else ()

    model = build(args.model, args.seed)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    started = time.time()
    data = (x_train, y_train) if conditional else (x_train,)
    history = model.fit(*data, batch_size=args.batch_size, epochs=args.epochs,
                        verbose=args.verbose)
    train_seconds = time.time() - started
    print(f"{backend_name()}: trained {type(model).__name__} for "
          f"{args.epochs} epochs in {train_seconds:.1f} s; last loss "
          f"{history.history['loss'][-1]:.2f} nats/image")

    log_p = model.log_prob(x_test, *labels, num_importance_samples=args.k, seed=args.seed)
    nll = -float(np.mean(log_p))
    print(f"test NLL bound (k={args.k}): {nll:.2f} nats/image, "
          f"{nll / (64 * math.log(2)):.3f} bits/dim")

    os.makedirs(args.out, exist_ok=True)
    prefix = os.path.join(args.out, args.model)
    # Originals on odd rows, reconstructions on the rows below them.
    originals = x_test[:32]
    recon = model.reconstruct(originals, *((y_test[:32],) if conditional else ()))
    pairs = np.concatenate(
        [np.stack([originals[i:i + 8], recon[i:i + 8]]) for i in range(0, 32, 8)]
    ).reshape(-1, 8, 8, 1)
    paths = [save_image_grid(pairs, f"{prefix}_reconstructions.png", num_columns=8, scale=6)]
    if conditional:
        # One row per class.
        samples = model.sample(100, seed=args.seed, labels=np.repeat(np.arange(10), 10))
        paths.append(save_image_grid(samples, f"{prefix}_samples.png", num_columns=10, scale=6))
    else:
        samples = model.sample(64, seed=args.seed)
        paths.append(save_image_grid(samples, f"{prefix}_samples.png", num_columns=8, scale=6))
    if args.model != "vqvae":
        # Straight lines between the posterior means of pairs of test digits.
        start, end = x_test[0:8], x_test[8:16]
        if conditional:
            z0 = model.encode(start, y_test[0:8])[0]
            z1 = model.encode(end, y_test[8:16])[0]
        else:
            z0, z1 = model.encode(start)[0], model.encode(end)[0]
        steps = np.linspace(0.0, 1.0, 10)[None, :, None]
        z = ((1 - steps) * z0[:, None] + steps * z1[:, None]).reshape(-1, z0.shape[1])
        if conditional:
            # The label switches halfway along each row.
            row_labels = np.where(np.arange(10) < 5, y_test[0:8, None], y_test[8:16, None])
            walk = model.decode(z, row_labels.reshape(-1))
        else:
            walk = model.decode(z)
        paths.append(save_image_grid(walk, f"{prefix}_interpolation.png", num_columns=10, scale=6))
    print(f"total {time.time() - started:.1f} s; wrote "
          f"{', '.join(os.path.abspath(path) for path in paths)}")


if __name__ == "__main__":
    main()
