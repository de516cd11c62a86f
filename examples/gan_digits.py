"""Train a class-conditional GAN on the 8x8 digits; save a PNG grid of samples.

The digits ship with scikit-learn, so nothing is downloaded. The networks are
the defaults built from the data shape (DCGAN-style, a projection
discriminator), at half DCGAN's width; about a minute and a half on two CPU
cores. Run from the repository root, with any backend:

    KERAS_BACKEND=jax python examples/gan_digits.py
    KERAS_BACKEND=torch python examples/gan_digits.py --unconditional

The grid has one row per digit, 0 to 9 (`--unconditional`: a plain `GAN`,
samples in no order). The script prints the training time and the digits FID
of 1,000 samples (features of zoo.metrics' digits classifier; the test split
against the training split scores about 2.7). Keras prints one line per epoch
(`--verbose 1`: the progress bar). On PyTorch the script uses only the CPU
cores other processes leave idle unless `OMP_NUM_THREADS` is set
(`zoo.core.threads.limit_torch_threads`; see docs/cli.md).
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
from zoo.gan import GAN, ConditionalGAN  # noqa: E402
from zoo.images import save_image_grid  # noqa: E402
from zoo.metrics import fid  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2,
                        help="Keras's fit verbosity: 2 one line per epoch (default), "
                        "1 a progress bar, 0 silent")
    parser.add_argument("--unconditional", action="store_true",
                        help="train a plain GAN instead of a ConditionalGAN")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/gan_digits.png")
    parser.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"],
                        help="compile(jit_compile=...); on PyTorch, auto runs this "
                        "fit's 1,160 steps with the traced step, false eagerly")
    args = parser.parse_args()
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be >= 1")
    limit_torch_threads()

    images, labels = digits("all")
    if args.unconditional:
        model = GAN(data_shape=images.shape[1:], filters=32, seed=args.seed)
        data = (images, None)
    else:
        model = ConditionalGAN(data_shape=images.shape[1:], num_classes=10,
                               filters=32, seed=args.seed)
        data = (images, labels)
    # DCGAN's Adam(2e-4, beta_1=0.5), the default for images, needs several
    # times longer on this small set: after 40 epochs its digits FID is
    # about 6.5 where this larger step reaches about 3.
    model.compile(optimizer={
        player: keras.optimizers.Adam(1e-3, beta_1=0.0, beta_2=0.9)
        for player in ("generator", "discriminator")
    }, jit_compile={"auto": "auto", "true": True, "false": False}[args.jit_compile])

    start = time.perf_counter()
    model.fit(*data, batch_size=args.batch_size, epochs=args.epochs,
              verbose=args.verbose)
    seconds = time.perf_counter() - start

    if args.unconditional:
        samples = model.sample(1000, seed=args.seed)
    else:
        # Row r of the 10 x 10 grid is digit r.
        samples = model.sample(1000, seed=args.seed, labels=np.arange(1000) // 10 % 10)
    path = save_image_grid(samples[:100], args.out, num_columns=10, scale=4)
    print(
        f"{type(model).__name__} on {keras.backend.backend()}: {args.epochs} "
        f"epochs in {seconds:.1f} s, digits FID {fid(images, samples):.2f}; "
        f"wrote {os.path.abspath(path)}"
    )


if __name__ == "__main__":
    main()
