"""Wall time of one long `fit` with each PyTorch training step: compiled,
traced, eager.

    OMP_NUM_THREADS=1 KERAS_BACKEND=torch python benchmarks/long_fit.py --families gan --steps 10000

On PyTorch the default `jit_compile="auto"` picks the training step by the
number of steps a `fit` plans (`AutoStep` in `zoo/core/torch_step.py`):
eager below `zoo.core.TRACE_FIT`, the traced step run without compiling
from there (both draw the same noise); `jit_compile=True` compiles the
traced step with TorchInductor. This measures where each pays: the whole
`fit` (tracing and compilation included) of a fresh model with the
compiled step (`jit_compile=True`), then with the traced step ("auto" with
`TRACE_FIT` 0), then eagerly (`jit_compile=False`); "default" names the
one "auto" runs at that length (`--kinds` times only some of the three). PyTorch only: JAX
and TensorFlow compile every `fit`. The models, data and batch sizes are
`step_time.py`'s. Set
`TORCHINDUCTOR_CACHE_DIR` to an empty folder for a cold compilation.
"""

import argparse
import contextlib
import os
import platform
import sys
import time

import keras

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _markdown  # noqa: E402
import step_time  # noqa: E402

from zoo.core import TRACE_FIT  # noqa: E402


def fit_seconds(family, data, steps, settings):
    model = step_time.build_compiled(family, data, settings)
    b = family.batch_size
    epochs = -(-steps // (len(data) // b))
    start = time.perf_counter()
    model.fit(data, batch_size=b, epochs=epochs, verbose=0, shuffle=True)
    seconds = time.perf_counter() - start
    return seconds, epochs * (len(data) // b), float(model.history.history["loss"][-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="gan")
    parser.add_argument("--steps", type=int, default=10_000, help="training steps per fit")
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--kinds", default="compiled,traced,eager",
                        help="which fits to time (comma-separated; default all three)")
    _markdown.add_argument(parser)
    args = parser.parse_args(argv)
    kinds = args.kinds.split(",")
    unknown = sorted(set(kinds) - {"compiled", "traced", "eager"})
    if unknown:
        parser.error(f"--kinds: expected some of compiled, traced, eager; received {args.kinds!r}")
    if keras.backend.backend() != "torch":
        parser.error("the long-fit rule is PyTorch's: run with KERAS_BACKEND=torch")
    if args.steps < 1 or args.steps_per_epoch < 1:
        parser.error("--steps and --steps-per-epoch must be positive")
    print(
        f"backend {keras.backend.backend()}, keras {keras.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"TRACE_FIT {TRACE_FIT}\n"
    )
    table = ["| family | steps | compiled fit (s) | traced fit (s) | eager fit (s) | compiled/eager "
             "| traced/eager | default | final loss compiled / traced / eager |",
             "|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(table))
    for name in args.families.split(","):
        if name not in step_time.SPECS:
            parser.error(f"--families: unknown family {name!r}; known: {', '.join(step_time.SPECS)}")
        family = step_time.SPECS[name]()
        data = family.data(family.batch_size * args.steps_per_epoch)
        times, losses = {}, {}
        for kind in ("compiled", "traced", "eager"):
            if kind not in kinds:
                continue
            settings = {"jit_compile": {"compiled": True, "eager": False}.get(kind, "auto")}
            with step_time.traced_tier() if kind == "traced" else contextlib.nullcontext():
                times[kind], steps, losses[kind] = fit_seconds(family, data, args.steps, settings)
        default = "traced" if steps >= TRACE_FIT else "eager"
        order = ("compiled", "traced", "eager")
        cells = [f"{times[k]:.1f}" if k in times else "-" for k in order]
        cells += [f"{times[k] / times['eager']:.2f}" if k in times and "eager" in times else "-"
                  for k in order[:2]]
        loss = " / ".join(f"{losses[k]:.4f}" if k in losses else "-" for k in order)
        table.append(f"| {name} | {steps} | {' | '.join(cells)} | {default} | {loss} |")
        print(table[-1], flush=True)
    _markdown.write(
        args.markdown, "Whole long fits on PyTorch: compiled, traced, eager", "\n".join(table),
        notes=f"`TRACE_FIT` {TRACE_FIT}; {args.steps_per_epoch} steps per epoch.",
    )


if __name__ == "__main__":
    main()
