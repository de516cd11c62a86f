"""PyTorch: data-parallel `fit` and `evaluate` across `torchrun` processes.

Keras 3.15's torch trainer has no data parallelism (Keras's main branch adds
a `DataParallel` built on `torch.distributed`); the zoo follows that design
with the released API: `torch.distributed` process group (gloo on CPU, NCCL
on CUDA), `batch_size` per process, the data sharded as
`DistributedSampler` does, metrics summed over ranks before they are read.
Under `torchrun` (its `WORLD_SIZE`, `RANK`, `MASTER_ADDR` and `MASTER_PORT`
in the environment) the first `fit` or `evaluate` joins the process group
itself, so a one-device script trains across processes unchanged.

What `fit` does on every rank (`prepare_fit`):

- checks that every rank built the same model (class, config, variables,
  optimizer state), else a `ValueError` on every rank;
- broadcasts rank 0's weights, non-trainable state and optimizer state, so
  every rank starts identical, then moves each rank's random generators to
  their own stream (`RANK_STREAM`): rank r's noise is reproducible from the
  seed and r, and differs between ranks;
- shards the data: each rank reads a disjoint part of every epoch, and all
  ranks run the same number of steps (a rank that ran out first would
  leave the others waiting in a collective);
- keeps the writing callbacks (checkpoints, TensorBoard, CSV, progress bar,
  the zoo's image callbacks) on rank 0 only.

Each `minimize` averages that player's gradients over the ranks, each
rank's counting for its batch's examples (`average_gradients`; in a traced
or compiled step the all-reduce is one operation of the graph), before its
optimizer applies them, so every rank applies the same update: one
process's with the global batch. BatchNorm: batch statistics are each rank's own
(as DDP without `SyncBatchNorm`); the moving statistics are averaged over
the ranks after every training step (`average_state`), so they stay equal
on every rank and reflect every rank's data. Logs: each training step's
(`reduce_step_logs`), the epoch's and `evaluate`'s (`reduce_logs`) are the
trackers' values over every rank's examples, the numbers one process logs
for the global batch.
"""

import contextlib
import datetime
import os
import threading

import optree
import torch
import torch.distributed as dist

# Rank r's random generators start r * RANK_STREAM seeds after rank 0's:
# PyTorch seeds each draw with (seed + counter), so the ranks' streams are
# disjoint for the first 2**24 draws of each generator.
RANK_STREAM = 2**24

# Seconds a collective waits for the other ranks before it fails (a rank
# that died or hangs): `ZOO_DISTRIBUTED_TIMEOUT` in the environment.
DEFAULT_TIMEOUT = 600


def requested():
    """Whether the process was started by `torchrun` (or an equivalent
    launcher) for more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def active():
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size():
    return dist.get_world_size() if active() else 1


def rank():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if requested() else 0


def _device():
    from zoo.core.compat import private

    return torch.device(private("keras.torch.get_device")())


def pin_device():
    """Under `torchrun` on CUDA, makes rank r use GPU `LOCAL_RANK` (called
    when `zoo.core.torch` is imported, before any variable exists)."""
    if requested() and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))


def initialize(timeout=None):
    """Joins the `torchrun` process group (gloo on CPU, NCCL on CUDA) if the
    environment asks for one and none is running. `timeout` (seconds, else
    `ZOO_DISTRIBUTED_TIMEOUT`, else 600) bounds how long a collective waits
    for a rank that died or hangs. Returns whether a group is active."""
    if requested() and not (dist.is_available() and dist.is_initialized()):
        if timeout is None:
            timeout = float(os.environ.get("ZOO_DISTRIBUTED_TIMEOUT", DEFAULT_TIMEOUT))
        backend = "nccl" if _device().type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout))
    return active()


# ---------------------------------------------------------------------------
# Collectives on the model's state.


# The examples of the batch the running training step holds on this rank
# (`examples`), which weigh its gradients in `average_gradients`.
_examples = threading.local()


@contextlib.contextmanager
def examples(data):
    """Around a training step: under `torchrun`, `average_gradients` weighs
    this rank's gradients by the examples of `data` (its first tensor's
    rows); otherwise nothing."""
    if not active():
        yield
        return
    leaves = [x for x in optree.tree_leaves(data) if isinstance(x, torch.Tensor) and x.ndim]
    saved = getattr(_examples, "count", None)
    _examples.count = int(leaves[0].shape[0]) if leaves else None
    try:
        yield
    finally:
        _examples.count = saved


def average_gradients(grads, traced=False):
    """The gradients of the global batch's mean loss from each rank's
    gradients of its own batch's mean (None entries stay None): each rank's
    counts for its examples (`examples`), so a partial batch on one rank
    (a dataset's last) weighs what it holds, and the update is one
    process's with the whole global batch; ranks with equal batches get
    the plain mean. One all-reduce per dtype over a flat buffer, the first
    carrying the examples' count; `traced`: inside a traced step, where
    each all-reduce is one operation of the graph (`zoo::all_reduce_sum_`)."""
    present = [k for k, g in enumerate(grads) if g is not None]
    out = list(grads)
    by_dtype = {}
    for k in present:
        by_dtype.setdefault(grads[k].dtype, []).append(k)
    count = getattr(_examples, "count", None)
    total = None
    for group, indices in enumerate(by_dtype.values()):
        parts = [grads[k].reshape(-1) for k in indices]
        if group == 0 and count is not None:
            parts.append(torch.ones(1, dtype=parts[0].dtype, device=parts[0].device))
        flat = torch.cat(parts)
        if count is not None:
            flat.mul_(count)
        if traced:
            torch.ops.zoo.all_reduce_sum_([flat])
        else:
            _all_reduce_sum_([flat])
        if count is None:
            flat.div_(world_size())
        else:
            if total is None:
                total = flat[-1:].clone()
            flat.div_(total.to(flat.dtype))
        offset = 0
        for k in indices:
            n = grads[k].numel()
            out[k] = flat[offset:offset + n].view_as(grads[k])
            offset += n
    return out


def _all_reduce_sum_(flats):
    for flat in flats:
        dist.all_reduce(flat)


@torch.library.custom_op("zoo::all_reduce_sum_", mutates_args=("flats",))
def _all_reduce_sum_op(flats: list[torch.Tensor]) -> None:
    _all_reduce_sum_(flats)


@_all_reduce_sum_op.register_fake
def _(flats):
    return None


def _broadcast(variables):
    if not variables:
        return
    values = [v.value.detach() for v in variables]
    by_dtype = {}
    for k, value in enumerate(values):
        by_dtype.setdefault(value.dtype, []).append(k)
    for indices in by_dtype.values():
        flat = torch.cat([values[k].reshape(-1) for k in indices])
        dist.broadcast(flat, src=0)
        offset = 0
        for k in indices:
            n = values[k].numel()
            variables[k].assign(flat[offset:offset + n].view_as(values[k]))
            offset += n


def _averaged_state(model):
    """The non-trainable floating-point variables of the model's layers
    (BatchNorm moving statistics), not the seed states."""
    seeds = {id(s) for s in model._seed_states()}
    return [
        v for v in model.non_trainable_variables
        if id(v) not in seeds and v.value.dtype.is_floating_point
    ]


def average_state(model):
    """Averages the BatchNorm moving statistics (every non-trainable float
    variable) over the ranks, after a training step."""
    variables = model.__dict__.get("_averaged_state_cache")
    if variables is None:
        variables = _averaged_state(model)
        object.__setattr__(model, "_averaged_state_cache", variables)
    if not variables:
        return
    with torch.no_grad():
        flat = torch.cat([v.value.detach().reshape(-1).float() for v in variables])
        dist.all_reduce(flat)
        flat /= world_size()
        offset = 0
        for v in variables:
            n = v.value.numel()
            v.assign(flat[offset:offset + n].view_as(v.value).to(v.value.dtype))
            offset += n


def _summed_trackers(model, logs):
    """The trackers behind `logs` and their variables summed over the ranks
    (one all-reduce): a `Mean`'s totals and counts over every rank's
    examples; a `Sum` (the skipped updates, which every rank counts alike,
    deciding together) divided by the ranks again."""
    trackers = [(name, model._trackers[name]) for name in sorted(logs) if name in model._trackers]
    if not trackers:
        return [], None
    with torch.no_grad():
        parts = []
        for _, tracker in trackers:
            flat = torch.cat([v.value.detach().reshape(-1).to(torch.float64)
                              for v in tracker.variables])
            parts.append(flat / world_size() if len(tracker.variables) == 1 else flat)
        flat = torch.cat(parts).to(_device())
        dist.all_reduce(flat)
    return trackers, flat


def reduce_logs(model, logs):
    """`logs` with each tracker's value over every rank's examples, as
    floats (Keras's epoch-end and `evaluate` logs)."""
    if not active() or not isinstance(logs, dict):
        return logs
    from zoo.core import distributed

    trackers, flat = _summed_trackers(model, logs)
    if not trackers:
        return logs
    results = distributed.tracker_results(trackers, flat)
    return {**logs, **{name: float(value) for name, value in results.items()}}


def reduce_step_logs(model, logs):
    """A training step's `logs` with each tracker's running value over
    every rank's examples so far, as one process with the global batch logs
    it: every rank's callbacks see the same numbers (a `TerminateOnNaN` or
    `EarlyStopping` decides alike on every rank, so none is left waiting in
    a collective). The trackers keep their own counts; logs that are not
    trackers (gradient norms, taken of the averaged gradients) are equal on
    every rank already."""
    if not active() or not isinstance(logs, dict):
        return logs
    from zoo.core import distributed

    trackers, flat = _summed_trackers(model, logs)
    if not trackers:
        return logs
    return {**logs, **distributed.tracker_results(trackers, flat)}


def check_same_model(model):
    """Raises `ValueError` on every rank unless all ranks hold the same
    model (class, config, variables and optimizer state shapes)."""
    from zoo.core import distributed

    mine = torch.tensor([distributed.model_fingerprint(model)], dtype=torch.int64, device=_device())
    gathered = [torch.zeros_like(mine) for _ in range(world_size())]
    dist.all_gather(gathered, mine)
    prints = [int(g.item()) for g in gathered]
    different = [r for r, p in enumerate(prints) if p != prints[0]]
    if different:
        raise distributed.different_model_error(model, different)


def synchronize(model):
    """Rank 0's weights, state and optimizer state on every rank, then each
    rank's random generators on their own stream."""
    optimizer = getattr(model, "optimizer", None)
    variables = list(model.variables)
    if optimizer is not None:
        seen = {id(v) for v in variables}
        variables += [v for v in optimizer.variables if id(v) not in seen]
    with torch.no_grad():
        _broadcast(variables)
        offset = rank() * RANK_STREAM
        for state in model._seed_states():
            value = state.value.detach().to(torch.int64)
            value[0] = (value[0] + offset) % 2**31
            state.assign(value.to(state.value.dtype))
