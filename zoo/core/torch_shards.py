"""PyTorch data parallelism: each rank's shard of `fit`'s and `evaluate`'s
data, and the callbacks that only rank 0 runs (`zoo.core.torch_distributed`
has the collectives).

Sharding follows `torch.utils.data.DistributedSampler`: `batch_size` is per
process; in every epoch, the examples (shuffled with a seed and the epoch
number that every rank shares) are dealt to the ranks in turn, rank r taking
examples r, r + N, r + 2N, ... A training epoch is padded with its first
examples up to a multiple of N, so every rank runs the same number of steps;
evaluation is not padded (every example counts once). Unshuffled, the ranks'
k-th batches together are the k-th batch of `batch_size * N` on one device.
"""

import math
import warnings

import keras
import numpy as np

from zoo.core import torch_distributed as td


class ShardedArrays(keras.utils.PyDataset):
    """This rank's batches of in-memory `(x, y, sample_weight)`."""

    def __init__(self, data, batch_size, shuffle, pad, seed=0):
        super().__init__()
        self.data = data
        self.size = len(keras.tree.flatten(data)[0])
        self.batch_size = int(batch_size or 32)
        self.shuffle = bool(shuffle)
        self.pad = pad
        self.seed = seed
        self.epoch = 0
        self.world, self.rank = td.world_size(), td.rank()
        self._indices = self._deal()

    def _deal(self):
        order = np.arange(self.size)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        if self.pad:
            total = math.ceil(self.size / self.world) * self.world
            order = np.concatenate([order, order[: total - self.size]]) if total > self.size else order
        return order[self.rank::self.world]

    def __len__(self):
        return math.ceil(len(self._indices) / self.batch_size)

    def __getitem__(self, index):
        indices = self._indices[index * self.batch_size:(index + 1) * self.batch_size]
        picked = list(
            None if part is None else keras.tree.map_structure(lambda a: np.asarray(a)[indices], part)
            for part in self.data
        )
        while picked[-1] is None:  # (x,), (x, y) or (x, y, sample_weight)
            picked.pop()
        return tuple(picked)

    def on_epoch_end(self):
        self.epoch += 1
        self._indices = self._deal()


class ShardedBatches(keras.utils.PyDataset):
    """Every N-th batch of a `PyDataset`, from this rank's: batches r, r + N,
    ... (for training, as many on every rank: the epoch is padded with its
    first batches to a multiple of N, as `DistributedSampler` pads with
    examples, so none is left out)."""

    def __init__(self, dataset, pad):
        super().__init__(
            workers=getattr(dataset, "workers", 1),
            use_multiprocessing=getattr(dataset, "use_multiprocessing", False),
            max_queue_size=getattr(dataset, "max_queue_size", 10),
        )
        self.dataset = dataset
        self.pad = pad
        self.world, self.rank = td.world_size(), td.rank()

    def __len__(self):
        n = len(self.dataset)
        return math.ceil(n / self.world) if self.pad else max(0, math.ceil((n - self.rank) / self.world))

    def __getitem__(self, index):
        return self.dataset[(index * self.world + self.rank) % len(self.dataset)]

    def on_epoch_begin(self):
        getattr(self.dataset, "on_epoch_begin", lambda: None)()

    def on_epoch_end(self):
        getattr(self.dataset, "on_epoch_end", lambda: None)()


def _strided_sampler(size):
    import torch

    class Strided(torch.utils.data.Sampler):
        def __iter__(self):
            return iter(range(td.rank(), size, td.world_size()))

        def __len__(self):
            return len(range(td.rank(), size, td.world_size()))

    return Strided()


def _shard_loader(loader, training):
    """A torch `DataLoader` over this rank's share: `DistributedSampler` for
    training (padded, shuffled if the loader was), every N-th example for
    evaluation; an `IterableDataset` is dealt out example by example."""
    import torch

    dataset = loader.dataset
    settings = dict(
        batch_size=loader.batch_size, num_workers=loader.num_workers,
        collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
        drop_last=loader.drop_last, timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
    )
    if isinstance(dataset, torch.utils.data.IterableDataset):
        warnings.warn(
            "An IterableDataset is dealt out example by example (example i to "
            "rank i % N); every rank must end up with the same number of "
            "batches, or the ranks stop with a timeout error.", stacklevel=3,
        )

        class Dealt(torch.utils.data.IterableDataset):
            def __iter__(self):
                for i, item in enumerate(dataset):
                    if i % td.world_size() == td.rank():
                        yield item

        return torch.utils.data.DataLoader(Dealt(), **settings)
    if training:
        sampler = torch.utils.data.distributed.DistributedSampler(
            dataset, num_replicas=td.world_size(), rank=td.rank(),
            shuffle=isinstance(loader.sampler, torch.utils.data.RandomSampler),
        )
    else:
        sampler = _strided_sampler(len(dataset))
    return torch.utils.data.DataLoader(dataset, sampler=sampler, **settings)


class _SamplerEpochs(keras.callbacks.Callback):
    """`DistributedSampler.set_epoch` at every epoch: a new shuffle each
    epoch, the same on every rank."""

    def __init__(self, sampler):
        super().__init__()
        self.sampler = sampler

    def on_epoch_begin(self, epoch, logs=None):
        self.sampler.set_epoch(epoch)


def shard(x, y, sample_weight, batch_size, shuffle, training, seed=0):
    """This rank's share of `fit`'s or `evaluate`'s data: `(x, y,
    sample_weight, batch_size, extra callbacks)`; `training` pads the epoch
    so every rank runs as many steps."""
    import torch
    from zoo.core.compat import private

    data_adapters = private("keras.data_adapters")
    array_data_adapter = private("keras.array_data_adapter")

    world = td.world_size()
    if array_data_adapter.can_convert_arrays((x, y, sample_weight)):
        size = len(keras.tree.flatten(x)[0])
        if training and size < world:
            raise ValueError(
                f"The training data has {size} examples, fewer than the "
                f"{world} processes: every process needs at least one."
            )
        data = (x,) if y is None and sample_weight is None else (x, y, sample_weight)
        data = keras.tree.map_structure(
            lambda a: a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a, data
        )
        return ShardedArrays(data, batch_size, shuffle and training, pad=training, seed=seed), None, None, None, []
    if data_adapters.is_tf_dataset(x):
        if training:
            batches = int(x.cardinality())
            if batches >= 0:
                # As many batches on every rank: the epoch padded with its
                # first batches, as `DistributedSampler` pads with examples
                # (none is left out).
                pad = -batches % world
                if pad:
                    x = x.concatenate(x.take(pad))
            else:
                _warn_unknown_length("a tf.data.Dataset of unknown length")
        return x.shard(world, td.rank()), y, sample_weight, batch_size, []
    if isinstance(x, keras.utils.PyDataset):
        return ShardedBatches(x, pad=training), y, sample_weight, batch_size, []
    if isinstance(x, torch.utils.data.DataLoader):
        loader = _shard_loader(x, training)
        sampler = getattr(loader, "sampler", None)
        extra = [_SamplerEpochs(sampler)] if hasattr(sampler, "set_epoch") else []
        return loader, y, sample_weight, batch_size, extra
    if x is not None:
        _warn_unknown_length(f"{type(x).__name__} data")
    return x, y, sample_weight, batch_size, []


def _warn_unknown_length(what):
    warnings.warn(
        f"Distributed fit over {what}: the zoo cannot shard it, so each "
        "process reads it whole as its own shard. Make each process yield "
        "its own data, with the same number of batches on every process "
        "(else the others stop with a timeout error).",
        stacklevel=4,
    )


# Callbacks that write files or print: rank 0 runs them, the others not.
def _writes(callback):
    writers = (
        keras.callbacks.ModelCheckpoint, keras.callbacks.TensorBoard,
        keras.callbacks.CSVLogger, keras.callbacks.ProgbarLogger,
    )
    return isinstance(callback, writers) or getattr(callback, "chief_only", False)


class _ReadOnlyBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` on ranks other than 0: restores rank 0's backup at
    the start, writes and deletes nothing."""

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


def rank_callbacks(callbacks):
    """`callbacks` as this rank runs them: all on rank 0; elsewhere without
    the writing ones, and `BackupAndRestore` read-only."""
    if td.rank() == 0:
        return list(callbacks)
    kept = []
    for callback in callbacks:
        if _writes(callback):
            continue
        if isinstance(callback, keras.callbacks.BackupAndRestore):
            clone = object.__new__(_ReadOnlyBackup)
            clone.__dict__.update(callback.__dict__)
            callback = clone
        kept.append(callback)
    return kept


class AverageState(keras.callbacks.Callback):
    """After every training batch, the BatchNorm moving statistics averaged
    over the ranks (`torch_distributed.average_state`)."""

    def on_train_batch_end(self, batch, logs=None):
        td.average_state(self._model)


def prepare(model, arguments, training):
    """`fit`'s (`training`) or `evaluate`'s arguments for this rank of a
    distributed run; unchanged where no process group is requested."""
    if not td.initialize():
        return arguments
    arguments = dict(arguments)
    if training:
        td.check_same_model(model)
        td.synchronize(model)
        x, y, sw = arguments.get("x"), arguments.get("y"), arguments.get("sample_weight")
        split = arguments.get("validation_split") or 0.0
        if split and arguments.get("validation_data") is None:
            from zoo.core.compat import private

            array_slicing = private("keras.array_slicing")

            (x, y, sw), arguments["validation_data"] = array_slicing.train_validation_split(
                (x, y, sw), validation_split=split
            )
            arguments["validation_split"] = 0.0
    else:
        x, y, sw = arguments.get("x"), arguments.get("y"), arguments.get("sample_weight")
    x, y, sw, batch_size, extra = shard(
        x, y, sw, arguments.get("batch_size"), arguments.get("shuffle", True), training,
        seed=int(model.seed or 0) if isinstance(getattr(model, "seed", None), int) else 0,
    )
    # (A PyDataset brings its own batches: no `batch_size`.)
    arguments.update(
        x=x, y=y, sample_weight=sw,
        batch_size=None if isinstance(x, ShardedArrays) else batch_size,
    )
    validation = arguments.get("validation_data") if training else None
    if validation is not None:
        vx, vy, vsw = keras.utils.unpack_x_y_sample_weight(validation) if isinstance(validation, tuple) else (validation, None, None)
        vx, vy, vsw, _, _ = shard(
            vx, vy, vsw, arguments.get("validation_batch_size") or batch_size or 32,
            False, False,
        )
        arguments["validation_data"] = vx if vy is None and vsw is None else (vx, vy, vsw)
        if isinstance(vx, ShardedArrays):
            arguments["validation_batch_size"] = None
    if td.rank() != 0:
        arguments["verbose"] = 0
    callbacks = arguments.get("callbacks")
    if isinstance(callbacks, keras.callbacks.CallbackList):
        return arguments
    callbacks = rank_callbacks(list(callbacks or [])) + extra
    if training and td._averaged_state(model):
        callbacks.insert(0, AverageState())
    arguments["callbacks"] = callbacks
    return arguments
