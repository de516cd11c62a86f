"""Wall time of one long `fit` at the default settings against eager steps.

    OMP_NUM_THREADS=1 KERAS_BACKEND=torch python benchmarks/long_fit.py --families gan --steps 10000

On PyTorch the default `jit_compile="auto"` compiles the training step of a
`fit` planned for at least `zoo.core.LONG_FIT` steps (`zoo/core/torch_step.py`);
this measures whether that pays: the whole `fit` (compilation included) at
the defaults, then the same `fit` of a fresh model with `jit_compile=False`
(eager). PyTorch only: JAX and TensorFlow compile every `fit`. The models,
data and batch sizes are `step_time.py`'s. Set `TORCHINDUCTOR_CACHE_DIR` to
an empty folder for a cold compilation.
"""

import argparse
import os
import platform
import sys
import time

import keras

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import step_time  # noqa: E402

from zoo.core import LONG_FIT  # noqa: E402


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
    parser.add_argument("--steps", type=int, default=LONG_FIT,
                        help=f"training steps per fit (default LONG_FIT = {LONG_FIT})")
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    args = parser.parse_args(argv)
    if keras.backend.backend() != "torch":
        parser.error("the long-fit rule is PyTorch's: run with KERAS_BACKEND=torch")
    if args.steps < 1 or args.steps_per_epoch < 1:
        parser.error("--steps and --steps-per-epoch must be positive")
    print(
        f"backend {keras.backend.backend()}, keras {keras.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average at start "
        f"{os.getloadavg()[0]:.1f}, LONG_FIT {LONG_FIT}\n"
    )
    print("| family | steps | default fit (s) | eager fit (s) | default/eager | final loss default / eager |")
    print("|---|---|---|---|---|---|")
    for name in args.families.split(","):
        if name not in step_time.SPECS:
            parser.error(f"--families: unknown family {name!r}; known: {', '.join(step_time.SPECS)}")
        family = step_time.SPECS[name]()
        data = family.data(family.batch_size * args.steps_per_epoch)
        auto, steps, auto_loss = fit_seconds(family, data, args.steps, {})
        eager, _, eager_loss = fit_seconds(family, data, args.steps, {"jit_compile": False})
        print(f"| {name} | {steps} | {auto:.1f} | {eager:.1f} | {auto / eager:.2f} "
              f"| {auto_loss:.4f} / {eager_loss:.4f} |", flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
