"""Eager checks of what users hand the zoo: seeds, class labels, data ranges,
and the first look at the data `fit` and `evaluate` get.

Every check raises a `ValueError` that names the argument and says what was
expected. They run on NumPy values, outside compiled steps: a traced step
cannot raise on a value on JAX, so `GenerativeModel.fit` and `evaluate`
check arrays in full before the first step (see `inspect_inputs`). Any
family may call them (the GAN, VAE, flow and diffusion families do).
"""

import itertools
import numbers
import types
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
    finite = x[np.isfinite(x)] if x.dtype.kind == "f" else x
    if finite.size == 0:
        return
    low, high = (float(v) for v in data_range)
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
# The first look at the inputs of `fit` and `evaluate`.


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
      source is read once more for it); later batches are not, as a check
      inside the compiled step cannot raise on JAX. A source without any
      batch is a `ValueError`.
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
        return _checked_generator(check, x, name)
    first = _first_batch(x, name)
    if first is not None:
        bx, by, _ = keras.utils.unpack_x_y_sample_weight(first)
        check(keras.tree.map_structure(to_numpy, bx), None if by is None else to_numpy(by))
    return x


def _checked_generator(check, generator, name):
    try:
        first = next(generator)
    except StopIteration:
        raise ValueError(f"`{name}` (a generator) yields no batches.") from None

    def checked():
        for batch in itertools.chain([first], generator):
            bx, by, _ = keras.utils.unpack_x_y_sample_weight(
                tuple(batch) if isinstance(batch, list) else batch
            )
            check(keras.tree.map_structure(to_numpy, bx), None if by is None else to_numpy(by))
            yield batch

    return checked()


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
