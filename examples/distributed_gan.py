"""Train a class-conditional GAN on the 8x8 digits on several devices or processes.

The same `fit` as examples/gan_digits.py, on each backend's own engine (see
docs/distributed.md). Run from the repository root:

    # PyTorch: 2 processes (gloo on CPU, NCCL on GPUs); --batch-size per process
    KERAS_BACKEND=torch torchrun --nproc-per-node 2 examples/distributed_gan.py

    # JAX: keras.distribution.DataParallel over every device (2 virtual CPUs here)
    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
        python examples/distributed_gan.py

    # JAX: 2 processes (jax.distributed, gloo on CPU), one command per process
    KERAS_BACKEND=jax python examples/distributed_gan.py \\
        --coordinator 127.0.0.1:12355 --num-processes 2 --process-id 0
    KERAS_BACKEND=jax python examples/distributed_gan.py \\
        --coordinator 127.0.0.1:12355 --num-processes 2 --process-id 1

    # TensorFlow: MirroredStrategy over 2 logical CPUs, or, with TF_CONFIG set
    # in each worker's environment, MultiWorkerMirroredStrategy
    KERAS_BACKEND=tensorflow python examples/distributed_gan.py --logical-cpus 2

Every process runs this script; rank 0 alone prints, saves the preset and
writes the PNG grid (one row per digit).
"""

import argparse
import json
import os
import sys
import time

# So that the example runs from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from zoo.core import distributed  # noqa: E402
from zoo.data import digits  # noqa: E402
from zoo.gan import ConditionalGAN  # noqa: E402
from zoo.images import save_image_grid  # noqa: E402


def strategy_scope(backend, logical_cpus, args):
    """The scope the model is built in: JAX's DataParallel (over every
    process's devices, after `jax.distributed` starts where several
    processes are asked for), TensorFlow's strategy; nothing on PyTorch
    (torchrun's environment is enough)."""
    if backend == "jax":
        import jax

        if args.num_processes > 1:
            # keras.distribution.initialize, with a bound on how long the
            # others wait for a process that dies or hangs.
            distributed.initialize(args.coordinator, num_processes=args.num_processes,
                                   process_id=args.process_id, timeout=args.timeout)
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=jax.devices()))
    if backend != "tensorflow":
        import contextlib

        return contextlib.nullcontext()
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy().scope()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
    return tf.distribute.MirroredStrategy(
        [f"/cpu:{i}" for i in range(logical_cpus)]).scope()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64,
                        help="per process on PyTorch; global on JAX and TensorFlow")
    parser.add_argument("--logical-cpus", type=int, default=2,
                        help="TensorFlow's MirroredStrategy replicas (no TF_CONFIG)")
    parser.add_argument("--coordinator", default="127.0.0.1:12355",
                        help="JAX, several processes: process 0's HOST:PORT")
    parser.add_argument("--num-processes", type=int, default=1,
                        help="JAX: processes of jax.distributed (1: one process)")
    parser.add_argument("--process-id", type=int, default=0, help="JAX: this process's rank")
    parser.add_argument("--timeout", type=float, default=None,
                        help="JAX, several processes: seconds without heartbeats after which "
                             "a process counts as dead (default: ZOO_DISTRIBUTED_TIMEOUT, "
                             "else 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/distributed_gan")
    args = parser.parse_args()
    if args.epochs < 1 or args.batch_size < 1 or args.logical_cpus < 1 or args.num_processes < 1:
        parser.error("--epochs, --batch-size, --logical-cpus and --num-processes must be >= 1")
    if not 0 <= args.process_id < args.num_processes:
        parser.error("--process-id must be in [0, --num-processes)")
    if args.timeout is not None and not args.timeout > 0:
        parser.error("--timeout must be > 0 seconds")
    backend = keras.backend.backend()

    images, labels = digits("all")
    # Whole batches only, so every backend and device count runs the same
    # steps (TensorFlow refuses a last batch smaller than its replicas).
    keep = len(images) // args.batch_size * args.batch_size
    images, labels = images[:keep], labels[:keep]
    with strategy_scope(backend, args.logical_cpus, args):
        model = ConditionalGAN(data_shape=images.shape[1:], num_classes=10,
                               filters=32, seed=args.seed)
        model.compile(optimizer={
            player: keras.optimizers.Adam(1e-3, beta_1=0.0, beta_2=0.9)
            for player in ("generator", "discriminator")
        })
    start = time.perf_counter()
    if backend == "jax" and args.num_processes > 1:
        # Several JAX processes: Keras shards a batched tf.data.Dataset over
        # them (not in-memory arrays).
        import tensorflow as tf

        data = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(
            len(images), seed=args.seed).batch(args.batch_size, drop_remainder=True)
        history = model.fit(data, epochs=args.epochs, verbose=2)
    else:
        history = model.fit(images, labels, batch_size=args.batch_size, epochs=args.epochs,
                            verbose=2)
    seconds = time.perf_counter() - start

    # Every process computes the samples (same seed, same weights); rank 0 writes.
    samples = model.sample(100, seed=args.seed, labels=np.arange(100) // 10 % 10)
    model.save_to_preset(os.path.join(args.out, "preset"))
    if distributed.is_chief():
        path = save_image_grid(samples, os.path.join(args.out, "samples.png"),
                               num_columns=10, scale=4)
        print(json.dumps({
            "backend": backend, "processes": distributed.process_count(),
            "epochs": args.epochs, "seconds": round(seconds, 1),
            "final_loss": round(float(history.history["loss"][-1]), 4),
            "skipped_updates": float(history.history["skipped_updates"][-1]),
            "grid": os.path.abspath(path),
        }))


if __name__ == "__main__":
    main()
