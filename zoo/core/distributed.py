"""Which process this is in a multi-process run, on every backend.

- PyTorch: the `torchrun` process group (`zoo.core.torch_distributed`);
- JAX: `jax.process_index()` / `jax.process_count()` (after
  `jax.distributed.initialize`, or `keras.distribution.initialize`);
- TensorFlow: the `TF_CONFIG` task of `MultiWorkerMirroredStrategy` (the
  "chief" task, else worker 0, is the chief).

Rank 0 (the chief) alone writes files: presets (`save_to_preset`), `.keras`
files (`model.save`) and, on PyTorch, what callbacks write. One process (no
launcher) is rank 0 of 1.
"""

import json
import os

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


def is_chief():
    """Whether this process writes files (rank 0)."""
    return process_index() == 0


def _tf_config():
    try:
        return json.loads(os.environ.get("TF_CONFIG", "") or "{}")
    except ValueError:
        return {}
