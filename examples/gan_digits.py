"""Train a GAN on the 8x8 digits and save a grid of samples as a PNG.

The digits ship with scikit-learn, so nothing is downloaded. Default
networks (DCGAN-style, built from the data shape) and a bare `compile()`;
about a minute on two CPU cores. Run from the repository root, with any
backend:

    KERAS_BACKEND=jax python examples/gan_digits.py
    KERAS_BACKEND=torch python examples/gan_digits.py --conditional

`--conditional` trains a `ConditionalGAN` on (image, label) pairs instead and
draws one row per digit, 0 to 9.
"""

import argparse
import time

import keras
import numpy as np

from zoo.data import digits
from zoo.gan import GAN, ConditionalGAN
from zoo.images import save_image_grid


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--conditional", action="store_true",
                        help="train a ConditionalGAN; one row of samples per digit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/gan_digits.png")
    args = parser.parse_args()

    images, labels = digits("all")
    if args.conditional:
        model = ConditionalGAN(data_shape=images.shape[1:], num_classes=10, seed=args.seed)
        data = (images, labels)
    else:
        model = GAN(data_shape=images.shape[1:], seed=args.seed)
        data = (images, None)
    model.compile()

    start = time.perf_counter()
    model.fit(*data, batch_size=args.batch_size, epochs=args.epochs, verbose=0)
    seconds = time.perf_counter() - start

    if args.conditional:
        samples = model.sample(100, seed=args.seed, labels=np.repeat(np.arange(10), 10))
    else:
        samples = model.sample(100, seed=args.seed)
    path = save_image_grid(samples, args.out, num_columns=10, scale=4)
    print(
        f"{type(model).__name__} on {keras.backend.backend()}: {args.epochs} epochs "
        f"in {seconds:.1f} s; samples written to {path}"
    )


if __name__ == "__main__":
    main()
