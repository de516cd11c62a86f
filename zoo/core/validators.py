"""Eager checks of what users hand the zoo: seeds, class labels, data ranges,
and the data `fit` and `evaluate` get.

Every check raises a `ValueError` that names the argument and says what was
expected. They run on NumPy values, outside compiled steps: a traced step
cannot raise on a value on JAX, so `GenerativeModel.fit` and `evaluate`
check arrays in full before the first step (see `inspect_inputs`), and
every batch of a generator, `tf.data.Dataset`, `keras.utils.PyDataset` or
PyTorch `DataLoader` on the host as it is read (see `BatchChecks`). Any
family may call them (the GAN, VAE, flow and diffusion families do).
"""

import contextlib
import functools
import itertools
import numbers
import types
import uuid
import warnings

import keras
import numpy as np

# The largest seed every backend's random generators accept: PyTorch keeps
# Keras seeds in int32, JAX in uint32, TensorFlow in int64. One range for
# all, so a seed that works on one backend works on every other.
MAX_SEED = 2**31 - 1


def check_seed(seed, name="seed", allow_none=True):
    """`seed` as a Python int in `[0, MAX_SEED]`, or None where allowed.

    The same range on every backend (PyTorch's generators overflow past
    `2**31 - 1`, JAX's below 0), so a seed means the same draws everywhere
    and never fails on one backend only.
    """
    if seed is None and allow_none:
        return None
    if (
        isinstance(seed, (bool, np.bool_))
        or not isinstance(seed, numbers.Integral)
        or not 0 <= seed <= MAX_SEED
    ):
        allowed = "None or an integer" if allow_none else "an integer"
        raise ValueError(
            f"`{name}` must be {allowed} in [0, {MAX_SEED}] (2**31 - 1, the "
            f"range every backend accepts); received {name}={seed!r}."
        )
    return int(seed)


def derive_seed(seed, offset):
    """A seed for a part of something seeded with `seed` (None stays None),
    kept inside `[0, MAX_SEED]`."""
    if seed is None:
        return None
    return int(seed + offset) % (MAX_SEED + 1)


def to_numpy(value):
    """A NumPy copy of an array, a backend tensor or a `tf.data` element."""
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(keras.ops.convert_to_numpy(value))
    except Exception:  # a tensor of another framework (tf.data on JAX, ...)
        if hasattr(value, "detach"):  # a torch tensor from a DataLoader
            return value.detach().cpu().numpy()
        return np.asarray(value)


def check_labels(labels, num_classes, name="labels"):
    """`labels` as an int32 NumPy array of classes in `[0, num_classes)`.

    Integer-valued floats (`1.0`) are accepted, as Keras's own losses do;
    fractions, NaN and classes outside the range are a `ValueError` that
    names the argument and shows the offending values.
    """
    array = to_numpy(labels)
    if array.dtype.kind == "b" or array.dtype.kind not in "iuf":
        raise ValueError(
            f"`{name}` must be integer class labels in [0, {num_classes}); "
            f"received dtype {array.dtype}."
        )
    if array.dtype.kind == "f":
        fractional = ~np.isfinite(array) | (array != np.round(array))
        if np.any(fractional):
            raise ValueError(
                f"`{name}` must be integer class labels in [0, {num_classes}); "
                f"received non-integer values {_some(array[fractional])}."
            )
    outside = (array < 0) | (array >= num_classes)
    if np.any(outside):
        raise ValueError(
            f"`{name}` must be class labels in [0, {num_classes}) "
            f"(num_classes={num_classes}); received {_some(array[outside])}."
        )
    return array.astype(np.int32)


def _some(values, limit=5):
    unique = np.unique(values)
    shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in unique[:limit].tolist())
    return shown + (f" and {len(unique) - limit} more" if len(unique) > limit else "")


def check_data_range(x, data_range, owner, name="x"):
    """Refuses data clearly outside the range `(low, high)` a model documents,
    warns for data a little outside it.

    "Clearly outside" is beyond the range by more than its own width (data
    in [0, 255] for a model of [-1, 1]): such data train to a loss of 1e14
    or NaN and the run is wasted, so it is a `ValueError` before the first
    step, with the rescaling to use. Data only a little outside (up to one
    width) may be deliberate (augmented or jittered data), so a warning.
    NaN and Inf are left to the non-finite-step guard of training.
    """
    if data_range is None:
        return
    x = to_numpy(x)
    if x.size == 0 or x.dtype.kind not in "iuf":
        return
    low, high = (float(v) for v in data_range)
    # Two passes over data in range (every batch of a source is checked);
    # NaN or Inf make them fail, and only then are finite values picked.
    lo, hi = float(x.min()), float(x.max())
    if lo >= low and hi <= high:
        return
    if x.dtype.kind == "f" and not (np.isfinite(lo) and np.isfinite(hi)):
        finite = x[np.isfinite(x)]
        if finite.size == 0:
            return
        lo, hi = float(finite.min()), float(finite.max())
    width = high - low
    if lo >= low and hi <= high:
        return
    where = f"{owner} expects `{name}` in [{low:g}, {high:g}]; the data span [{lo:g}, {hi:g}]"
    if lo < low - width or hi > high + width:
        hint = ""
        if lo >= 0 and hi <= 255 and hi > 1 and (low, high) == (-1.0, 1.0):
            hint = " For 8-bit images use `x / 127.5 - 1`."
        raise ValueError(
            f"{where}, far outside that range: rescale the data to it.{hint}"
        )
    warnings.warn(
        f"{where}, a little outside that range; the model's likelihood and "
        "samples assume the range.",
        stacklevel=4,
    )


# ----------------------------------------------------------------------
# The inputs of `fit` and `evaluate`: a first look before training, then
# every batch of a data source as it is read.


def check_data(x, shape, dtype, data_range, owner):
    """`GenerativeModel.validate_data`: `x` must have examples of `shape`
    (None: anything goes) and a `dtype` kind ("float" or "int"); NumPy
    values are also checked against `data_range` (`check_data_range`).
    `owner` names the model in the errors."""
    if shape is None or not hasattr(x, "shape"):
        return
    expected = tuple(shape)
    got = tuple(x.shape[1:])
    if len(got) != len(expected) or any(g is not None and g != e for g, e in zip(got, expected)):
        raise ValueError(
            f"{owner} expects data of shape (batch, {', '.join(map(str, expected))}), "
            f"received data of shape {tuple(x.shape)}."
        )
    received = keras.backend.standardize_dtype(x.dtype)
    if dtype in ("float", "int") and dtype not in received:  # "int" in "uint8" too
        raise ValueError(f"{owner} expects {dtype} data, received dtype {received}.")
    if isinstance(x, np.ndarray):
        check_data_range(x, data_range, owner)


def _is_array(value):
    leaves = keras.tree.flatten(value) if value is not None else []
    return bool(leaves) and all(
        hasattr(leaf, "shape") and hasattr(leaf, "dtype") for leaf in leaves
    )


def inspect_inputs(check, x, y=None, sample_weight=None, name="x"):
    """Runs `check(x, y)` (NumPy arrays) eagerly on what `fit` or `evaluate`
    is given, and returns the `x` to hand to Keras.

    - Arrays and backend tensors (`x`, `y`): checked in full, once, before
      the first step. Zero examples is a `ValueError`.
    - A Python generator: every batch is checked as it is drawn (the
      generator is wrapped; the check is NumPy work on the host).
    - A `tf.data.Dataset`, a `keras.utils.PyDataset` or a PyTorch
      `DataLoader`: the first batch is checked before training (the data
      source is read once more for it), and a source without any batch is
      a `ValueError`. `BatchChecks.wrap` then checks every batch as it is
      read (`GenerativeModel.fit` and `evaluate` do both).

    `check` may be a `BatchChecks`: a refused batch of a generator is then
    reported by `BatchChecks.reraise` as the `ValueError` it is.
    """
    if _is_array(x):
        leaves = keras.tree.flatten(x)
        if any(len(leaf.shape) == 0 or leaf.shape[0] == 0 for leaf in leaves):
            raise ValueError(
                f"`{name}` holds no examples (shape "
                f"{tuple(leaves[0].shape)}); `fit` and `evaluate` need at "
                "least one."
            )
        check(keras.tree.map_structure(to_numpy, x), None if y is None else to_numpy(y))
        return x
    if isinstance(x, types.GeneratorType):
        checks = check if isinstance(check, BatchChecks) else BatchChecks(check)
        return _checked_generator(checks, x, name)
    first = _first_batch(x, name)
    if first is not None:
        bx, by, _ = keras.utils.unpack_x_y_sample_weight(first)
        check(keras.tree.map_structure(to_numpy, bx), None if by is None else to_numpy(by))
    return x


def is_batch_source(x):
    """Whether `x` is a data source whose batches `BatchChecks.wrap` checks:
    a `tf.data.Dataset`, a `keras.utils.PyDataset` or a PyTorch
    `DataLoader`."""
    return _source_kind(x) is not None


def _source_kind(x):
    if isinstance(x, keras.utils.PyDataset):
        return "PyDataset"
    if hasattr(x, "element_spec") and hasattr(x, "map") and hasattr(x, "enumerate"):
        return "tf.data.Dataset"
    # (By name, as Keras's own adapter does: no torch import for the others.)
    if any(
        cls.__name__ == "DataLoader" and cls.__module__.startswith("torch.utils.data")
        for cls in type(x).__mro__
    ):
        return "DataLoader"
    return None


class _RefusedBatch(ValueError):
    """A batch that failed the model's checks. Unpickling it (a `PyDataset`
    worker process sends it back) records it in the process that receives
    it, so that `BatchChecks.reraise` finds it there too."""

    def __init__(self, message, token):
        super().__init__(message)
        self.token = token

    def __reduce__(self):
        return _refused, (str(self), self.token)


# The first refused batch of each `fit` or `evaluate` call (by token).
_REFUSED = {}


def _refused(message, token):
    error = _RefusedBatch(message, token)
    _REFUSED.setdefault(token, error)
    return error


class BatchChecks:
    """`check(x, y)` (NumPy arrays) on every batch of a data source, for
    one call of `fit` or `evaluate`.

    `wrap(x, name)` gives a source that yields the same batches, each
    checked as it is read: a `tf.data.Dataset` is mapped through a
    `tf.numpy_function`; a `keras.utils.PyDataset` is wrapped by a
    `PyDataset` that checks in `__getitem__` (in Keras's worker threads or
    processes, with the same `workers`, `use_multiprocessing` and
    `max_queue_size`); a PyTorch `DataLoader` is rebuilt over the same
    dataset, sampler, collate function and worker settings, checking each
    batch in the main process after collation. Lengths, cardinality,
    shuffling and `on_epoch_end` are those of the source, and the user's
    object is left unchanged.

    Where a batch is refused, the backend may report it wrapped in its own
    error (TensorFlow runs `tf.data` functions and Python generators inside
    its runtime); `reraise()` turns any error raised while the checked
    source was read back into the `ValueError` that names the argument and
    the batch.
    """

    def __init__(self, check):
        self.check = check
        self.token = uuid.uuid4().hex

    def __call__(self, x, y):
        self.check(x, y)

    def batch(self, batch, index, name):
        """Checks one batch (`x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`)
        of `name`; raises a `ValueError` naming it and the batch index."""
        if isinstance(batch, list):
            batch = tuple(batch)
        bx, by, _ = keras.utils.unpack_x_y_sample_weight(batch)
        try:
            self.check(keras.tree.map_structure(to_numpy, bx), None if by is None else to_numpy(by))
        except ValueError as error:
            raise _refused(f"Batch {index} of `{name}`: {error}", self.token) from None

    def wrap(self, x, name="x"):
        """`x` checked batch by batch (see the class); other data unchanged."""
        kind = _source_kind(x)
        if kind == "tf.data.Dataset":
            return _checked_dataset(self, x, name)
        if kind == "PyDataset":
            return _CheckedPyDataset(x, self, name)
        if kind == "DataLoader":
            return _checked_loader(self, x, name)
        return x

    @contextlib.contextmanager
    def reraise(self):
        """Around `fit` or `evaluate`: an error raised because a batch was
        refused comes out as that batch's `ValueError`."""
        try:
            yield
        except Exception as error:
            refused = _REFUSED.get(self.token)
            if refused is None or refused is error:
                raise
            raise refused from None
        finally:
            _REFUSED.pop(self.token, None)


def _checked_generator(checks, generator, name):
    try:
        first = next(generator)
    except StopIteration:
        raise ValueError(f"`{name}` (a generator) yields no batches.") from None

    def checked():
        for index, batch in enumerate(itertools.chain([first], generator)):
            checks.batch(batch, index, name)
            yield batch

    return checked()


def _checked_dataset(checks, dataset, name):
    """`dataset` with every element checked by a `tf.numpy_function` (a
    graph check cannot show the offending values, and a check in the
    compiled step cannot raise on JAX). A dataset with ragged or sparse
    parts is left as it is (its first batch was checked)."""
    import tensorflow as tf

    spec = dataset.element_spec
    if not all(isinstance(s, tf.TensorSpec) for s in tf.nest.flatten(spec)):
        return dataset  # ragged or sparse parts: the first batch only

    def check(index, *arrays):
        checks.batch(tf.nest.pack_sequence_as(spec, list(arrays)), int(index), name)
        return np.bool_(True)

    def checked(index, *element):
        element = element[0] if len(element) == 1 else element
        passed = tf.numpy_function(
            check, [index] + tf.nest.flatten(element), Tout=tf.bool, stateful=True,
            name="zoo_check_batch",
        )
        # The element waits for its check (Identity: no copy).
        with tf.control_dependencies([passed]):
            return tf.nest.map_structure(tf.identity, element)

    return dataset.enumerate().map(checked)


class _CheckedPyDataset(keras.utils.PyDataset):
    """The batches of a `PyDataset`, each checked in `__getitem__`."""

    def __init__(self, dataset, checks, name):
        super().__init__(
            workers=dataset.workers,
            use_multiprocessing=dataset.use_multiprocessing,
            max_queue_size=dataset.max_queue_size,
        )
        self.dataset = dataset
        self.checks = checks
        self.name = name

    @property
    def num_batches(self):
        return self.dataset.num_batches

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        batch = self.dataset[index]
        self.checks.batch(batch, index, self.name)
        return batch

    def on_epoch_begin(self):
        self.dataset.on_epoch_begin()

    def on_epoch_end(self):
        self.dataset.on_epoch_end()


@functools.lru_cache(maxsize=None)
def _checked_loader_class():
    import torch

    class CheckedDataLoader(torch.utils.data.DataLoader):
        """A `DataLoader` whose batches are checked in the main process, after
        collation (workers see only the dataset and collate function, as
        with the loader it copies)."""

        def __iter__(self):
            for index, batch in enumerate(super().__iter__()):
                self._zoo_checks.batch(batch, index, self._zoo_name)
                yield batch

    return CheckedDataLoader


def _checked_loader(checks, loader, name):
    """A `CheckedDataLoader` reading what `loader` reads, as `loader` reads
    it: the same dataset, sampler (or batch sampler), batching, collate
    function and worker settings."""
    import torch

    settings = dict(
        num_workers=loader.num_workers, collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory, timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator, persistent_workers=loader.persistent_workers,
        pin_memory_device=loader.pin_memory_device,
    )
    if loader.num_workers > 0:
        settings["prefetch_factor"] = loader.prefetch_factor
    if hasattr(loader, "in_order"):
        settings["in_order"] = loader.in_order
    if isinstance(loader.dataset, torch.utils.data.IterableDataset):
        settings.update(batch_size=loader.batch_size, drop_last=loader.drop_last)
    elif loader.batch_size is None and loader.batch_sampler is not None:
        settings.update(batch_sampler=loader.batch_sampler, batch_size=None)
    else:
        settings.update(
            sampler=loader.sampler, batch_size=loader.batch_size, drop_last=loader.drop_last
        )
    checked = _checked_loader_class()(loader.dataset, **settings)
    # (Plain attributes: DataLoader guards only its own after __init__.)
    checked._zoo_checks = checks
    checked._zoo_name = name
    return checked


def _first_batch(x, name):
    """The first batch of a dataset-like `x`, or None where it cannot be read
    without consuming it."""
    batch = None
    if hasattr(x, "take") and hasattr(x, "element_spec"):  # tf.data.Dataset
        batch = next(iter(x.take(1)), None)
    elif isinstance(x, keras.utils.PyDataset):
        try:
            if x.num_batches == 0:
                batch = None
            else:
                batch = x[0]
        except (IndexError, TypeError, NotImplementedError):
            return None
    elif hasattr(x, "dataset") and hasattr(x, "batch_size") and hasattr(x, "__iter__"):
        batch = next(iter(x), None)  # a torch DataLoader
    else:
        return None
    if batch is None:
        raise ValueError(f"`{name}` yields no batches; `fit` and `evaluate` need at least one.")
    if isinstance(batch, list):
        batch = tuple(batch)
    return batch
