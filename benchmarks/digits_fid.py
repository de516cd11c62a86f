"""Digits FID of each image family's samples, beside the FID floor and noise.

Every model trains on the 1,437 training images only; 1,000 samples are
scored against the 360 test images in the features of the shipped digits
classifier (`zoo.metrics.fid(features="digits")`). The same comparison of the
training split against the test split is the floor (about 2.7): real images
that the model has not seen. Uniform noise scores about 155.

    KERAS_BACKEND=tensorflow python benchmarks/digits_fid.py
    KERAS_BACKEND=jax python benchmarks/digits_fid.py --families gan,vae

Prints one JSON line per family and a Markdown table. The settings are the
families' examples' (`examples/*_digits.py`), trained on the training split:

- gan: `ConditionalGAN`, 32 filters, Adam(1e-3, 0.0, 0.9), 40 epochs,
  samples with balanced labels;
- vae: `VAE`, latent 8, discretized likelihood on 17 levels, 30 epochs,
  samples are decoder means;
- flow: `Glow`, 2 scales of 6 steps, 40 epochs, temperature 1;
- diffusion: `DDPM` U-Net (32 channels, multipliers 1, 2), 30 epochs,
  DDIM with 50 steps from the EMA weights.
"""

import argparse
import json
import os
import sys
import time

# So that the script runs from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _markdown  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from zoo.data import digits  # noqa: E402
from zoo.metrics import fid  # noqa: E402

NUM_SAMPLES = 1000


def gan(images, labels, seed):
    from zoo.gan import ConditionalGAN

    model = ConditionalGAN((8, 8, 1), num_classes=10, filters=32, seed=seed)
    model.compile(optimizer={
        player: keras.optimizers.Adam(1e-3, beta_1=0.0, beta_2=0.9)
        for player in ("generator", "discriminator")
    })
    model.fit(images, labels, batch_size=64, epochs=40, verbose=0)
    return lambda: model.sample(NUM_SAMPLES, seed=seed, labels=np.arange(NUM_SAMPLES) % 10)


def vae(images, labels, seed):
    from zoo.vae import VAE

    model = VAE((8, 8, 1), 8, num_levels=17, filters=16, hidden_units=(256,),
                kl_warmup_steps=500, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    model.fit(images, batch_size=64, epochs=30, verbose=0)
    return lambda: model.sample(NUM_SAMPLES, seed=seed)


def flow(images, labels, seed):
    from zoo.flow import Glow

    model = Glow((8, 8, 1), num_levels=17, num_scales=2, steps_per_scale=6,
                 filters=64, seed=seed)
    steps = 40 * -(-len(images) // 64)
    model.compile(optimizer=keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(1e-3, steps, alpha=0.01)))
    model.fit(images, batch_size=64, epochs=40, verbose=0)
    return lambda: model.sample(NUM_SAMPLES, seed=seed)


def diffusion(images, labels, seed):
    from zoo.diffusion import DDPM

    model = DDPM((8, 8, 1), channels=32, channel_multipliers=(1, 2), seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(images, batch_size=64, epochs=30, verbose=0)
    return lambda: model.sample(NUM_SAMPLES, steps=50, sampler="ddim", seed=seed,
                                verbose=False)


FAMILIES = {"gan": gan, "vae": vae, "flow": flow, "diffusion": diffusion}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help=f"comma-separated subset of {','.join(FAMILIES)}")
    parser.add_argument("--seed", type=int, default=0)
    _markdown.add_argument(parser)
    args = parser.parse_args()
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        parser.error(f"--families takes a subset of {','.join(FAMILIES)}; "
                     f"got {args.families!r}")

    backend = keras.backend.backend()
    train, train_labels = digits("train")
    test, _ = digits("test")
    rows = [("floor: train split", fid(test, train), None),
            ("uniform noise", fid(test, np.random.default_rng(args.seed).uniform(
                -1, 1, (NUM_SAMPLES,) + test.shape[1:]).astype("float32")), None)]
    for family in families:
        keras.utils.set_random_seed(args.seed)
        start = time.perf_counter()
        sample = FAMILIES[family](train, train_labels, args.seed)
        seconds = time.perf_counter() - start
        score = fid(test, np.clip(sample(), -1.0, 1.0))
        print(json.dumps({"backend": backend, "family": family, "fid": round(score, 2),
                          "train_seconds": round(seconds, 1)}), flush=True)
        rows.append((family, score, seconds))

    print(f"\n| {backend} | digits FID vs test split | training s |")
    print("|---|---|---|")
    for name, score, seconds in rows:
        print(f"| {name} | {score:.2f} | {'' if seconds is None else f'{seconds:.0f}'} |")


if __name__ == "__main__":
    with _markdown.capture_argv('Digits FID of every image family'):
        main()
