"""Latent flow matching on the 8x8 digits: a small VAE, then a flow-matching
model trained in its latent space (`zoo.diffusion.LatentDiffusion`).

    KERAS_BACKEND=jax python examples/latent_diffusion_digits.py --out out/

Trains the VAE (8 latent dimensions), freezes it, trains flow matching on
its latents (scaled by 1 / their std, computed at the start of `fit`), and
prints the FID (digits classifier features, `zoo.metrics.fid`) against the
test split of: the VAE's reconstructions of the test digits (the floor its
decoder sets), 1,000 samples of the VAE from its N(0, I) prior, and 1,000
samples of the latent flow (Heun, 10 steps by default), with the training
times and the test-set bound in nats per image of both models (the latent
model's is the VAE's bound with the flow as its prior).
Writes `<out>/latent_diffusion_samples.png`. About two minutes on 2 CPU
cores with JAX. On PyTorch the script uses only the CPU cores other
processes leave idle unless `OMP_NUM_THREADS` is set
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

from zoo.core import backend_name  # noqa: E402
from zoo.core.threads import limit_torch_threads  # noqa: E402
from zoo.data import digits  # noqa: E402
from zoo.diffusion import LatentDiffusion  # noqa: E402
from zoo.images import save_image_grid  # noqa: E402
from zoo.metrics import fid  # noqa: E402
from zoo.vae import VAE  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vae-epochs", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=150,
                        help="epochs of the latent flow-matching model")
    parser.add_argument("--steps", type=int, default=10, help="sampler steps")
    parser.add_argument("--sampler", choices=("euler", "heun", "midpoint"), default="heun")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--out", default="out", help="directory for the PNG")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=0,
                        help="Keras's fit verbosity (default 0: silent)")
    args = parser.parse_args()
    if min(args.vae_epochs, args.epochs, args.steps, args.num_samples) < 1:
        parser.error("--vae-epochs, --epochs, --steps and --num-samples must be >= 1")
    limit_torch_threads()
    keras.utils.set_random_seed(args.seed)
    x_train, _ = digits("train")
    x_test, _ = digits("test")

    start = time.perf_counter()
    vae = VAE((8, 8, 1), latent_dim=8, num_levels=17, filters=16, kl_warmup_steps=500,
              seed=args.seed)
    vae.compile(optimizer=keras.optimizers.Adam(2e-3))
    vae.fit(x_train, batch_size=64, epochs=args.vae_epochs, verbose=args.verbose)
    vae_seconds = time.perf_counter() - start

    start = time.perf_counter()
    model = LatentDiffusion(vae, "flow_matching", hidden_units=256, num_blocks=3,
                            seed=args.seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x_train, batch_size=64, epochs=args.epochs, verbose=args.verbose)
    latent_seconds = time.perf_counter() - start

    n = args.num_samples
    vae_samples = vae.sample(n, seed=args.seed)
    start = time.perf_counter()
    samples = model.sample(n, steps=args.steps, sampler=args.sampler, seed=args.seed)
    sample_seconds = time.perf_counter() - start
    reconstructions = vae.reconstruct(x_test)
    vae_nll = -np.mean(vae.log_prob(x_test, num_importance_samples=1, seed=args.seed))
    latent_nll = -np.mean(model.log_prob(x_test, seed=args.seed, steps=32))

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "latent_diffusion_samples.png")
    save_image_grid(samples[:64], path)
    print(f"{backend_name()}: VAE {args.vae_epochs} epochs in {vae_seconds:.0f} s, latent "
          f"flow matching {args.epochs} epochs in {latent_seconds:.0f} s "
          f"(scaling_factor {model.scaling_factor:.3f}); {n} samples, {args.sampler} "
          f"{args.steps} steps, in {sample_seconds:.1f} s")
    print(f"FID against the test split: VAE reconstructions {fid(x_test, reconstructions):.2f}, "
          f"VAE prior samples {fid(x_test, vae_samples):.2f}, latent flow matching "
          f"{fid(x_test, samples):.2f}")
    print(f"test ELBO (one draw), nats/image: VAE {vae_nll:.2f}, with the latent flow "
          f"as prior {latent_nll:.2f}")
    print(f"wrote {os.path.abspath(path)}")


if __name__ == "__main__":
    main()
