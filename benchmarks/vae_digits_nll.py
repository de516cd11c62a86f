"""Test-set likelihood bounds of the VAE family on the sklearn digits.

Trains `VAE`, `ConditionalVAE` and `VQVAE` on the 1437 training digits and
measures, on the 360 test digits:

- NLL: minus the importance-weighted bound (Burda et al., 2016) with
  `--k` importance samples (1000 by default), averaged over the test images,
  in nats per image and in bits per dim (nats / (64 ln 2)). A bound: the
  true NLL is at most this.
- -ELBO: minus the evidence lower bound (`--elbo-samples` draws per image).
- The two parts of -ELBO: the reconstruction term E_q[-log p(x|z)] and
  the KL term KL(q(z|x) || p(z)) (VQ-VAE: -log p(x|z_q) and the price of
  the codes under the prior, -log prior(z_q)).
- Reconstruction error: mean squared error per pixel between a test image
  and the decoder's mean at its posterior mean (VQ-VAE: at its codes), in
  the [-1, 1] units the models see (one intensity level is 0.125).
- VQ-VAE: codebook usage (fraction of codes used by the test images) and
  perplexity (effective number of codes).

What the likelihood is of: the digits take 17 intensity levels (0..16,
mapped to x / 8 - 1), and every model here uses a *discretized* Gaussian
decoder over those 17 bins (`num_levels=17`), so p(x) is a probability
mass and -log p(x) an honest code length for the discrete images. For
scale: a uniform distribution over the levels costs 64 ln 17 = 181.3 nats
(4.09 bits/dim); the script also reports independent per-pixel histograms
fitted on the training set. The ConditionalVAE's figure is -log p(x | y),
which also knows the label. The VQ-VAE's generative model is the
factorized code prior fitted during training times p(x | z); its posterior
is a single code grid, so its importance-weighted bound is its ELBO.

Usage:

    KERAS_BACKEND=jax python benchmarks/vae_digits_nll.py [--epochs 60] \\
        [--k 1000] [--models vae,cvae,vqvae] [--json out/vae_digits.json]
"""

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _markdown  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from zoo.core import backend_name  # noqa: E402
from zoo.data import digits  # noqa: E402
from zoo.vae import VAE, VQVAE, ConditionalVAE  # noqa: E402

NUM_DIMS = 64
LEVELS = 17


def bits_per_dim(nats):
    return nats / (NUM_DIMS * math.log(2.0))


def histogram_baseline(train, test):
    """NLL of independent per-pixel categoricals over the 17 levels, fitted
    on the training images with add-one smoothing: a floor any latent
    variable model should beat."""
    levels = lambda x: np.rint((x.reshape(len(x), -1) + 1.0) * 8).astype(int)  # noqa: E731
    train, test = levels(train), levels(test)
    counts = np.stack([(train == v).sum(0) for v in range(LEVELS)], axis=1) + 1.0
    log_p = np.log(counts / counts.sum(axis=1, keepdims=True))
    return -log_p[np.arange(NUM_DIMS)[None], test].sum(axis=1).mean()


def build(name, seed):
    common = {"num_levels": LEVELS, "filters": 16, "hidden_units": (256,), "seed": seed}
    if name == "vae":
        return VAE((8, 8, 1), 8, kl_warmup_steps=1000, **common)
    if name == "cvae":
        return ConditionalVAE((8, 8, 1), 10, 8, kl_warmup_steps=1000, **common)
    if name == "vqvae":
        return VQVAE((8, 8, 1), 64, 8, ema_decay=0.95, **common)
    raise ValueError(f"unknown model {name!r}")


def evaluate(name, model, x, y, k, elbo_samples, seed):
    started = time.time()
    if name == "vqvae":
        log_p = model.log_prob(x, k)
        elbo = model.elbo(x)
        recon = model.reconstruct(x)
        usage = model.codebook_usage(x)
        # -ELBO = -log p(x|z_q) + (-log prior(z_q)): the codes' price.
        prior_term = -model.log_prior(model.encode(x))
        extra = {"usage": usage["usage"], "perplexity": usage["perplexity"]}
    else:
        labels = (y,) if name == "cvae" else ()
        log_p = model.log_prob(x, *labels, num_importance_samples=k, seed=seed)
        elbo = model.elbo(x, *labels, num_samples=elbo_samples, seed=seed + 1)
        recon = model.reconstruct(x, *labels)
        # -ELBO = E_q[-log p(x|z)] + KL(q(z|x) || p(z)).
        prior_term = np.asarray(model.kl_divergence(*model.encode(x, *labels)))
        extra = {}
    prior_term = float(np.mean(prior_term))
    extra.update(
        prior_term_nats=prior_term,
        reconstruction_term_nats=-float(np.mean(elbo)) - prior_term,
    )
    nll = -float(np.mean(log_p))
    return {
        "nll_nats": nll,
        "nll_bits_per_dim": bits_per_dim(nll),
        "nll_stderr_nats": float(np.std(log_p) / np.sqrt(len(x))),
        "neg_elbo_nats": -float(np.mean(elbo)),
        "neg_elbo_bits_per_dim": bits_per_dim(-float(np.mean(elbo))),
        "recon_mse": float(np.mean((recon - x) ** 2)),
        "eval_seconds": time.time() - started,
        **extra,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vae,cvae,vqvae")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--k", type=int, default=1000, help="importance samples")
    parser.add_argument("--elbo-samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results here")
    _markdown.add_argument(parser)
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    x_train, y_train = digits("train")
    x_test, y_test = digits("test")
    baseline = histogram_baseline(x_train, x_test)
    backend = backend_name()
    print(f"backend {backend}, keras {keras.__version__}; test images {len(x_test)}")
    print(f"uniform over 17 levels: {NUM_DIMS * math.log(LEVELS):.1f} nats "
          f"({math.log2(LEVELS):.3f} bits/dim); per-pixel histograms: "
          f"{baseline:.1f} nats ({bits_per_dim(baseline):.3f} bits/dim)")
    results = []
    for name in args.models.split(","):
        model = build(name, args.seed)
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
        started = time.time()
        data = (x_train, y_train) if name == "cvae" else (x_train,)
        history = model.fit(
            *data, batch_size=args.batch_size, epochs=args.epochs, verbose=0
        )
        train_seconds = time.time() - started
        row = {
            "model": name,
            "backend": backend,
            "epochs": args.epochs,
            "k": args.k,
            "train_seconds": train_seconds,
            "final_train_loss": float(history.history["loss"][-1]),
            **evaluate(name, model, x_test, y_test, args.k, args.elbo_samples, args.seed),
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    print()
    print("| backend | model | NLL nats (k=%d) | bits/dim | -ELBO nats | bits/dim "
          "| = recon + KL/prior nats | recon MSE | VQ usage / perplexity "
          "| train s | eval s |" % args.k)
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        vq = f"{r['usage']:.2f} / {r['perplexity']:.1f}" if "usage" in r else ""
        print(f"| {r['backend']} | {r['model']} | {r['nll_nats']:.2f} ± {r['nll_stderr_nats']:.2f} "
              f"| {r['nll_bits_per_dim']:.3f} | {r['neg_elbo_nats']:.2f} "
              f"| {r['neg_elbo_bits_per_dim']:.3f} "
              f"| {r['reconstruction_term_nats']:.1f} + {r['prior_term_nats']:.1f} "
              f"| {r['recon_mse']:.4f} | {vq} "
              f"| {r['train_seconds']:.0f} | {r['eval_seconds']:.0f} |")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"histogram_baseline_nats": baseline, "results": results}, f, indent=1)


if __name__ == "__main__":
    with _markdown.capture_argv('VAEs: likelihood of the test digits'):
        main()
