"""Sampler quality against steps: ring of 8 mode coverage and digits FID.

    KERAS_BACKEND=jax python benchmarks/diffusion_samplers.py [--quick]
    KERAS_BACKEND=torch python benchmarks/diffusion_samplers.py --steps 10,20,50,100

Flags pick a subset: `--samplers ddim,dpm++2m`, `--steps 10,20`, `--skip-ring`.
`--jit-compile true|false|auto` is passed to `sample`; `--timing-only` skips
training and quality (speed does not depend on the weights) and prints the
first call's time (compilation included) and the steady seconds per step of
the digits model (after warm-up calls until "auto" traces on PyTorch),
`--batch` samples per call (default 1,000), for each `--jit-compile`
setting given (comma-separated).

Trains one DDPM on the ring of 8 (std 0.1) and one on the digits, then for
each sampler and step count reports: on the ring, modes covered (of 8) and
the share of samples within 3 std of a mode, out of 2,500; on the digits,
the Fréchet distance of 1,000 samples to the test split in the features of
the shipped digits classifier (`zoo.metrics.fid`), and seconds per step.
"""

import argparse
import time

import _markdown

import keras
import numpy as np

from zoo.core import LONG_LOOP
from zoo.data import Ring, digits
from zoo.diffusion import DDPM
from zoo.metrics import fid

STEPS = (10, 20, 50, 100, 1000)
SAMPLERS = ("ddpm", "ddim", "dpm++2m")


def timed_sample(model, n, steps, sampler, jit_compile="auto"):
    # Warm-up calls with the same shapes compile the loop (on PyTorch under
    # "auto", trace its step once runs pass LONG_LOOP steps), so that s/step
    # is the steady state. At 1000 steps compiling is under 3 % of the run
    # and the warm-up would double it, so there the time includes it.
    if steps < 1000:
        for _ in range(LONG_LOOP // steps + 1):
            model.sample(n, steps=steps, sampler=sampler, seed=99, verbose=False,
                         jit_compile=jit_compile)
    start = time.perf_counter()
    samples = model.sample(n, steps=steps, sampler=sampler, seed=1, verbose=False,
                           jit_compile=jit_compile)
    return samples, (time.perf_counter() - start) / steps


def digits_model():
    return DDPM((8, 8, 1), channels=32, channel_multipliers=(1, 2), seed=0)


def timing(backend, settings, steps_list, batch):
    print(f"| backend | jit_compile | steps | first call (s) | s/step, {batch} digits |")
    print("|---|---|---|---|---|")
    for jit_compile in settings:
        model = digits_model()  # a fresh model: nothing compiled yet
        for steps in steps_list:
            start = time.perf_counter()
            model.sample(batch, steps=steps, seed=99, verbose=False, jit_compile=jit_compile)
            first = time.perf_counter() - start
            # More warm-up calls until "auto" reaches its steady tier (on
            # PyTorch the step traced once runs of these settings pass
            # LONG_LOOP steps).
            for _ in range(LONG_LOOP // steps):
                model.sample(batch, steps=steps, seed=99, verbose=False, jit_compile=jit_compile)
            start = time.perf_counter()
            model.sample(batch, steps=steps, seed=1, verbose=False, jit_compile=jit_compile)
            per_step = (time.perf_counter() - start) / steps
            print(f"| {backend} | {jit_compile} | {steps} | {first:.1f} | {per_step:.4f} |",
                  flush=True)


def ring_sweep(backend, quick, samplers, steps_list, jit_compile):
    ring = Ring(std=0.1)
    model = DDPM((2,), hidden_units=128, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    start = time.perf_counter()
    model.fit(ring.sample(32768, seed=0), batch_size=256, epochs=5 if quick else 20, verbose=0)
    print(f"[{backend}] ring: trained in {time.perf_counter() - start:.0f}s")
    print("| backend | data | sampler | steps | modes | high quality | s/step |")
    print("|---|---|---|---|---|---|---|")
    for sampler in samplers:
        for steps in steps_list:
            samples, per_step = timed_sample(model, 2500, steps, sampler, jit_compile)
            cov = ring.mode_coverage(samples)
            print(f"| {backend} | ring | {sampler} | {steps} | {cov['modes_covered']}/8 | "
                  f"{cov['high_quality']:.1%} | {per_step:.4f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and steps")
    parser.add_argument("--steps", default=None,
                        help="comma-separated step counts (default 10,20,50,100,1000; "
                             "--quick: 10,20,50)")
    parser.add_argument("--samplers", default=",".join(SAMPLERS),
                        help=f"comma-separated subset of {','.join(SAMPLERS)}")
    parser.add_argument("--skip-ring", action="store_true", help="digits only")
    parser.add_argument("--jit-compile", default="auto",
                        help="passed to sample: auto, true or false (--timing-only: "
                             "a comma-separated list)")
    parser.add_argument("--timing-only", action="store_true",
                        help="untrained digits model: compile time and s/step only")
    parser.add_argument("--batch", type=int, default=1000,
                        help="--timing-only: samples per call (default 1000)")
    _markdown.add_argument(parser)
    args = parser.parse_args()
    choices = {"auto": "auto", "true": True, "false": False}
    settings = [s.strip().lower() for s in args.jit_compile.split(",")]
    if any(s not in choices for s in settings) or (len(settings) > 1 and not args.timing_only):
        parser.error(f"--jit-compile takes auto, true or false (a list with --timing-only); "
                     f"got {args.jit_compile!r}")
    settings = [choices[s] for s in settings]
    backend = keras.backend.backend()
    steps_list = (10, 20, 50) if args.quick else STEPS
    if args.steps:
        try:
            steps_list = tuple(int(s) for s in args.steps.split(","))
        except ValueError:
            parser.error(f"--steps takes comma-separated integers; got {args.steps!r}")
    samplers = tuple(s.strip() for s in args.samplers.split(",") if s.strip())
    unknown = [s for s in samplers if s not in SAMPLERS]
    if unknown or not samplers:
        parser.error(f"--samplers takes a subset of {','.join(SAMPLERS)}; got {args.samplers!r}")
    keras.utils.set_random_seed(0)
    if args.timing_only:
        if args.batch < 1:
            parser.error(f"--batch must be >= 1; got {args.batch}")
        timing(backend, settings, steps_list, args.batch)
        return

    if not args.skip_ring:
        ring_sweep(backend, args.quick, samplers, steps_list, settings[0])

    images, _ = digits("train")
    test, _ = digits("test")
    model = digits_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    start = time.perf_counter()
    model.fit(images, batch_size=64, epochs=10 if args.quick else 60, verbose=0)
    print(f"[{backend}] digits: trained in {time.perf_counter() - start:.0f}s; "
          f"floor FID(train, test) = {fid(images, test):.2f}")
    print("| backend | data | sampler | steps | FID | s/step |")
    print("|---|---|---|---|---|---|")
    for sampler in samplers:
        for steps in steps_list:
            samples, per_step = timed_sample(model, 1000, steps, sampler, settings[0])
            print(f"| {backend} | digits | {sampler} | {steps} | {fid(test, samples):.2f} | "
                  f"{per_step:.4f} |", flush=True)


if __name__ == "__main__":
    with _markdown.capture_argv('Diffusion samplers: quality and speed'):
        main()
