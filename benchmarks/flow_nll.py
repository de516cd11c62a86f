"""Likelihoods of the flow family: toy densities against their true entropy,
and bits per dimension on the digits.

Toy densities (`zoo.data`): two moons (noise 0.1) and the ring of 8
(std 0.02). The models train on 102,400 points drawn from the density and
are scored on 20,000 fresh ones. The held-out negative log-likelihood (nats)
minus the density's true entropy is the KL divergence from the data to the
model, >= 0 up to Monte Carlo error: the physical limit is a gap of 0 (goal:
<= 0.05 nats). The script prints the gap with its standard error (the
standard error of the test NLL, about 0.007 nats; the entropy adds ~0.002).

Digits (`zoo.data.digits`, 17 levels mapped to [-1, 1]): `RealNVP` and
`Glow` train on the 1,437 training images and report bits per dimension of
the 360 test images: the uniform-dequantization bound on -log2 P(x) / 64 of
the discrete images on their 17-level grid, including every change of
variables from the grid to the latent (see `zoo.flow.FlowModel`), averaged
over 4 noise draws per image. A uniform distribution over the 17 levels
scores log2(17) = 4.09 bits/dim.

Run from the repository root, once per backend:

    KERAS_BACKEND=jax python benchmarks/flow_nll.py
    KERAS_BACKEND=tensorflow python benchmarks/flow_nll.py
    KERAS_BACKEND=torch python benchmarks/flow_nll.py

Prints one JSON line per run and a Markdown table at the end; `--runs`
picks a subset, e.g. `--runs nsf:moons,glow:digits`.
"""

import argparse
import json
import math
import os
import sys
import time

# So that the script runs from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _markdown  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from zoo.data import digits, toy_density  # noqa: E402
from zoo.flow import Glow, NeuralSplineFlow, RealNVP  # noqa: E402

TOY_MODELS = {
    "nsf": lambda seed: NeuralSplineFlow((2,), num_couplings=4, num_bins=16,
                                         hidden_units=(64, 64), seed=seed),
    "realnvp": lambda seed: RealNVP((2,), num_couplings=8, hidden_units=(64, 64),
                                    seed=seed),
    "glow": lambda seed: Glow((2,), steps_per_scale=8, hidden_units=(64, 64), seed=seed),
}
IMAGE_MODELS = {
    "realnvp": lambda seed: RealNVP((8, 8, 1), num_levels=17, num_scales=2,
                                    couplings_per_scale=3, filters=64, seed=seed),
    "glow": lambda seed: Glow((8, 8, 1), num_levels=17, num_scales=2,
                              steps_per_scale=6, filters=64, seed=seed),
}
DEFAULT_RUNS = (
    "nsf:moons,nsf:ring,realnvp:moons,realnvp:ring,realnvp:digits,glow:digits"
)


def adam(learning_rate, steps):
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.01)
    return keras.optimizers.Adam(schedule)


def run_toy(model_name, dataset, steps, batch_size, seed):
    density = toy_density(dataset)
    epochs = 10
    train = density.sample(steps * batch_size // epochs, seed=seed)
    test = density.sample(20_000, seed=seed + 1)
    model = TOY_MODELS[model_name](seed)
    model.compile(optimizer=adam(3e-3, steps))
    start = time.perf_counter()
    model.fit(train, batch_size=batch_size, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    nll = -model.log_prob(test).astype(np.float64)
    entropy = density.entropy_estimate()
    return {
        "model": model_name,
        "dataset": dataset,
        "test_nll": round(nll.mean(), 4),
        "entropy": round(entropy.value, 4),
        "gap": round(nll.mean() - entropy.value, 4),
        "gap_stderr": round(math.hypot(nll.std() / math.sqrt(len(nll)), entropy.stderr), 4),
        "train_nll": round(float(model.evaluate(train[:20_000], batch_size=4096,
                                                verbose=0)), 4),
        "steps": steps,
        "train_seconds": round(seconds, 1),
    }


def run_digits(model_name, epochs, batch_size, seed):
    train, _ = digits("train")
    test, _ = digits("test")
    model = IMAGE_MODELS[model_name](seed)
    steps = epochs * math.ceil(len(train) / batch_size)
    model.compile(optimizer=adam(1e-3, steps))
    start = time.perf_counter()
    model.fit(train, batch_size=batch_size, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    return {
        "model": model_name,
        "dataset": "digits",
        "test_bits_per_dim": round(model.bits_per_dim(test, seed=seed, num_samples=4).mean(), 4),
        "train_bits_per_dim": round(
            model.bits_per_dim(train, seed=seed, num_samples=1).mean(), 4),
        "steps": steps,
        "train_seconds": round(seconds, 1),
    }


def table(results, backend):
    lines = [
        f"| backend | model | data | test NLL (nats) | true entropy | gap | "
        "test bits/dim | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["dataset"] == "digits":
            cells = ["", "", "", f"{r['test_bits_per_dim']:.3f}"]
        else:
            cells = [f"{r['test_nll']:.3f}", f"{r['entropy']:.3f}",
                     f"{r['gap']:.3f} ± {r['gap_stderr']:.3f}", ""]
        lines.append(f"| {backend} | {r['model']} | {r['dataset']} | "
                     + " | ".join(cells) + f" | {r['train_seconds']:.0f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default=DEFAULT_RUNS,
                        help="comma-separated model:data pairs; models "
                             f"{sorted(TOY_MODELS)} on moons/ring, "
                             f"{sorted(IMAGE_MODELS)} on digits")
    parser.add_argument("--toy-steps", type=int, default=3000)
    parser.add_argument("--toy-batch-size", type=int, default=512)
    parser.add_argument("--digits-epochs", type=int, default=40)
    parser.add_argument("--digits-batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    _markdown.add_argument(parser)
    args = parser.parse_args()

    backend = keras.backend.backend()
    results = []
    start = time.perf_counter()
    for item in args.runs.split(","):
        model_name, _, dataset = item.strip().partition(":")
        if dataset == "digits":
            if model_name not in IMAGE_MODELS:
                parser.error(f"no image model {model_name!r}; use {sorted(IMAGE_MODELS)}")
            result = run_digits(model_name, args.digits_epochs, args.digits_batch_size,
                                args.seed)
        elif dataset in ("moons", "ring"):
            if model_name not in TOY_MODELS:
                parser.error(f"no vector model {model_name!r}; use {sorted(TOY_MODELS)}")
            result = run_toy(model_name, dataset, args.toy_steps, args.toy_batch_size,
                             args.seed)
        else:
            parser.error(f"unknown data {dataset!r} in {item!r}; use moons, ring, digits")
        result["backend"] = backend
        results.append(result)
        print(json.dumps(result), flush=True)
    print()
    print(table(results, backend))
    print(f"\nwall time {time.perf_counter() - start:.0f} s "
          f"(keras {keras.__version__}, backend {backend})")


if __name__ == "__main__":
    with _markdown.capture_argv('Flows: likelihood against the true entropy'):
        main()
