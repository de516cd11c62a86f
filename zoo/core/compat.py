"""The private Keras, PyTorch and TensorFlow names `zoo.core` uses, in one place.

Each name below is outside its library's public API, so any release may
move or remove it. The core reaches them only through `private(key)`,
which imports the name once and caches it; where the installed release
lacks it, `private` raises `CompatError` naming the missing module or
attribute, the installed version and what the zoo needs it for, instead of
an `AttributeError` deep inside a training step. Private *attributes of
objects* (`Variable._value`, ...) are listed in `ATTRIBUTES` and checked on
real objects by `missing()`. `tests/test_compat.py` resolves every entry on
each backend, so CI names any name a new release moved; `python -m
zoo.core.compat` does the same for the installed versions.
"""

import contextlib
import importlib

# key: (backend that needs it, or None for any; module; attribute path
# inside it, or None for the module itself; what the zoo uses it for).
NAMES = {
    # Keras, on every backend.
    "keras.array_data_adapter": (
        None, "keras.src.trainers.data_adapters.array_data_adapter", None,
        "which `fit` data are in-memory arrays (sharding, batch checks)"),
    "keras.array_slicing": (
        None, "keras.src.trainers.data_adapters.array_slicing", None,
        "slicing in-memory arrays and `validation_split` as Keras does"),
    "keras.data_adapters": (
        None, "keras.src.trainers.data_adapters", None,
        "Keras's own data adapter for a rank's share of the data"),
    "keras.data_adapter_utils": (
        None, "keras.src.trainers.data_adapters.data_adapter_utils", None,
        "the `(x, y, sample_weight)` structure of a batch"),
    "keras.tree": (None, "keras.src.tree", None, "Keras's tree functions, NumPy-aware"),
    "keras.SeedGenerator": (
        None, "keras.src.random.seed_generator", "SeedGenerator",
        "recognizing seed generators (the traced steps' draws)"),
    "keras.draw_seed": (
        None, "keras.src.random.seed_generator", "draw_seed",
        "drawing a seed inside a traced PyTorch step"),
    "keras.global_seed_generator": (
        None, "keras.src.random.seed_generator", "global_seed_generator",
        "creating Keras's global generator before a trace"),
    "keras.floatx": (None, "keras.src.backend.config", "floatx", "the default float dtype"),
    # Keras's PyTorch backend.
    "keras.torch.random": (
        "torch", "keras.src.backend.torch.random", None,
        "Keras's PyTorch draws, replaced by graph operations while tracing"),
    "keras.torch.noise_shape": (
        "torch", "keras.src.backend.torch.random", "_get_concrete_noise_shape",
        "the mask shape of a traced dropout, as Keras computes it"),
    "keras.torch.to_torch_dtype": (
        "torch", "keras.src.backend.torch.core", "to_torch_dtype",
        "Keras dtype names as torch dtypes in traced draws"),
    "keras.torch.get_device": (
        "torch", "keras.src.backend.torch.core", "get_device",
        "the device Keras places PyTorch tensors on"),
    # Keras's JAX backend.
    "keras.jax.initialize_rng": (
        "jax", "keras.src.backend.jax.distribution_lib", "initialize_rng",
        "one global seed over the processes that `distributed.initialize` starts"),
    "keras.jax.distribute_data_input": (
        "jax", "keras.src.backend.jax.distribution_lib", "distribute_data_input",
        "laying out a batch the devices do not divide whole on each (`patched`)"),
    # Keras's TensorFlow backend.
    "keras.tensorflow.multi_worker": (
        "tensorflow", "keras.src.backend.tensorflow.trainer",
        "_collective_all_reduce_multi_worker",
        "whether a tf.distribute strategy spans several workers"),
    # PyTorch.
    "torch.make_fx": (
        "torch", "torch.fx.experimental.proxy_tensor", "make_fx",
        "tracing a step into an aten graph"),
    "torch.FakeTensorMode": (
        "torch", "torch._subclasses.fake_tensor", "FakeTensorMode",
        "tracing on fake tensors (no arithmetic, no frozen values)"),
    "torch.ShapeEnv": (
        "torch", "torch.fx.experimental.symbolic_shapes", "ShapeEnv",
        "static shapes while tracing, keyed by Inductor's cache"),
    "torch.inductor_compile": (
        "torch", "torch._inductor", "compile", "compiling a traced graph with TorchInductor"),
    "torch.OpOverload": (
        "torch", "torch._ops", "OpOverload", "reading the aten operations of a traced graph"),
    "torch.TensorBase": (
        "torch", "torch._C", "TensorBase", "calling traced operations as Tensor methods"),
    "torch.nn_bindings": ("torch", "torch._C", "_nn", "Python bindings of aten operations"),
    "torch.linalg_bindings": ("torch", "torch._C", "_linalg", "Python bindings of aten operations"),
    "torch.special_bindings": (
        "torch", "torch._C", "_special", "Python bindings of aten operations"),
    "torch.fft_bindings": ("torch", "torch._C", "_fft", "Python bindings of aten operations"),
    "torch.foreach_copy_": (
        "torch", "torch", "_foreach_copy_", "writing a step's new values back, fused"),
    "torch.foreach_mul": (
        "torch", "torch", "_foreach_mul", "copying BatchNorm statistics, fused"),
    "torch.foreach_norm": (
        "torch", "torch", "_foreach_norm", "the non-finite check's gradient norms, fused"),
    "torch.foreach_lerp_": (
        "torch", "torch", "_foreach_lerp_", "moving averages of weights (EMA), fused"),
    # TensorFlow.
    "tensorflow.no_merge_call": (
        "tensorflow", "tensorflow", "__internal__.distribute.strategy_supports_no_merge_call",
        "whether an update may branch inside a tf.distribute strategy"),
}

# Private attributes of objects: (backend or None, what has it, attribute,
# what the zoo uses it for). Checked on real objects by `missing()`.
ATTRIBUTES = (
    (None, "keras.Variable", "_value", "a variable's stored tensor, read and written in place"),
    (None, "keras.random.SeedGenerator", "_initial_seed", "whether a draw is seeded"),
    (None, "keras.Model", "_flatten_layers", "a model's layers, as Keras walks them"),
    (None, "keras.Model", "_get_metrics_result_or_logs", "the logs `fit` reports"),
    ("jax", "keras.Model", "jax_state_sync",
     "writing a running JAX fit's state back to the variables (a refused batch keeps them)"),
    ("jax", "keras.Model()", "_jax_state_synced",
     "whether a JAX fit's variables hold its latest state"),
    # Also read, with a fallback, so not listed: `model._jax_state` (set by
    # Keras's JAX `fit` while it runs) and `fit`'s `_use_cached_eval_dataset`
    # argument to `evaluate`; tests/test_reliability.py
    # (`test_every_batch_of_a_data_source_is_checked`) fails if either moves.
    ("torch", "torch.ops.aten.add.Tensor", "_schema", "aliasing of traced operations"),
    ("torch", "torch.ops.aten.add.Tensor", "_opname", "the binding of a traced operation"),
)


class CompatError(ImportError):
    """An installed Keras, PyTorch or TensorFlow lacks a private name that
    keras-genzoo relies on."""


_cache = {}


def _version(module):
    root = module.split(".")[0]
    try:
        return f"{root} {importlib.import_module(root).__version__}"
    except Exception:  # noqa: BLE001 -- only for the message
        return f"the installed {root}"


def private(key):
    """The private name registered as `key` in `NAMES` (imported once), or
    `CompatError` naming what is missing."""
    if key in _cache:
        return _cache[key]
    if key not in NAMES:
        raise KeyError(f"zoo.core.compat has no entry {key!r}; known: {sorted(NAMES)}")
    _, module_name, path, why = NAMES[key]
    try:
        value = importlib.import_module(module_name)
    except ImportError as error:
        raise CompatError(
            f"keras-genzoo needs the module `{module_name}` ({why}), which "
            f"{_version(module_name)} does not have ({error}). Install a version "
            "keras-genzoo supports (pyproject.toml) or report it."
        ) from error
    for k, part in enumerate((path or "").split(".") if path else ()):
        if not hasattr(value, part):
            where = ".".join([module_name, *path.split(".")[:k + 1]])
            raise CompatError(
                f"keras-genzoo needs `{where}` ({why}), which "
                f"{_version(module_name)} does not have: a release moved or removed "
                "it. Install a version keras-genzoo supports (pyproject.toml) or report it."
            )
        value = getattr(value, part)
    _cache[key] = value
    return value


@contextlib.contextmanager
def patched(key, wrap):
    """Within the block, the private function registered as `key` is
    `wrap(f)` in its module (where its callers look it up), `f` being the
    function there now; restored after, so blocks nest."""
    private(key)  # (a CompatError if it moved)
    _, module_name, path, _ = NAMES[key]
    owner = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    current = getattr(owner, name)
    setattr(owner, name, wrap(current))
    try:
        yield
    finally:
        setattr(owner, name, current)


def _needed(backend, for_backend):
    return backend is None or backend == for_backend


def _attribute_owner(owner):
    import keras

    if owner == "keras.Variable":
        return keras.Variable(0.0)
    if owner == "keras.random.SeedGenerator":
        return keras.random.SeedGenerator(0)
    if owner == "keras.Model":
        return keras.Model
    if owner == "keras.Model()":
        return keras.Sequential()
    value = importlib.import_module(owner.split(".")[0])
    for part in owner.split(".")[1:]:
        value = getattr(value, part)
    return value


def missing(backend=None):
    """The `CompatError` messages of every private name and attribute that
    `backend` (default: Keras's backend in use) needs and the installed
    libraries lack; empty when all are there."""
    if backend is None:
        import keras

        backend = keras.backend.backend()
    errors = []
    for key, (needs, *_) in NAMES.items():
        if _needed(needs, backend):
            try:
                private(key)
            except CompatError as error:
                errors.append(str(error))
    for needs, owner, attribute, why in ATTRIBUTES:
        if _needed(needs, backend) and not hasattr(_attribute_owner(owner), attribute):
            errors.append(f"keras-genzoo needs `{owner}.{attribute}` ({why}), which "
                          f"{_version(owner)} does not have: a release moved or removed it.")
    return errors


if __name__ == "__main__":
    import sys

    problems = missing()
    print("\n".join(problems) or "every private name keras-genzoo uses is present")
    sys.exit(1 if problems else 0)
