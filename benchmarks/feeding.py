"""What feeding in-memory arrays costs `fit` and `evaluate`: the zoo's
feeding against Keras's own, on the same model.

    KERAS_BACKEND=tensorflow python benchmarks/feeding.py

The model is `step_time.py`'s VAE (MLPs, the digits as 64-vectors, batches
of 64); the training arrays are its 1,437 training digits (22 full batches
and one of 29), the held-out arrays its 360 test digits (6 batches). "zoo"
calls `model.fit`/`model.evaluate`, which let the backend adjust the
arguments (`zoo/core/tensorflow.py`: one repeating training pipeline, and a
plain unshuffled pipeline for `evaluate` and validation); "keras" calls
`keras.Model.fit`/`keras.Model.evaluate` on the same model, which feed
Keras's `ArrayDataAdapter` pipeline with a new iterator at every epoch and
every evaluation. JAX and PyTorch feed arrays from Python iterators and the
zoo changes nothing there: their rows are a control.

- "evaluate": milliseconds per `evaluate` call of the held-out digits.
- "epoch + validation": milliseconds from one epoch's start to the next's in
  a `fit` with `validation_data`: the epoch's steps, its validation, and
  what `fit` does between epochs.

Runs alternate (zoo, keras, zoo, ...) `--repeats` times after a warm-up that
compiles both; medians.
"""

import argparse
import os
import platform
import statistics
import sys
import time

import keras

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _markdown  # noqa: E402
import step_time  # noqa: E402

from zoo.data import digits  # noqa: E402


class EpochClock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.starts = []

    def on_epoch_begin(self, epoch, logs=None):
        self.starts.append(time.perf_counter())

    def on_train_end(self, logs=None):
        self.starts.append(time.perf_counter())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--evaluations", type=int, default=20,
                        help="evaluate calls timed per repeat")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per timed fit")
    _markdown.add_argument(parser)
    args = parser.parse_args(argv)
    if min(args.repeats, args.evaluations, args.epochs) < 1:
        parser.error("--repeats, --evaluations and --epochs must be positive")

    family = step_time.VAEFamily()
    held_out, _ = digits("test")
    held_out = held_out.reshape(len(held_out), 64).astype("float32")
    x = family.data(1437)
    batch = family.batch_size
    model = step_time.build_compiled(family, x, {})
    runs = {
        "zoo": (model.fit, model.evaluate),
        "keras": (
            lambda *a, **k: keras.Model.fit(model, *a, **k),
            lambda *a, **k: keras.Model.evaluate(model, *a, **k),
        ),
    }

    def evaluate_ms(evaluate, calls):
        start = time.perf_counter()
        for _ in range(calls):
            evaluate(held_out, batch_size=batch, verbose=0)
        return 1e3 * (time.perf_counter() - start) / calls

    def epoch_ms(fit, epochs):
        clock = EpochClock()
        fit(x, batch_size=batch, epochs=epochs, validation_data=(held_out,),
            verbose=0, callbacks=[clock])
        # (from the second epoch's start: the first includes `fit`'s setup)
        gaps = [b - a for a, b in zip(clock.starts[1:-1], clock.starts[2:-1])]
        return 1e3 * statistics.median(gaps)

    for fit, evaluate in runs.values():  # warm-up: traces and compiles
        evaluate_ms(evaluate, 2)
        fit(x, batch_size=batch, epochs=2, validation_data=(held_out,), verbose=0)
    times = {(name, what): [] for name in runs for what in ("evaluate", "epoch")}
    for _ in range(args.repeats):
        for name, (fit, evaluate) in runs.items():
            times[name, "evaluate"].append(evaluate_ms(evaluate, args.evaluations))
            times[name, "epoch"].append(epoch_ms(fit, args.epochs + 2))

    print(
        f"backend {keras.backend.backend()}, keras {keras.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs; "
        f"medians of {args.repeats} interleaved repeats\n"
    )
    table = ["| measure | zoo (ms) | keras (ms) | zoo/keras |", "|---|---|---|---|"]
    for what, label in (("evaluate", "evaluate (360 rows)"),
                        ("epoch", "epoch + validation (1,437 + 360 rows)")):
        zoo, own = (statistics.median(times[name, what]) for name in runs)
        table.append(f"| {label} | {zoo:.1f} | {own:.1f} | {zoo / own:.2f} |")
    print("\n".join(table))
    _markdown.write(
        args.markdown, "Feeding in-memory arrays", "\n".join(table),
        notes=f"{keras.backend.backend()}: medians of {args.repeats} interleaved repeats.",
    )

if __name__ == "__main__":
    main()
