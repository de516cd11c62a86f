"""Throughput from 1 to 2 workers, per backend, and the non-finite guard's cost.

Scale-out (default): a GAN on 64-dimensional data (hidden layers of 256,
`batch` examples per worker per step) trained with `fit`, timed after a
warm-up fit, on 1 worker, then on 2:

- "devices", 2 devices of one process: JAX's `keras.distribution.
  DataParallel` over 2 virtual CPU devices
  (`--xla_force_host_platform_device_count=2`); TensorFlow's
  `MirroredStrategy` over 2 logical CPU devices (PyTorch has no such mode);
- "processes", 2 processes on 127.0.0.1: PyTorch as `torchrun` starts them
  (gloo); JAX through `keras.distribution.initialize` (`jax.distributed`,
  gloo CPU collectives), the data a `tf.data.Dataset` that Keras shards;
  TensorFlow's `MultiWorkerMirroredStrategy` (`TF_CONFIG`).

Each worker sees `batch` examples per step, so the global batch grows with
the workers; the ratio is examples per second with 2 workers over 1, both
measured in the same run (absolute figures on a shared CPU say little).
What makes the two sides comparable:

- every worker gets `--threads` intra-op threads, the one worker of the
  baseline as each of the two (`OMP_NUM_THREADS` for PyTorch,
  `TF_NUM_INTRAOP_THREADS` for TensorFlow, and at 1 thread XLA's CPU
  runtime without its Eigen pool, `--xla_cpu_multi_thread_eigen=false`):
  with a core per worker the ideal ratio is 2, and a ratio below it is
  what the engine's communication and coordination cost, or the cores'
  sharing with other work;
- both sides run the same training step: on PyTorch the traced step
  (`jit_compile="auto"` in its tier for long fits; `--torch-step eager`:
  the eager step, `jit_compile=False`); elsewhere the compiled step;
- both process the same examples per worker and step, and each counts only
  the examples it trained on (every rank's rows are fed on PyTorch, whose
  `batch_size` is per process);
- the clock runs from the end of the first step to the end of the last of
  a `fit` that follows a warm-up `fit`: tracing, compiling, each `fit`'s
  setup (and under `torchrun` its model check and weight broadcast) are
  left out, so the figure is the steady-state step rate.

    OMP_NUM_THREADS=1 python benchmarks/scale_out.py --steps 30 \
        --markdown docs/performance/scale_out.md

`--guard`: the step time of the same GAN (one process) with the zoo's
non-finite check (`zoo.core.nonfinite`) and without it (the check patched
out), alternating, median of `--repeats` timed fits each:

    python benchmarks/scale_out.py --guard --backends torch,jax,tensorflow
"""

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _markdown  # noqa: E402

MODES = {"torch": ("processes",), "jax": ("devices", "processes"),
         "tensorflow": ("devices", "processes")}


def _model(torch_step="eager"):
    import keras

    import zoo.core
    from zoo.gan import GAN

    model = GAN((64,), 16, hidden_units=(256, 256), seed=0)
    if keras.backend.backend() == "torch" and torch_step == "eager":
        model.compile(jit_compile=False)
    else:
        # PyTorch: "auto" in its tier for long fits (the traced step), for
        # the warm-up `fit` too.
        zoo.core.TRACE_FIT = 0
        model.compile(jit_compile="auto")
    return model, keras


def _data(n):
    import numpy as np

    return np.random.default_rng(0).normal(size=(n, 64)).astype("float32")


def _timed_fit(model, data, batch, steps, as_dataset=False, workers=1):
    """Seconds of the last `steps - 1` steps of a `fit` of `steps` steps
    (after a warm-up `fit`). `batch` is what `fit` takes: the global batch,
    or per process where `fit` shards (`workers` > 1: each step reads
    `batch * workers` of the rows)."""
    import keras

    def feed(n):
        rows = data[: batch * workers * n]
        if not as_dataset:
            return dict(x=rows, batch_size=batch)
        import tensorflow as tf

        return dict(x=tf.data.Dataset.from_tensor_slices(rows).batch(batch, drop_remainder=True))

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            # Reading a log waits for the step (JAX dispatches asynchronously).
            float(keras.ops.convert_to_numpy(logs["loss"]))
            now = time.perf_counter()
            if batch == 0:
                self.start = now
            self.end, self.steps = now, batch

    model.fit(**feed(5), epochs=1, verbose=0, shuffle=False)
    clock = Clock()
    model.fit(**feed(steps), epochs=1, verbose=0, shuffle=False, callbacks=[clock])
    if clock.steps != steps - 1:
        raise RuntimeError(f"the timed fit ran {clock.steps + 1} steps, not {steps}")
    return clock.end - clock.start


def worker(backend, workers, batch, steps, mode="devices", torch_step="traced"):
    """Runs in a fresh process: prints a JSON line of examples per second
    (on rank 0)."""
    processes = workers > 1 and mode == "processes"
    if backend == "jax" and workers > 1:
        import jax
        import keras

        if processes:
            keras.distribution.initialize(f"127.0.0.1:{os.environ['MASTER_PORT']}",
                                          num_processes=workers,
                                          process_id=int(os.environ["RANK"]))
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    strategy = None
    if backend == "tensorflow" and workers > 1:
        import tensorflow as tf

        if processes:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        else:
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * workers)
            strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(workers)])
    if strategy is not None:
        with strategy.scope():
            model, _ = _model()
    else:
        model, _ = _model(torch_step)
    # Per-worker batches: PyTorch's `batch_size` is per process; JAX's and
    # TensorFlow's is global.
    global_batch = batch if backend == "torch" else batch * workers
    data = _data(batch * workers * steps)
    seconds = _timed_fit(model, data, global_batch, steps,
                         as_dataset=backend == "jax" and processes,
                         workers=workers if backend == "torch" else 1)
    from zoo.core import distributed

    if distributed.is_chief():
        print(json.dumps({"examples_per_s": batch * workers * (steps - 1) / seconds}))


def guard_worker(backend, batch, steps, repeats):
    import statistics

    from zoo.core import nonfinite

    model, _ = _model()
    data = _data(batch * steps)
    original = nonfinite.guarded
    times = {"with": [], "without": []}
    for _ in range(repeats):
        for kind in ("with", "without"):
            nonfinite.guarded = original if kind == "with" else (lambda optimizer: False)
            model.make_train_function(force=True)
            times[kind].append(_timed_fit(model, data, batch, steps) / (steps - 1) * 1e3)
    nonfinite.guarded = original
    print(json.dumps({k: statistics.median(v) for k, v in times.items()}))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _thread_env(threads):
    """The environment that gives a worker process `threads` intra-op
    threads per worker, the same for the baseline's one worker and each of
    the two (PyTorch's and NumPy's OpenMP; TensorFlow's intra-op pool, per
    logical device; XLA's CPU runtime, single-threaded at 1)."""
    env = {"OMP_NUM_THREADS": str(threads), "TF_NUM_INTRAOP_THREADS": str(threads)}
    return env


def _run(backend, workers, args, mode="devices"):
    env = dict(os.environ, PYTHONPATH=ROOT, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               **_thread_env(args.threads))
    code = (f"from benchmarks.scale_out import worker; "
            f"worker({backend!r}, {workers}, {args.batch}, {args.steps}, {mode!r}, "
            f"{args.torch_step!r})")
    processes = workers > 1 and mode == "processes"
    if backend == "jax":
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={1 if processes else workers}"
        if args.threads == 1:
            env["XLA_FLAGS"] += " --xla_cpu_multi_thread_eigen=false"
    if not processes:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=600)
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        return json.loads(out.stdout.strip().splitlines()[-1])["examples_per_s"]
    ports = [_free_port() for _ in range(workers)]
    envs = []
    for r in range(workers):
        extra = dict(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(workers),
                     MASTER_ADDR="127.0.0.1", MASTER_PORT=str(ports[0]))
        if backend == "tensorflow":
            extra = {"TF_CONFIG": json.dumps({
                "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                "task": {"type": "worker", "index": r}})}
        envs.append(dict(env, **extra))
    # Output to files: a process blocked on a full pipe would stall the others.
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        files = [open(os.path.join(tmp, f"out{r}.txt"), "w+") for r in range(workers)]
        processes = [
            subprocess.Popen([sys.executable, "-c", code], env=e, stdout=f,
                             stderr=subprocess.STDOUT, text=True)
            for e, f in zip(envs, files)
        ]
        for p in processes:
            p.wait(timeout=600)
        outputs = []
        for f in files:
            f.seek(0)
            outputs.append(f.read())
            f.close()
    if any(p.returncode for p in processes):
        raise RuntimeError(outputs[0][-2000:] + outputs[-1][-2000:])
    lines = [line for line in outputs[0].splitlines() if line.startswith("{")]
    return json.loads(lines[-1])["examples_per_s"]


_SETUPS = {
    ("torch", "processes"): "2 processes (`torchrun` environment, gloo)",
    ("jax", "devices"): "2 virtual CPU devices of one process (`DataParallel`)",
    ("jax", "processes"): "2 processes (`jax.distributed`, gloo; `DataParallel`)",
    ("tensorflow", "devices"): "2 logical CPU devices of one process (`MirroredStrategy`)",
    ("tensorflow", "processes"): "2 processes (`MultiWorkerMirroredStrategy`)",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="torch,jax,tensorflow")
    parser.add_argument("--modes", default="devices,processes",
                        help="2 devices of one process, 2 processes, or both")
    parser.add_argument("--batch", type=int, default=64, help="examples per worker per step")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads of every worker, baseline included")
    parser.add_argument("--pairs", type=int, default=1,
                        help="pairs of runs (1 worker, 2) per setup: the median ratio")
    parser.add_argument("--torch-step", choices=("traced", "eager"), default="traced",
                        help="PyTorch's training step on both sides (default: traced)")
    parser.add_argument("--guard", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    _markdown.add_argument(parser)
    args = parser.parse_args()
    if args.guard:
        return guard(args)
    modes = args.modes.split(",")
    from importlib import metadata

    versions = []
    for package in ("torch", "jax", "jaxlib", "tensorflow", "tensorflow-cpu"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    notes = (
        f"{args.threads} intra-op thread(s) per worker, the baseline's one worker "
        f"as each of the two; {args.batch} examples per worker per step; the "
        f"steady-state rate of {args.steps - 1} steps after a warm-up `fit`; on "
        f"PyTorch the {args.torch_step} step on both sides; "
        f"the median ratio of {args.pairs} pair(s) of runs. With a free core per "
        f"worker the ideal ratio is 2. {', '.join(versions)}."
    )
    with _markdown.capture(args.markdown, "Scale-out: 1 worker to 2", notes=notes):
        print(notes + "\n")
        print("| Backend | 2 workers | Examples/s, 1 worker | 2 workers | 2 workers / 1 |")
        print("|---|---|---|---|---|")
        for backend in args.backends.split(","):
            for mode in MODES[backend]:
                if mode not in modes:
                    continue
                pairs = []
                for k in range(args.pairs):
                    # In turn: the first run of a pair has the machine's
                    # warm-up (file cache, clocks) against it.
                    if k % 2:
                        two = _run(backend, 2, args, mode)
                        one = _run(backend, 1, args)
                    else:
                        one = _run(backend, 1, args)
                        two = _run(backend, 2, args, mode)
                    pairs.append((two / one, one, two))
                ratio, one, two = sorted(pairs)[len(pairs) // 2]
                print(f"| {backend} | {_SETUPS[backend, mode]} | {one:.0f} | {two:.0f} "
                      f"| {ratio:.2f} |", flush=True)


def guard(args):
    import keras

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"Keras {keras.__version__}, Python {platform.python_version()}")
    for backend in args.backends.split(","):
        env = dict(os.environ, PYTHONPATH=ROOT, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        code = (f"from benchmarks.scale_out import guard_worker; "
                f"guard_worker({backend!r}, {args.batch}, {args.steps}, {args.repeats})")
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=600)
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        ms = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{backend}: {ms['with']:.2f} ms/step with the check, "
              f"{ms['without']:.2f} without ({ms['with'] / ms['without']:.3f}x)")


if __name__ == "__main__":
    main()
