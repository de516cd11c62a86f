"""Which process this is in a multi-process run, on every backend.

- PyTorch: the `torchrun` process group (`zoo.core.torch_distributed`);
- JAX: `jax.process_index()` / `jax.process_count()` (after
  `jax.distributed.initialize`, or `keras.distribution.initialize`);
- TensorFlow: the `TF_CONFIG` task of `MultiWorkerMirroredStrategy` (the
  "chief" task, else worker 0, is the chief).

Rank 0 (the chief) alone writes files: presets (`save_to_preset`), `.keras`
files (`model.save`) and, on PyTorch, what callbacks write. One process (no
launcher) is rank 0 of 1.

`initialize` starts a multi-process run with a stated failure timeout (JAX:
`jax.distributed` with a heartbeat timeout, which `keras.distribution.
initialize` does not pass on; PyTorch: the `torchrun` process group).

Shared by the backends' data-parallel code: `model_fingerprint` (every
process must train the same model), `check_batch_split` (in-memory
batches the replicas can share), `tracker_results` (logs from trackers summed
over the replicas) and `without_distribution` (rank 0's writes).
"""

import contextlib
import hashlib
import inspect
import json
import os
import re

from zoo.core import backend_name


def process_count():
    """How many processes take part in training (1 without a launcher)."""
    name = backend_name()
    if name == "torch":
        from zoo.core import torch_distributed

        if torch_distributed.active():
            return torch_distributed.world_size()
        return int(os.environ.get("WORLD_SIZE", "1")) if torch_distributed.requested() else 1
    if name == "jax":
        import jax

        return jax.process_count()
    cluster = _tf_config().get("cluster", {})
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker")) or 1


def process_index():
    """This process's rank: 0 for the chief."""
    name = backend_name()
    if name == "torch":
        from zoo.core import torch_distributed

        return torch_distributed.rank()
    if name == "jax":
        import jax

        return jax.process_index()
    config = _tf_config()
    task = config.get("task", {})
    kind, index = task.get("type"), int(task.get("index", 0))
    if kind in (None, "chief"):
        return 0
    has_chief = bool(config.get("cluster", {}).get("chief"))
    return index + 1 if has_chief else index


# Seconds after which a silent process counts as dead on JAX when neither
# `timeout` nor `ZOO_DISTRIBUTED_TIMEOUT` says otherwise: JAX's own default.
JAX_DEFAULT_TIMEOUT = 100


def initialize(coordinator_address=None, num_processes=None, process_id=None, timeout=None):
    """Starts this process's part of a multi-process run, with a bound on
    how long the others wait for a process that died or hangs.

    - JAX: `jax.distributed.initialize(coordinator_address, num_processes,
      process_id)` with `heartbeat_timeout_seconds=timeout` (a JAX too old
      to take it refuses a `timeout`: a `ValueError`), then Keras's
      common random seed over the processes, as `keras.distribution.
      initialize` does (which takes no timeout: JAX's default, 100 s,
      applies there). Call it before anything else touches JAX. A process
      that exits or is killed makes the others' next collective fail at
      once (`jax.errors.JaxRuntimeError`, "Gloo all-reduce failed ...
      Connection closed by peer"); one that stops sending heartbeats
      (stopped, hung in native code, its machine lost) is declared dead
      after `timeout` seconds, and JAX's coordination service then ends
      every other process (SIGABRT, "Terminating process because the JAX
      distributed service detected fatal errors"). A surviving process
      also ends that way at exit, at most `timeout` seconds after the
      death.
    - PyTorch: joins the `torchrun` process group (its environment gives
      the addresses; the arguments must be None), each collective waiting
      at most `timeout` seconds. `fit` does this by itself, with
      `ZOO_DISTRIBUTED_TIMEOUT`.
    - TensorFlow: nothing; `MultiWorkerMirroredStrategy` starts from
      `TF_CONFIG` (its own health checks bound a dead worker).

    `timeout`: seconds (a positive number), else `ZOO_DISTRIBUTED_TIMEOUT`
    from the environment, else the engine's default (JAX 100, the zoo's
    PyTorch 600). Returns whether more than one process takes part.

    ```python
    from zoo.core import distributed

    distributed.initialize()  # one process: nothing to start
    assert distributed.process_count() == 1
    ```
    """
    name = backend_name()
    if timeout is None and os.environ.get("ZOO_DISTRIBUTED_TIMEOUT"):
        timeout = os.environ["ZOO_DISTRIBUTED_TIMEOUT"]
    if timeout is not None:
        try:
            timeout = float(timeout)
        except (TypeError, ValueError):
            timeout = -1.0
        if not timeout > 0:
            raise ValueError(
                "`timeout` (or ZOO_DISTRIBUTED_TIMEOUT) must be a positive number of "
                f"seconds; got {timeout!r}."
            )
    if name == "torch":
        from zoo.core import torch_distributed

        if (coordinator_address, num_processes, process_id) != (None, None, None):
            raise ValueError(
                "On PyTorch the process group comes from `torchrun`'s environment "
                "(MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK): pass only `timeout`, "
                f"not coordinator_address={coordinator_address!r}, "
                f"num_processes={num_processes!r}, process_id={process_id!r}."
            )
        return torch_distributed.initialize(timeout)
    if name == "tensorflow":
        return process_count() > 1
    if coordinator_address is None and num_processes in (None, 1) and not (
        os.environ.get("JAX_COORDINATOR_ADDRESS")
    ):
        return False  # one process: nothing to start
    import jax

    from zoo.core.compat import private

    options = {}
    if "heartbeat_timeout_seconds" in inspect.signature(jax.distributed.initialize).parameters:
        # JAX takes whole seconds; a fraction rounds up so that the bound holds.
        options["heartbeat_timeout_seconds"] = int(-(-float(timeout or JAX_DEFAULT_TIMEOUT) // 1))
    elif timeout is not None:
        raise ValueError(
            f"`timeout` (or ZOO_DISTRIBUTED_TIMEOUT) needs a JAX whose "
            f"`jax.distributed.initialize` takes `heartbeat_timeout_seconds`; JAX "
            f"{jax.__version__} does not (its coordination service's own timeout "
            f"applies). Upgrade JAX or leave `timeout` unset; got timeout={timeout!r}."
        )
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes,
        process_id=process_id, **options,
    )
    # What `keras.distribution.initialize` does after starting JAX: one
    # global seed on every process (unless the user set one).
    private("keras.jax.initialize_rng")()
    return jax.process_count() > 1


def is_chief():
    """Whether this process writes files (rank 0)."""
    return process_index() == 0


def _tf_config():
    try:
        return json.loads(os.environ.get("TF_CONFIG", "") or "{}")
    except ValueError:
        return {}


def model_fingerprint(model):
    """A 56-bit hash of what every process of a data-parallel run must share:
    the model's class, constructor arguments (but its seed and name), its
    variables' paths, shapes and dtypes, and its optimizer's."""
    config = {}
    try:
        config = {k: v for k, v in model.get_config().items() if k not in ("seed", "name")}
    except Exception:  # noqa: BLE001 -- a model without a config: its variables
        pass
    optimizer = getattr(model, "optimizer", None)

    def describe(variables):
        # Paths without Keras's automatic numbering ("dense_3", and the
        # optimizer's "dense_3_kernel_momentum"), which counts the layers a
        # process made before: equal models made after different histories
        # have equal descriptions (the shapes, in order, still tell
        # different structures apart).
        return [(re.sub(r"_\d+(?=[/_]|$)", "", v.path), tuple(v.shape), str(v.dtype))
                for v in variables]

    description = {
        "class": type(model).__name__,
        "config": config,
        "variables": describe(model.variables),
        "optimizer": [] if optimizer is None else describe(optimizer.variables),
    }
    text = json.dumps(description, sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "big")


def different_model_error(model, ranks, what="rank(s)"):
    """The `ValueError` every process raises when the processes `ranks`
    built another model than rank 0."""
    return ValueError(
        f"{type(model).__name__}: the model of {what} {list(ranks)} differs "
        "from rank 0's (class, constructor arguments, variables or "
        "optimizer); every process of a distributed `fit` must build the "
        "same model and compile it the same way."
    )


def check_batch_split(arguments, method, replicas, where, last_batch="even"):
    """Raises a `ValueError` unless every batch of in-memory `fit` or
    `evaluate` data splits over `replicas` as the backend needs: the
    `batch_size` a multiple of `replicas` (a data-parallel update equals
    the one-device update of the global batch only when the replicas hold
    equal shares), and the last, partial batch `"even"` (a multiple too)
    or `"any"` (TensorFlow weighs unequal shares by their examples, an
    empty one by 0; JAX in one process lays such a batch out whole on
    every device).
    `where` names the replicas in the message, e.g. "the 2 replicas of
    MirroredStrategy". Datasets and generators bring their own batches and
    are not checked."""
    import keras

    from zoo.core.compat import private

    array_data_adapter = private("keras.array_data_adapter")

    x = arguments.get("x")
    if replicas <= 1 or x is None or not array_data_adapter.can_convert_arrays(
        (x, arguments.get("y"), arguments.get("sample_weight"))
    ):
        return
    size = len(keras.tree.flatten(x)[0])
    if method == "fit" and arguments.get("validation_split"):
        size -= int(size * arguments["validation_split"])
    batch = arguments.get("batch_size") or 32
    last = size % batch
    if batch % replicas:
        raise ValueError(
            f"`{method}` splits every batch over {where}: `batch_size` "
            f"({batch}) must be a multiple of {replicas}. Pass a `batch_size` "
            "that is."
        )
    if last_batch == "even" and last % replicas:
        raise ValueError(
            f"`{method}` splits every batch over {where}: the last batch ({last} "
            f"of {size} examples in batches of {batch}) must be a multiple of "
            f"{replicas} too. Trim the data to a multiple of {replicas} (or feed "
            "a `tf.data.Dataset` batched with `drop_remainder=True`)."
        )


def check_dataset_split(arguments, method, replicas, where):
    """Raises a `ValueError` if `fit`'s or `evaluate`'s data is a
    `tf.data.Dataset` whose batch size, known in advance (batched with
    `drop_remainder=True`), is not a multiple of `replicas`: every batch
    would split unevenly. (A batch size known only per batch, the last
    partial batch of a dataset, is the backend's to handle.)"""
    x = arguments.get("x")
    if replicas <= 1 or x is None or type(x).__module__.split(".")[0] != "tensorflow":
        return
    import tensorflow as tf

    if not isinstance(x, tf.data.Dataset):
        return
    specs = [s for s in tf.nest.flatten(x.element_spec) if hasattr(s, "shape")]
    if not specs or specs[0].shape.rank is None or specs[0].shape.rank == 0:
        return
    batch = specs[0].shape[0]
    if batch is not None and batch % replicas:
        raise ValueError(
            f"`{method}` splits every batch over {where}: the dataset's batches "
            f"of {batch} examples (its `batch_size`) must be a multiple of "
            f"{replicas}. Batch it with a `batch_size` that is."
        )


def tracker_results(trackers, flat):
    """`{name: tracker.result()}` for `trackers` (`(name, metric)` pairs)
    with their variables read from `flat`, their values concatenated in
    order (summed over the replicas, say): each tracker's own `result()`
    (a mean, a sum, the GPT's geometric mean of perplexities) of totals
    other than its own, which stay untouched."""
    import keras
    from keras import ops

    mapping = []
    offset = 0
    for _, tracker in trackers:
        for variable in tracker.variables:
            size = 1
            for dim in variable.shape:
                size *= dim
            part = ops.reshape(flat[offset:offset + size], variable.shape)
            mapping.append((variable, ops.cast(part, variable.dtype)))
            offset += size
    with keras.StatelessScope(state_mapping=mapping):
        return {name: tracker.result() for name, tracker in trackers}


@contextlib.contextmanager
def without_distribution():
    """Rank 0 alone writes presets and `.keras` files; what it builds while
    writing (the preset's check that its config loads back) must not be
    laid out over every process's devices by a JAX `keras.distribution`,
    which would wait for the other processes. Elsewhere a no-op."""
    if backend_name() != "jax":
        yield
        return
    import keras

    current = keras.distribution.distribution()
    if current is None:
        yield
        return
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(current)
