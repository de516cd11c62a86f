"""PyTorch training steps side by side: Keras's own `jit_compile=True`
(`torch.compile`), per-network `torch.compile`, and the zoo's traced and
Inductor-compiled steps, against eager Keras and a native loop.

    OMP_NUM_THREADS=1 KERAS_BACKEND=torch python benchmarks/torch_compile.py --families gan
    OMP_NUM_THREADS=1 KERAS_BACKEND=torch python benchmarks/torch_compile.py \\
        --families vae --kinds traced,compiled,keras,blocks

Kinds of step, each trained with `model.fit` on the same batches from the
same initial weights and seed (the models and data are `step_time.py`'s):

- `eager`: `compile(jit_compile=False)`, Keras's eager step;
- `traced`: the zoo's traced step run without compiling, which
  `jit_compile="auto"` runs for a `fit` of `zoo.core.TRACE_FIT` steps or
  more (`zoo.core.torch_step.AutoStep`);
- `compiled`: the zoo's `compile(jit_compile=True)`, the traced step
  compiled by TorchInductor (`zoo.core.torch_step.CompiledStep`);
- `keras`: Keras's own `jit_compile=True` on PyTorch, `torch.compile` of
  the whole step function (`keras.Model.make_train_function`, which the zoo
  replaces);
- `blocks`: the eager step with each network (the model's top-level layers
  with weights: generator and discriminator, encoder and decoder, the
  denoiser, ...) compiled by `torch.compile`, as diffusers compiles its
  U-Net or its blocks;
- `native`: the same networks, loss and `torch.optim.Adam` written in plain
  PyTorch, eager (`step_time.native_torch`), always measured: every ratio
  in the table is to it, in the same run.

Eager and native are always in the run. "first step" is a one-batch `fit`
of a fresh model (tracing or compilation included); "ms/step" the median
over `--repeats` interleaved fits of `--steps` steps after that, timed from
the second step of each `fit`; "max |diff| vs eager" the largest difference
of any weight, optimizer or seed state from the eager model's after the
same first `--check-steps` steps (0 means bit-identical); "graph breaks"
and "recompiles" are `torch._dynamo`'s counters for the `torch.compile`
kinds. An empty `TORCHINDUCTOR_CACHE_DIR` gives cold compilation times. A
kind that fails to build or to run its first steps gets a row saying why,
and the other kinds are still measured.
"""

import argparse
import os
import statistics
import sys
import time
import warnings

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _markdown  # noqa: E402
import step_time  # noqa: E402

KINDS = ("eager", "traced", "compiled", "keras", "blocks")


def build(family, data, kind, weights):
    import torch

    jit_compile = {"eager": False, "traced": "auto"}.get(kind, kind in ("compiled", "keras"))
    model = step_time.build_compiled(family, data, {"jit_compile": jit_compile})
    model.set_weights(weights)
    if kind == "keras":
        # Keras's torch trainer: `torch.compile(one_step_on_data)`.
        keras.Model.make_train_function(model, force=True)
    elif kind == "blocks":
        for layer in model._flatten_layers(include_self=False, recursive=False):
            if layer.weights:
                layer.call = torch.compile(layer.call)
    return model


def state(model):
    variables = list(model.variables) + list(model.optimizer.variables)
    return [np.array(keras.ops.convert_to_numpy(v.value)) for v in variables]


def fit_ms(model, data, batch):
    times = []
    clock = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: times.append(time.perf_counter())
    )
    model.fit(data, batch_size=batch, epochs=1, verbose=0, shuffle=False, callbacks=[clock])
    return 1e3 * (times[-1] - times[0]) / (len(times) - 1)


def native_ms(step, read, data, batch, steps):
    read(step(data[:batch]))
    start = time.perf_counter()
    for s in range(1, steps):
        losses = step(data[s * batch:(s + 1) * batch])
    read(losses)
    return 1e3 * (time.perf_counter() - start) / (steps - 1)


def bench(name, kinds, args):
    import torch
    import zoo.core

    family = step_time.SPECS[name]()
    b = family.batch_size
    data = family.data(b * max(args.steps, args.check_steps))
    reference = step_time.build_compiled(family, data, {"jit_compile": False})
    weights = reference.get_weights()
    step, read = step_time.make_native(family, reference)
    rows = {}
    models = {}
    saved = zoo.core.TRACE_FIT
    zoo.core.TRACE_FIT = 0  # "auto": the traced step at any length
    try:
        failed = {}
        for kind in kinds:
            torch._dynamo.reset()
            torch._dynamo.utils.counters.clear()
            start = time.perf_counter()
            try:
                model = build(family, data, kind, weights)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model.fit(data[:b], batch_size=b, verbose=0, shuffle=False)
                    first = time.perf_counter() - start
                    model.fit(data[b:b * args.check_steps], batch_size=b, verbose=0,
                              shuffle=False)
            except Exception as error:  # noqa: BLE001
                if kind == "eager":
                    raise
                # One kind that cannot compile this model must not lose the
                # others' minutes of compilation: its row says why.
                first_line = (str(error).splitlines() or [""])[0][:80]
                failed[kind] = f"{type(error).__name__}: {first_line}"
                print(f"{name} {kind} failed: {failed[kind]}", file=sys.stderr, flush=True)
                continue
            counters = torch._dynamo.utils.counters
            rows[kind] = {
                "first": first, "ms": [], "state": state(model),
                "breaks": sum(counters["graph_break"].values()),
                "recompiles": sum(counters["recompiles"].values()),
            }
            models[kind] = model
        native = []
        for _ in range(args.repeats):  # interleaved
            for kind in rows:
                rows[kind]["ms"].append(fit_ms(models[kind], data[: b * args.steps], b))
            native.append(native_ms(step, read, data, b, args.steps))
    finally:
        zoo.core.TRACE_FIT = saved
    native = statistics.median(native)
    eager = rows["eager"]["state"]
    lines = []
    for kind in kinds:
        if kind in failed:
            reason = failed[kind].replace("|", "\\|")
            lines.append(f"| {name} | {kind} | failed | - | - | {reason} | - |")
            continue
        r = rows[kind]
        diff = max(float(np.max(np.abs(a.astype("float64") - e.astype("float64"))))
                   if a.size else 0.0 for a, e in zip(r["state"], eager))
        ms = statistics.median(r["ms"])
        dynamo = f"{r['breaks']} / {r['recompiles']}" if kind in ("keras", "blocks") else "-"
        lines.append(f"| {name} | {kind} | {ms:.2f} | {ms / native:.2f} | {r['first']:.1f} "
                     f"| {diff:.1e} | {dynamo} |")
    lines.append(f"| {name} | native | {native:.2f} | 1.00 | - | - | - |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="gan", help="comma-separated, of "
                        + ", ".join(step_time.SPECS))
    parser.add_argument("--kinds", default="traced,compiled,keras,blocks",
                        help="comma-separated, of " + ", ".join(KINDS[1:])
                        + " (eager and native are always measured)")
    parser.add_argument("--steps", type=int, default=40, help="steps per timed fit")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--check-steps", type=int, default=5,
                        help="steps after which the states are compared with eager's")
    _markdown.add_argument(parser)
    args = parser.parse_args(argv)
    if keras.backend.backend() != "torch":
        parser.error("these are PyTorch's steps: run with KERAS_BACKEND=torch")
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"--kinds: unknown {unknown}; known: {', '.join(KINDS[1:])}")
    kinds = ["eager"] + [k for k in kinds if k != "eager"]
    families = [f for f in args.families.split(",") if f]
    for name in families:
        if name not in step_time.SPECS:
            parser.error(f"--families: unknown {name!r}; known: {', '.join(step_time.SPECS)}")
    if args.steps < 3 or args.check_steps < 2 or args.repeats < 1:
        parser.error("--steps must be >= 3, --check-steps >= 2 and --repeats >= 1")
    import torch

    print(f"torch {torch.__version__}, keras {keras.__version__}, "
          f"{torch.get_num_threads()} threads, device {step_time.device_name()}", flush=True)
    table = ["| family | step | ms/step | / native | first step (s) | max \\|diff\\| vs eager "
             "| graph breaks / recompiles |", "|---|---|---|---|---|---|---|"]
    print("\n".join(table), flush=True)
    for name in families:
        for line in bench(name, kinds, args):
            table.append(line)
            print(line, flush=True)
    _markdown.write(
        args.markdown, "PyTorch: Keras's torch.compile beside the zoo's steps", "\n".join(table),
        notes=f"{args.steps} steps per timed fit, medians of {args.repeats} interleaved fits; "
        f"states compared after {args.check_steps} steps; torch threads "
        f"{torch.get_num_threads()}.",
    )


if __name__ == "__main__":
    main()
