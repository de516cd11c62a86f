"""Throughput from 1 to 2 workers, per backend, and the non-finite guard's cost.

Scale-out (default): a GAN on 64-dimensional data (hidden layers of 256,
`batch` examples per worker per step) trained with `fit`, timed after a
warm-up fit, on

- PyTorch: 1 process, then 2 processes as `torchrun` starts them (gloo);
- JAX: 1 device, then `keras.distribution.DataParallel` over 2 virtual CPU
  devices (`--xla_force_host_platform_device_count=2`) in one process;
- TensorFlow: 1 device, then `MirroredStrategy` over 2 logical CPU devices.

Each worker sees `batch` examples per step, so the global batch grows with
the workers; the ratio is examples per second with 2 workers over 1.

    python benchmarks/scale_out.py --backends torch,jax,tensorflow --steps 60

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


def _model():
    import keras

    from zoo.gan import GAN

    model = GAN((64,), 16, hidden_units=(256, 256), seed=0)
    model.compile()
    return model, keras


def _data(n):
    import numpy as np

    return np.random.default_rng(0).normal(size=(n, 64)).astype("float32")


def _timed_fit(model, data, batch, steps):
    model.fit(data[: batch * 5], batch_size=batch, epochs=1, verbose=0, shuffle=False)
    start = time.perf_counter()
    model.fit(data[: batch * steps], batch_size=batch, epochs=1, verbose=0, shuffle=False)
    return time.perf_counter() - start


def worker(backend, workers, batch, steps):
    """Runs in a fresh process: prints a JSON line of examples per second."""
    if backend == "jax" and workers > 1:
        import jax
        import keras

        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    strategy = None
    if backend == "tensorflow" and workers > 1:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * workers)
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(workers)])
    if strategy is not None:
        with strategy.scope():
            model, _ = _model()
    else:
        model, _ = _model()
    # Per-worker batches: PyTorch's `batch_size` is per process; JAX's and
    # TensorFlow's is global.
    global_batch = batch if backend == "torch" else batch * workers
    data = _data(batch * workers * steps)
    seconds = _timed_fit(model, data, global_batch, steps)
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        print(json.dumps({"examples_per_s": batch * workers * steps / seconds}))


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
            times[kind].append(_timed_fit(model, data, batch, steps) / steps * 1e3)
    nonfinite.guarded = original
    print(json.dumps({k: statistics.median(v) for k, v in times.items()}))


def _run(backend, workers, args):
    env = dict(os.environ, PYTHONPATH=ROOT, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    code = (f"from benchmarks.scale_out import worker; "
            f"worker({backend!r}, {workers}, {args.batch}, {args.steps})")
    if backend == "jax":
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={workers}"
    if backend != "torch" or workers == 1:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=600)
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        return json.loads(out.stdout.strip().splitlines()[-1])["examples_per_s"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env=dict(env, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(workers),
                     MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in range(workers)
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    if any(p.returncode for p in processes):
        raise RuntimeError(outputs[0][1][-2000:] + outputs[-1][1][-2000:])
    return json.loads(outputs[0][0].strip().splitlines()[-1])["examples_per_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="torch,jax,tensorflow")
    parser.add_argument("--batch", type=int, default=64, help="examples per worker per step")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--guard", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import keras

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"Keras {keras.__version__}, Python {platform.python_version()}")
    for backend in args.backends.split(","):
        if args.guard:
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
            continue
        one = _run(backend, 1, args)
        two = _run(backend, 2, args)
        print(f"{backend}: {one:.0f} examples/s on 1 worker, {two:.0f} on 2: "
              f"ratio {two / one:.2f}")


if __name__ == "__main__":
    main()
