"""Flow matching against DDPM: samples per number of steps, FID per number
of function evaluations, and bits per dimension from the ODE.

    KERAS_BACKEND=jax python benchmarks/flow_matching.py
    KERAS_BACKEND=torch OMP_NUM_THREADS=1 python benchmarks/flow_matching.py --skip-digits

Toys (`--toys ring,grid`): a `FlowMatching` and a `DDPM` with the same
residual MLP (128 wide, 3 blocks, EMA) train on 32,768 points of the ring of
8 (std 0.1) or the 5x5 grid of 25 Gaussians (spacing 2, std 0.1, scaled by
1/2 for the models) for `--toy-epochs` epochs (batch 256, Adam 1e-3); each sampler then draws 2,500 points at 5,
10, 20 and 50 steps: modes covered (>= 20 points within 3 std) and the share
of points within 3 std of a mode. Heun and midpoint evaluate the velocity
twice per step, so "NFE" (function evaluations) is also printed.

Digits (`zoo.data.digits`, 8x8, 17 levels in [-1, 1]): a class-conditional
`FlowMatching` and a `DDPM` with the same U-Net (channels 32, multipliers
1, 2) train on the 1,437 training images for `--digits-epochs` epochs
(batch 64, Adam 1e-3). FID (`zoo.metrics.fid`, features of the shipped
digits classifier) of 1,000 samples (100 per class, no guidance) against
the 360 test images, at the same numbers of function evaluations for
flow matching's Euler, Heun and midpoint and DDPM's DDIM and DPM-Solver++.
Then `log_prob` of the test images by the probability-flow ODE (Hutchinson,
`--probes` Rademacher probes, `--ode-steps` Heun steps) under uniform
dequantization on the 17-level grid, as `benchmarks/flow_nll.py` scores the
flows: bits/dim = -(log p(x + u) + 64 log(2/16)) / (64 log 2), u uniform in
a bin, one draw per image; the unconditional density (the "no label"
token). `benchmarks/diffusion_digits.py` makes the same digits comparison
with models trained once (the `fm_digits` preset and a DDPM of the same
recipe) and sampled on every backend.
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

from zoo.data import Grid, Ring, digits  # noqa: E402
from zoo.diffusion import DDPM, FlowMatching  # noqa: E402
from zoo.metrics import fid  # noqa: E402

TOY_STEPS = (5, 10, 20, 50)
NFES = (10, 20, 50)
FLOW_SAMPLERS = ("euler", "heun", "midpoint")
DDPM_SAMPLERS = ("ddim", "dpm++2m")
TOYS = {"ring": lambda: Ring(std=0.1), "grid": lambda: Grid(std=0.1)}
# The models see the data times this (the grid's modes reach +-4: halved to
# about unit scale, as data are normalized for diffusion), and samples are
# scaled back before scoring.
SCALES = {"ring": 1.0, "grid": 0.5}


def toy_sweep(backend, name, epochs):
    density = TOYS[name]()
    scale = SCALES[name]
    data = density.sample(32768, seed=0) * scale
    rows = []
    for kind in ("flow", "ddpm"):
        cls = FlowMatching if kind == "flow" else DDPM
        model = cls((2,), hidden_units=128, seed=0)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        start = time.perf_counter()
        model.fit(data, batch_size=256, epochs=epochs, verbose=0)
        print(f"[{backend}] {name}: {cls.__name__} trained in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        for sampler in FLOW_SAMPLERS if kind == "flow" else DDPM_SAMPLERS:
            for steps in TOY_STEPS:
                samples = model.sample(2500, steps=steps, sampler=sampler, seed=1,
                                       verbose=False) / scale
                cov = density.mode_coverage(samples, min_count=20)
                nfe = steps * (2 if sampler in ("heun", "midpoint") else 1)
                rows.append((cls.__name__, sampler, steps, nfe, int(cov["modes_covered"]),
                             len(density.modes), float(cov["high_quality"])))
                print(json.dumps({"backend": backend, "data": name, "model": cls.__name__,
                                  "sampler": sampler, "steps": steps, "nfe": nfe,
                                  "modes": rows[-1][4], "high_quality": rows[-1][6]}),
                      flush=True)
    print(f"| backend | data | model | sampler | steps | NFE | modes | high quality |")
    print("|---|---|---|---|---|---|---|---|")
    for model, sampler, steps, nfe, modes, total, hq in rows:
        print(f"| {backend} | {name} | {model} | {sampler} | {steps} | {nfe} | "
              f"{modes}/{total} | {hq:.1%} |")


def bits_per_dim(model, test, steps, probes, seed=0):
    rng = np.random.default_rng(seed)
    bin_width = 2.0 / 16
    noisy = test + rng.uniform(-bin_width / 2, bin_width / 2, test.shape).astype("float32")
    log_p = model.log_prob(noisy, steps=steps, divergence="hutchinson", num_probes=probes,
                           seed=seed, batch_size=360)
    dims = test[0].size
    return float(-(np.mean(log_p) + dims * math.log(bin_width)) / (dims * math.log(2)))


def digits_sweep(backend, epochs, ode_steps, probes):
    images, labels = digits("train")
    test, _ = digits("test")
    print(f"[{backend}] digits: floor FID(train, test) = {fid(images, test):.2f}")
    class_labels = np.repeat(np.arange(10), 100).astype("int32")
    rows, bpd = [], {}
    for kind in ("flow", "ddpm"):
        cls = FlowMatching if kind == "flow" else DDPM
        model = cls((8, 8, 1), num_classes=10, channels=32, channel_multipliers=(1, 2), seed=0)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        start = time.perf_counter()
        model.fit(images, labels, batch_size=64, epochs=epochs, verbose=0)
        print(f"[{backend}] digits: {cls.__name__} trained in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        for sampler in FLOW_SAMPLERS if kind == "flow" else DDPM_SAMPLERS:
            for nfe in NFES:
                steps = nfe // 2 if sampler in ("heun", "midpoint") else nfe
                samples = model.sample(1000, steps=steps, sampler=sampler, labels=class_labels,
                                       seed=1, verbose=False)
                rows.append((cls.__name__, sampler, steps, nfe, fid(test, samples)))
                print(json.dumps({"backend": backend, "data": "digits", "model": cls.__name__,
                                  "sampler": sampler, "steps": steps, "nfe": nfe,
                                  "fid": round(rows[-1][-1], 3)}), flush=True)
        start = time.perf_counter()
        bpd[cls.__name__] = bits_per_dim(model, test, ode_steps, probes)
        print(json.dumps({"backend": backend, "model": cls.__name__, "bits_per_dim":
                          round(bpd[cls.__name__], 4), "ode_steps": ode_steps,
                          "probes": probes, "seconds": round(time.perf_counter() - start, 1)}),
              flush=True)
    print("| backend | data | model | sampler | steps | NFE | FID |")
    print("|---|---|---|---|---|---|---|")
    for model, sampler, steps, nfe, value in rows:
        print(f"| {backend} | digits | {model} | {sampler} | {steps} | {nfe} | {value:.2f} |")
    print()
    print("| backend | model | bits/dim (test, ODE, Hutchinson) |")
    print("|---|---|---|")
    for model, value in bpd.items():
        print(f"| {backend} | {model} | {value:.3f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toys", default="ring,grid", help="comma-separated: ring, grid")
    parser.add_argument("--toy-epochs", type=int, default=10)
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument("--digits-epochs", type=int, default=30)
    parser.add_argument("--ode-steps", type=int, default=32)
    parser.add_argument("--probes", type=int, default=1)
    _markdown.add_argument(parser)
    args = parser.parse_args()
    toys = [t.strip() for t in args.toys.split(",") if t.strip()]
    if any(t not in TOYS for t in toys):
        parser.error(f"--toys takes a subset of {','.join(TOYS)}; got {args.toys!r}")
    backend = keras.backend.backend()
    keras.utils.set_random_seed(0)
    for name in toys:
        toy_sweep(backend, name, args.toy_epochs)
    if not args.skip_digits:
        digits_sweep(backend, args.digits_epochs, args.ode_steps, args.probes)


if __name__ == "__main__":
    with _markdown.capture_argv("Flow matching against DDPM"):
        main()
