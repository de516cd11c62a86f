"""Device check: where a zoo model's arrays live while it trains and samples,
its step time beside a native loop on the same device, and peak device memory.

    KERAS_BACKEND=jax python benchmarks/device_check.py
    KERAS_BACKEND=torch python benchmarks/device_check.py --require-gpu --size 8
    KERAS_BACKEND=tensorflow python benchmarks/device_check.py --families gan,gpt --steps 50

One model per family (`step_time.py`'s GAN, VAE, RealNVP, DDPM and GPT;
`--size S` multiplies every hidden width and the batch by S, to give a GPU
work), trained with `model.fit` at the defaults for `--steps` steps, then
sampled (`sample`, or `generate` for the GPT). Per family the table says
where each of these lives:

- "variables": every model variable (weights, seed generators, trackers);
- "optimizer": every optimizer variable (moments, iteration counts);
- "batch in step": the batch inside the training step (PyTorch: the tensor
  the step receives; JAX: the sharding of the traced batch inside the
  compiled step, `jax.debug.inspect_array_sharding`; TensorFlow, whose
  graph tensors carry no device until the runtime places them, and whose
  batch enters the step from the host as `tf.data` yields it: the loss the
  step returns, computed inside it from the batch and the variables);
- "samples": the backend arrays `sample`/`generate` convert to NumPy;
- "native": the losses of `step_time.py`'s hand-written loop (`jax.jit`,
  `tf.function`, eager PyTorch with `torch.optim.Adam`) on the same batches.

"ms/step" is the median over `--repeats` alternating runs (zoo `fit`, then
native) of `--steps` steps each, timed from step `--skip` to the end of the
last step (its loss read back), after a two-step fit that records the
batch's placement: the timed fits run the step without that probe.
"peak MiB" is the device allocator's peak while the family ran:
`torch.cuda.max_memory_allocated`,
`tf.config.experimental.get_memory_info("GPU:0")["peak"]` (both reset per
family), JAX's `peak_bytes_in_use` (never reset: the process's peak so
far, so run one family per process for a clean figure); "-" on the CPU.

The run fails (exit status 1, naming each misplaced array) if the backend
sees a GPU and anything above sits on the CPU, and before training (exit
status 2) if `--require-gpu` is given and the backend sees no GPU. Without
a GPU everything is on the CPU, the table's device columns say "cpu", and
the check passes. `--markdown PATH` writes the table only when the check
passes.
"""

import argparse
import collections
import os
import statistics
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _markdown  # noqa: E402
import step_time  # noqa: E402

BACKEND = keras.backend.backend()


# ---------------------------------------------------------------------------
# Devices, per backend.


def gpu_names():
    """The GPUs this backend can use; [] for none."""
    try:
        if BACKEND == "jax":
            import jax

            return [str(d) for d in jax.devices("gpu")]
        if BACKEND == "torch":
            import torch

            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    except RuntimeError:  # jax.devices("gpu") with no GPU backend
        return []


def device_of(x):
    """The device a backend array lives on, as a short name ("cpu",
    "cuda:0", "gpu:0", ...); None for anything that is not a backend array
    (NumPy arrays, Python numbers)."""
    if BACKEND == "torch":
        import torch

        return str(x.device) if isinstance(x, torch.Tensor) else None
    if BACKEND == "jax":
        import jax

        if not isinstance(x, jax.Array) or _jax_tracer(x):
            return None
        return ",".join(sorted(_jax_name(d) for d in x.devices()))
    import tensorflow as tf

    if not isinstance(x, (tf.Tensor, tf.Variable)) or not getattr(x, "device", ""):
        return None
    return _tf_name(x.device)


def _jax_tracer(x):
    import jax

    tracer = getattr(jax.core, "Tracer", None)  # public, but JAX has been moving jax.core
    return isinstance(x, tracer) if tracer is not None else "Tracer" in type(x).__name__


def _jax_name(device):
    return f"{device.platform}:{device.id}"


def _tf_name(device):
    # "/job:localhost/replica:0/task:0/device:GPU:0" -> "gpu:0"
    return device.rsplit("device:", 1)[-1].lower()


def on_cpu(name):
    return name is not None and name.split(":")[0] == "cpu"


def reset_peak():
    if BACKEND == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    elif BACKEND == "tensorflow" and gpu_names():
        import tensorflow as tf

        tf.config.experimental.reset_memory_stats("GPU:0")


def peak_mib():
    """The device allocator's peak in MiB; None on the CPU."""
    if BACKEND == "torch":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    if BACKEND == "tensorflow":
        if not gpu_names():
            return None
        import tensorflow as tf

        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    import jax

    stats = jax.devices()[0].memory_stats()
    if jax.devices()[0].platform == "cpu" or not stats:
        return None
    return stats["peak_bytes_in_use"] / 2**20


# ---------------------------------------------------------------------------
# Where the arrays go.


class Placements:
    """Device -> names of the arrays found there, per kind of array."""

    def __init__(self):
        self.kinds = collections.defaultdict(lambda: collections.defaultdict(list))

    def add(self, kind, name, device):
        self.kinds[kind][device].append(name)

    def summary(self, kind, count=False):
        """E.g. "cuda:0", or with `count` "cuda:0 (22)" or "cuda:0 (20), cpu (2)";
        "not seen" for none."""
        found = self.kinds.get(kind)
        if not found:
            return "not seen"
        return ", ".join(f"{device} ({len(names)})" if count else device
                         for device, names in found.items())

    def problems(self, family, gpu_visible, kinds):
        """What sits on the CPU while a GPU is visible, and what was never seen."""
        out = []
        for kind in kinds:
            found = self.kinds.get(kind)
            if not found:
                out.append(f"{family}: no {kind} array was seen, so its device is unknown")
                continue
            for device, names in found.items():
                if gpu_visible and on_cpu(device):
                    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
                    out.append(f"{family}: {len(names)} {kind} array(s) on {device} while "
                               f"a GPU is visible: {shown}")
        return out


def record_variables(placements, model):
    for kind, variables in (("variables", model.variables),
                            ("optimizer", model.optimizer.variables)):
        for v in variables:
            placements.add(kind, v.path, device_of(v.value) or "unknown")


def watch_batch(model, placements):
    """Records the batch's device inside the training step: the zoo's step
    hands every batch to `model.validate_data` first."""
    check = model.validate_data

    def probe(x):
        for leaf in keras.tree.flatten(x):
            if BACKEND == "jax":
                if _jax_tracer(leaf):
                    import jax

                    # Inside the compiled step: the sharding XLA gives the batch.
                    jax.debug.inspect_array_sharding(leaf, callback=lambda s: placements.add(
                        "batch in step", "batch",
                        ",".join(sorted(_jax_name(d) for d in s.device_set))))
            elif BACKEND == "torch":
                device = device_of(leaf)
                if device is not None:
                    placements.add("batch in step", "batch", device)
        return check(x)

    object.__setattr__(model, "validate_data", probe)


def unwatch_batch(model):
    """Takes the probe out of the training step: on JAX it is a host
    callback inside the compiled step, which the timed fits must not pay."""
    del model.__dict__["validate_data"]
    model.make_train_function(force=True)


def watch_step_outputs(model, placements):
    """TensorFlow: records the device of the logs each training step returns.
    A graph tensor has no device until the runtime places it, and the batch
    enters the step from the host as Keras reads it from `tf.data`; the
    returned logs, computed from the batch and the variables inside the
    step, show where the step's operations ran."""
    make = model.make_train_function

    def make_watched(force=False):
        function = make(force=force)
        if getattr(function, "device_check_watched", False):
            return function

        def watched(iterator):
            logs = function(iterator)
            # The float loss only: TensorFlow keeps int32 results (counts)
            # in host memory even when their operations run on a GPU.
            device = device_of(logs.get("loss")) if isinstance(logs, dict) else None
            if device is not None:
                placements.add("batch in step", "loss", device)
            return logs

        watched.device_check_watched = True
        object.__setattr__(model, "train_function", watched)
        return watched

    object.__setattr__(model, "make_train_function", make_watched)


class watch_conversions:
    """Records the device of every backend array `keras.ops.convert_to_numpy`
    receives inside the block: the zoo's `sample` and `generate` return
    NumPy arrays made this way from the arrays they computed."""

    def __init__(self, placements, kind):
        self.placements, self.kind = placements, kind

    def __enter__(self):
        self.original = keras.ops.convert_to_numpy

        def convert(x):
            device = device_of(x)
            if device is not None:
                self.placements.add(self.kind, "output", device)
            return self.original(x)

        keras.ops.convert_to_numpy = convert
        return self

    def __exit__(self, *exc):
        keras.ops.convert_to_numpy = self.original
        return False


# ---------------------------------------------------------------------------
# The models.


def sized_family(name, size):
    """`step_time.py`'s family `name` with hidden widths and batch times `size`."""
    family = step_time.SPECS[name]()
    family.batch_size = family.batch_size * size
    if size == 1:
        return family
    if name == "gan":
        from zoo.gan import GAN

        family.build = lambda: GAN((2,), latent_dim=family.latent, hidden_units=(64 * size,) * 2,
                                   ema_momentum=None, seed=0)
    elif name == "vae":
        from zoo.vae import VAE

        family.build = lambda: VAE((64,), latent_dim=8, hidden_units=(128 * size,), seed=0)
    elif name == "flow":
        from zoo.flow import RealNVP

        family.build = lambda: RealNVP((2,), num_couplings=family.couplings,
                                       hidden_units=(64 * size,) * 2, seed=0)
    elif name == "ddpm":
        family.hidden_units = 64 * size
    elif name == "gpt":
        family.width = 64 * size
    return family


def sample(name, model):
    if name == "gpt":
        prompt = np.zeros((2, 4), "int32")
        return model.generate(prompt, max_new_tokens=8, seed=0)
    if name == "ddpm":
        return model.sample(16, steps=5, sampler="ddim", seed=0, verbose=False)
    return model.sample(16, seed=0)


def run_family(name, args, gpu_visible):
    family = sized_family(name, args.size)
    b, n = family.batch_size, args.steps
    data = family.data(b * n)
    placements = Placements()
    reset_peak()
    model = step_time.build_compiled(family, data, {})
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    watch_batch(model, placements)
    if BACKEND == "tensorflow":
        watch_step_outputs(model, placements)
    # One short fit with the probe in the step records where the batch
    # lives; the timed fits run the step without it.
    model.fit(data[: 2 * b], batch_size=b, epochs=1, verbose=0, shuffle=False)
    unwatch_batch(model)
    step, read = step_time.make_native(family, model)

    zoo_ms, native_ms = [], []
    for repeat in range(args.repeats):
        clock = step_time.Clock(args.skip, n)
        model.fit(data, batch_size=b, epochs=1, verbose=0, shuffle=False, callbacks=[clock])
        zoo_ms.append(1e3 * (clock.end - clock.start) / (n - args.skip))
        for s in range(n):
            if s == args.skip:
                start = time.perf_counter()
            losses = step(data[s * b:(s + 1) * b])
        read(losses)
        native_ms.append(1e3 * (time.perf_counter() - start) / (n - args.skip))
    for loss in losses:
        placements.add("native", "loss", device_of(loss) or "unknown")
    record_variables(placements, model)
    with watch_conversions(placements, "samples"):
        sample(name, model)
    peak = peak_mib()
    kinds = ("variables", "optimizer", "batch in step", "samples", "native")
    zoo, native = statistics.median(zoo_ms), statistics.median(native_ms)
    row = (f"| {BACKEND} | {name} | {params:,} | {b} | "
           + " | ".join(placements.summary(k, count=k in ("variables", "optimizer"))
                        for k in kinds)
           + f" | {zoo:.2f} | {native:.2f} | {zoo / native:.2f} | "
           + ("-" if peak is None else f"{peak:.0f}") + " |")
    return row, placements.problems(name, gpu_visible, kinds)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(step_time.FAMILIES),
                        help="comma-separated, of " + ", ".join(step_time.FAMILIES))
    parser.add_argument("--steps", type=int, default=300, help="steps per timed fit")
    parser.add_argument("--skip", type=int, default=None,
                        help="steps before the clock starts (default: a tenth of --steps, "
                        "at least 2)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", type=int, default=1,
                        help="multiplies every hidden width and the batch")
    parser.add_argument("--require-gpu", action="store_true",
                        help="fail before training if the backend sees no GPU")
    _markdown.add_argument(parser)
    args = parser.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in step_time.SPECS]
    if unknown or not families:
        parser.error(f"--families: unknown {unknown}; known: {', '.join(step_time.FAMILIES)}")
    if args.skip is None:
        args.skip = max(2, args.steps // 10)
    if args.steps < 3 or not 1 <= args.skip < args.steps - 1:
        parser.error("--steps must be >= 3 and 1 <= --skip < --steps - 1")
    if args.repeats < 1 or args.size < 1:
        parser.error("--repeats and --size must be >= 1")

    gpus = gpu_names()
    device = step_time.device_name()
    print(f"backend {BACKEND}, keras {keras.__version__}, GPUs seen by the backend: "
          f"{', '.join(gpus) or 'none'}; default device {device}", flush=True)
    if args.require_gpu and not gpus:
        print(f"device_check FAILED: --require-gpu, but {BACKEND} sees no GPU "
              f"(its default device is {device})", file=sys.stderr, flush=True)
        return 2

    table = ["| backend | family | parameters | batch | variables | optimizer | batch in step "
             "| samples | native | zoo ms/step | native ms/step | zoo / native | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(table), flush=True)
    problems = []
    for name in families:
        row, found = run_family(name, args, bool(gpus))
        table.append(row)
        problems += found
        print(row, flush=True)
    if problems:
        print("device_check FAILED:\n  " + "\n  ".join(problems), file=sys.stderr, flush=True)
        return 1
    print(f"device_check passed: everything on {'the GPU' if gpus else 'the CPU (no GPU seen)'}")
    where = (f"GPU: {', '.join(gpus)}; every array above was on it." if gpus else
             "No GPU was visible to the backend: this run shows the check on the CPU, where "
             "every array belongs, not GPU figures.")
    _markdown.write(
        args.markdown, "Device check", "\n".join(table),
        notes=f"{where} Size {args.size}, `fit` at the defaults; {args.steps} steps per timed "
        f"run, clock from step {args.skip}, medians of {args.repeats} alternating zoo and "
        "native runs. Device columns: where the model's variables and the optimizer's live "
        "(with their number), the batch inside the training step (TensorFlow: the loss the "
        "step returns), the arrays `sample`/`generate` convert to NumPy, and the native "
        "loop's losses. Peak MiB: the device allocator's peak (JAX: the process's peak so "
        "far); \"-\" on the CPU.",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
