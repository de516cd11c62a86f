"""Digits: flow matching against DDPM, FID per number of function
evaluations and bits per dimension from the probability-flow ODE.

    KERAS_BACKEND=jax OMP_NUM_THREADS=1 python benchmarks/diffusion_digits.py
    KERAS_BACKEND=tensorflow OMP_NUM_THREADS=1 python benchmarks/diffusion_digits.py
    KERAS_BACKEND=torch OMP_NUM_THREADS=1 python benchmarks/diffusion_digits.py

Models, trained once and sampled on every backend: the `fm_digits` preset
(class-conditional `FlowMatching`, trained on JAX by `python -m
zoo.presets.build fm_digits`) and a class-conditional `DDPM` (cosine
schedule, v-prediction) with the same U-Net, training split, epochs, batch,
optimizer and seed (`zoo.diffusion.presets.digits_model`,
`DIGITS_TRAINING`): the two differ only in their objective. The first run
trains the DDPM and saves it to `--ddpm` (default
`$KERAS_HOME/zoo_benchmarks/ddpm_digits.keras`); later runs, on any backend,
load it (`--retrain` trains again). The DDPM's training backend is printed.

FID (`zoo.metrics.fid`, features of the shipped digits classifier) of
`--per-class` samples of each digit (1,000 by default, no guidance, seed 1)
against the 360 test images, at the same numbers of function evaluations
(NFE, `--nfe`): flow matching's Euler (NFE steps), Heun and midpoint (NFE / 2
steps: two evaluations each) beside DDPM's DDIM and DPM-Solver++(2M) (NFE
steps); and the share of samples the digits classifier reads as the
requested digit. The floor, FID(train split, test split), is about 2.7.

Bits per dimension of the 360 test images from `log_prob` (the
probability-flow ODE, `--ode-steps` Heun steps, Hutchinson's estimator with
`--probes` Rademacher probes; the unconditional density, the "no label"
token), under uniform dequantization on the 17-level grid as
`benchmarks/flow_nll.py` scores the flows: bits/dim = -(log p(x + u) +
64 log(2/16)) / (64 log 2), u uniform in the bin of width 2/16 around each
pixel, one draw per image (seed 0). The diffusion models were trained on the
grid values themselves, not on dequantized data as the flows are.
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time

# So that the script runs from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _markdown  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import zoo  # noqa: E402
from zoo.data import digits  # noqa: E402
from zoo.diffusion import DDPM, FlowMatching  # noqa: E402
from zoo.diffusion.presets import DIGITS_TRAINING, digits_model, digits_optimizer  # noqa: E402
from zoo.metrics import fid  # noqa: E402
from zoo.presets import preset_metadata  # noqa: E402
from zoo.presets.checks import digits_accuracy  # noqa: E402

SAMPLERS = {"FlowMatching": ("euler", "heun", "midpoint"), "DDPM": ("ddim", "dpm++2m")}
TWO_EVALUATIONS = ("heun", "midpoint")
BIN = 2.0 / 16  # the 17-level grid of [-1, 1]


def default_ddpm_path():
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(home, "zoo_benchmarks", "ddpm_digits.keras")


def load_or_train_ddpm(path, retrain):
    """The benchmark's DDPM: loaded from `path`, or trained and saved there
    (atomically) with the fm_digits recipe's settings."""
    if os.path.exists(path) and not retrain:
        model = keras.saving.load_model(path)
        print(f"DDPM loaded from {path}", flush=True)
        return model, "loaded"
    images, labels = digits("train")
    model = digits_model(DDPM)
    model.compile(optimizer=digits_optimizer(len(images)))
    start = time.perf_counter()
    model.fit(images, labels, batch_size=DIGITS_TRAINING["batch_size"],
              epochs=DIGITS_TRAINING["epochs"], verbose=0)
    seconds = time.perf_counter() - start
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".keras")
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    print(f"DDPM trained on {keras.backend.backend()} in {seconds:.0f} s, saved to {path}",
          flush=True)
    return model, f"trained here in {seconds:.0f} s"


def bits_per_dim(model, test, steps, probes, seed=0):
    """Dequantized bits/dim of `test` and the seconds `log_prob` took."""
    rng = np.random.default_rng(seed)
    noisy = test + rng.uniform(-BIN / 2, BIN / 2, test.shape).astype("float32")
    start = time.perf_counter()
    log_p = model.log_prob(noisy, steps=steps, divergence="hutchinson", num_probes=probes,
                           seed=seed, batch_size=len(test))
    seconds = time.perf_counter() - start
    dims = test[0].size
    return float(-(np.mean(log_p) + dims * math.log(BIN)) / (dims * math.log(2))), seconds


def parse_nfes(text):
    try:
        nfes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        nfes = []
    if not nfes or any(n < 2 or n % 2 for n in nfes):
        raise argparse.ArgumentTypeError(
            f"--nfe takes even integers >= 2, comma-separated (Heun and midpoint take "
            f"NFE / 2 steps); received {text!r}")
    return nfes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nfe", type=parse_nfes, default=[4, 8, 16, 32],
                        help="function evaluations per sample, comma-separated even numbers")
    parser.add_argument("--per-class", type=int, default=100, help="samples of each digit")
    parser.add_argument("--flow", default="fm_digits", help="FlowMatching preset")
    parser.add_argument("--ddpm", default=default_ddpm_path(), help="DDPM .keras file")
    parser.add_argument("--retrain", action="store_true", help="train the DDPM again")
    parser.add_argument("--ode-steps", type=int, default=32)
    parser.add_argument("--probes", type=int, default=1)
    parser.add_argument("--skip-nll", action="store_true")
    _markdown.add_argument(parser)
    args = parser.parse_args()
    if args.per_class < 1 or args.ode_steps < 1 or args.probes < 1:
        parser.error("--per-class, --ode-steps and --probes must be >= 1")
    backend = keras.backend.backend()
    keras.utils.set_random_seed(0)
    train, _ = digits("train")
    test, _ = digits("test")
    floor = fid(train, test)
    print(f"[{backend}] FID(train, test) floor = {floor:.2f}", flush=True)
    flow = zoo.from_preset(args.flow)
    if not isinstance(flow, FlowMatching) or flow.num_classes != 10:
        parser.error(f"--flow {args.flow!r} is not a class-conditional FlowMatching")
    flow_backend = preset_metadata(args.flow).get("training_backend", "?")
    ddpm, ddpm_origin = load_or_train_ddpm(args.ddpm, args.retrain)
    labels = np.repeat(np.arange(10), args.per_class).astype("int32")
    rows, nll = [], []
    for model in (flow, ddpm):
        name = type(model).__name__
        for sampler in SAMPLERS[name]:
            for nfe in args.nfe:
                steps = nfe // 2 if sampler in TWO_EVALUATIONS else nfe
                start = time.perf_counter()
                samples = model.sample(len(labels), steps=steps, sampler=sampler,
                                       labels=labels, seed=1, verbose=False)
                seconds = time.perf_counter() - start
                value = fid(test, samples)
                accuracy = float(np.mean(digits_accuracy(samples, labels)))
                rows.append((name, sampler, steps, nfe, value, accuracy))
                print(json.dumps({"backend": backend, "model": name, "sampler": sampler,
                                  "steps": steps, "nfe": nfe, "fid": round(value, 3),
                                  "accuracy": round(accuracy, 4),
                                  "seconds": round(seconds, 2)}), flush=True)
        if not args.skip_nll:
            bpd, seconds = bits_per_dim(model, test, args.ode_steps, args.probes)
            nll.append((name, bpd, seconds))
            print(json.dumps({"backend": backend, "model": name, "bits_per_dim": round(bpd, 4),
                              "ode_steps": args.ode_steps, "probes": args.probes,
                              "seconds": round(seconds, 1)}), flush=True)
    print()
    print(f"FlowMatching: preset {args.flow} (trained on {flow_backend}); DDPM: "
          f"{ddpm_origin} ({args.ddpm}). {len(labels)} samples per cell "
          f"({args.per_class} of each digit), FID floor {floor:.2f}.")
    print()
    print(f"| backend | model | sampler | steps | NFE | FID | accuracy |")
    print("|---|---|---|---|---|---|---|")
    for name, sampler, steps, nfe, value, accuracy in rows:
        print(f"| {backend} | {name} | {sampler} | {steps} | {nfe} | {value:.2f} | "
              f"{accuracy:.1%} |")
    if nll:
        print()
        print(f"| backend | model | bits/dim (test, dequantized, ODE {args.ode_steps} Heun "
              f"steps, {args.probes} probe{'s' if args.probes > 1 else ''}) | seconds |")
        print("|---|---|---|---|")
        for name, bpd, seconds in nll:
            print(f"| {backend} | {name} | {bpd:.3f} | {seconds:.0f} |")


if __name__ == "__main__":
    with _markdown.capture_argv("Digits: flow matching against DDPM"):
        main()
