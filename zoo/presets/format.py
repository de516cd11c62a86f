"""The preset format: a directory with a config, weights and metadata.

```
my_preset/
  config.json         keras.saving.serialize_keras_object(model): registered
                      class name and every constructor argument
  model.weights.h5    model.save_weights (HDF5 arrays; nothing pickled)
  metadata.json       family, data set, training backend, Keras version,
                      parameter count, quality figures, golden values, and
                      the sha256 of config.json and model.weights.h5
```

A GPT's tokenizer is part of its config (the vocabulary is in config.json),
so it needs no separate asset file.

Loading checks every file's sha256 against metadata.json, resolves the class
from the registry *before* building anything (a wrong or unknown class is an
error, not a half-built model), deserializes the config with
`safe_mode=True`, and loads the weights into the fresh model, which is only
returned once every variable has been set. A preset of an unknown
`format_version`, or whose metadata names another class than its config, is
refused; every malformed preset raises `PresetError` with a one-line message.

Saving refuses a model with NaN or Inf weights (naming the variables), and
writes the files into a hidden sibling folder that then takes the place of
`directory` in one atomic step (on Linux and macOS; `zoo.presets.replace`
says where, and what happens elsewhere). With
`overwrite=True` only a folder that is a keras-genzoo preset is replaced;
any other folder is left untouched and the save refused.
"""

import hashlib
import importlib
import json
import os
import shutil
import tempfile
import uuid
import warnings

import h5py
import keras
import numpy as np

from zoo.presets.replace import (
    CONFIG_FILE,
    METADATA_FILE,
    WEIGHTS_FILE,
    check_target,
    remove_preset,
    replace_directory,
)

HASHED_FILES = (CONFIG_FILE, WEIGHTS_FILE)
FORMAT_VERSION = 1
# How much of a nested error's text a PresetError quotes: Keras's messages
# can hold a whole config.
_QUOTE_LIMIT = 400


class PresetError(ValueError):
    """A preset cannot be found, verified or loaded; the message says why.

    The message is always one line (line breaks of quoted errors become
    spaces), so command-line tools can print it as it is.
    """

    def __init__(self, message):
        super().__init__(" ".join(str(message).split()))


def describe(error):
    """`Type: message` of an exception on one line, shortened past a few
    hundred characters (with "...")."""
    text = " ".join(str(error).split())
    if len(text) > _QUOTE_LIMIT:
        text = text[:_QUOTE_LIMIT] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def read_json(path, what):
    """The JSON object in the file `path`; any failure (unreadable, not
    JSON, nested too deeply, not an object) is a one-line `PresetError`."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except RecursionError:
        raise PresetError(
            f"{what} {path!r} is nested too deeply to be a preset file."
        ) from None
    except (OSError, ValueError) as error:
        raise PresetError(f"Could not read {what} {path!r}: {describe(error)}") from error
    if not isinstance(value, dict):
        raise PresetError(f"{what} {path!r} must hold a JSON object, not {type(value).__name__}.")
    return value


def sha256_of(path, chunk_size=1 << 20):
    """Hex sha256 of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _import_class_module(config):
    """Imports the zoo module that registers the preset's class.

    Only modules inside the `zoo` package are imported; anything else must
    have been imported (and so registered) by the caller.
    """
    module = config.get("module")
    if isinstance(module, str) and (module == "zoo" or module.startswith("zoo.")):
        try:
            importlib.import_module(module)
        except ImportError:
            pass  # Reported below as an unregistered class.


def family_of(model_or_class):
    """`"gan"`, `"vae"`, ... from the class's module; `"custom"` outside zoo."""
    cls = model_or_class if isinstance(model_or_class, type) else type(model_or_class)
    parts = cls.__module__.split(".")
    if parts[0] == "zoo" and len(parts) > 1 and parts[1] in (
        "gan", "vae", "flow", "diffusion", "transformer", "multimodal"
    ):
        return parts[1]
    return "custom"


def _json_ready(value):
    """NumPy scalars and arrays to plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_to_preset(model, directory, metadata=None, overwrite=False):
    """Writes `model` as a preset directory; returns the directory's path.

    The files are written into a hidden folder next to `directory`, which
    then takes `directory`'s place in one atomic step (Linux, macOS; see
    `zoo.presets.replace` for other systems): at every instant the path
    holds the old preset or the new one, and an interrupted save never
    leaves a half-written preset behind.

    Args:
        model: a `zoo.core.GenerativeModel` registered with
            `keras.saving.register_keras_serializable`, with finite weights.
        directory: the preset directory to create (or an empty folder).
        metadata: extra JSON-serializable entries for metadata.json (for
            example `dataset`, `quality`, `goldens`, `description`).
        overwrite: replace an existing preset at `directory`. Only a folder
            holding a keras-genzoo preset (its config.json,
            model.weights.h5 and metadata.json, nothing else) is replaced;
            any other folder is refused and left untouched.

    Raises:
        ValueError: a bad argument, an existing `directory` without
            `overwrite=True`, a `directory` that is not a preset, or weights
            holding NaN or Inf (the message names the variables).
    """
    from zoo.core import GenerativeModel, backend_name

    if not isinstance(model, GenerativeModel):
        raise ValueError(
            "`model` must be a zoo.core.GenerativeModel; received "
            f"{type(model).__name__}."
        )
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError(f"`metadata` must be a dict or None; received {metadata!r:.80}.")
    if not isinstance(directory, (str, os.PathLike)):
        raise ValueError(f"`directory` must be a path; received {directory!r}.")
    if not isinstance(overwrite, bool):
        raise ValueError(f"`overwrite` must be True or False; received {overwrite!r}.")
    directory = os.path.abspath(os.fspath(directory))
    check_target(directory, overwrite)
    registered = keras.saving.get_registered_name(type(model))
    if keras.saving.get_registered_object(registered) is not type(model):
        raise ValueError(
            f"{type(model).__name__} is not registered with Keras; decorate it "
            "with @keras.saving.register_keras_serializable(package=...) so "
            "that its preset can be loaded."
        )

    # Zoo models build their networks in __init__; Keras only calls a model
    # built once it has been compiled or called.
    model._assert_networks_built()
    bad = nonfinite_variables(model)
    if bad:
        raise ValueError(
            f"Cannot save this {type(model).__name__} as a preset: "
            f"{len(bad)} variable(s) hold NaN or Inf values: {_names(bad)}. "
            "Nothing was written; retrain or restore the weights first."
        )
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    # Not tempfile.mkdtemp: its folders are private (0700), and this one
    # becomes the preset, which gets the usual permissions (the umask's).
    tmp = os.path.join(parent, f".{os.path.basename(directory)}.tmp-{uuid.uuid4().hex[:12]}")
    os.mkdir(tmp)
    try:
        config = _json_ready(keras.saving.serialize_keras_object(model))
        # A preset holds the model, not its training setup: loading returns
        # an uncompiled model (compile it to fine-tune).
        config.pop("compile_config", None)
        with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        # The weights are written from a copy rebuilt from the config, as
        # loading will rebuild it: that proves the config round-trips, and
        # leaves out the optimizer's state (a preset is for inference and
        # fine-tuning; `model.save` keeps the optimizer for resuming).
        copy = _build(config, lambda error: (
            f"Cannot save this {type(model).__name__} as a preset: its config "
            f"does not load back in safe mode, as every preset is loaded "
            f"({describe(error)}). Build it from registered layers, without "
            "Lambda layers holding Python functions."
        ))
        copy._assert_networks_built()
        copy.set_weights(model.get_weights())
        copy.save_weights(os.path.join(tmp, WEIGHTS_FILE))
        meta = {
            "format_version": FORMAT_VERSION,
            "class_name": registered,
            "family": family_of(model),
            "training_backend": backend_name(),
            "keras_version": keras.__version__,
            "parameter_count": int(model.count_params()),
        }
        meta.update(_json_ready(metadata or {}))
        # These describe the files: the caller's metadata cannot override them.
        meta["format_version"], meta["class_name"] = FORMAT_VERSION, registered
        meta["sha256"] = {
            name: sha256_of(os.path.join(tmp, name)) for name in HASHED_FILES
        }
        with open(os.path.join(tmp, METADATA_FILE), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        # Re-checked just before the swap: the folder may have changed while
        # the files were written.
        check_target(directory, overwrite)
        old = replace_directory(tmp, directory)
    except BaseException:
        # `tmp` is still the folder made above (a failed swap leaves both
        # paths as they were), holding only what this call wrote.
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        remove_preset(old)
    return directory


def _names(items, limit=10):
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def nonfinite_variables(model):
    """Names of `model`'s floating-point variables holding NaN or Inf, as
    `network/variable path` (a variable's own path omits its network)."""
    owner = {}
    for layer in model.layers:
        for v in layer.weights:
            owner.setdefault(id(v), layer.name)
    bad = []
    for v in model.weights:
        if keras.backend.is_float_dtype(v.dtype):
            if not np.all(np.isfinite(keras.ops.convert_to_numpy(v.value))):
                network = owner.get(id(v))
                prefixed = network is None or v.path.startswith(f"{network}/")
                bad.append(v.path if prefixed else f"{network}/{v.path}")
    return bad


def read_metadata(directory):
    """metadata.json of the preset at `directory`, as a dict."""
    path = os.path.join(directory, METADATA_FILE)
    if not os.path.isfile(path):
        raise PresetError(
            f"The preset at {directory!r} has no {METADATA_FILE}; a preset "
            f"directory holds {CONFIG_FILE}, {WEIGHTS_FILE} and {METADATA_FILE}."
        )
    return read_json(path, METADATA_FILE)


def check_metadata(directory, metadata, config=None):
    """Refuses metadata this version cannot read, or that names another
    class than the config (when given); each error names the field."""
    path = os.path.join(directory, METADATA_FILE)
    version = metadata.get("format_version")
    if type(version) is not int or version < 1:
        raise PresetError(
            f"{path!r}: the field `format_version` must be a positive integer; "
            f"received {version!r:.40}. Not a keras-genzoo preset, or a damaged one."
        )
    if version > FORMAT_VERSION:
        raise PresetError(
            f"{path!r}: `format_version` is {version}, but this keras-genzoo "
            f"reads format_version {FORMAT_VERSION} only; upgrade keras-genzoo "
            "to load this preset."
        )
    if config is None:
        return
    name = metadata.get("class_name")
    in_config = config.get("registered_name") or config.get("class_name")
    if name != in_config:
        raise PresetError(
            f"{path!r}: the field `class_name` is {name!r:.60}, but "
            f"{CONFIG_FILE} holds a {in_config!r:.60}; the files do not belong "
            "together."
        )


def verify_files(directory, metadata, need_weights=True):
    """Checks that each file exists and matches the sha256 in metadata
    (64 hexadecimal digits, either case)."""
    hashes = metadata.get("sha256")
    if not isinstance(hashes, dict):
        raise PresetError(
            f"{os.path.join(directory, METADATA_FILE)!r} lists no sha256 of "
            "the preset's files, so they cannot be verified."
        )
    for name in HASHED_FILES:
        if name == WEIGHTS_FILE and not need_weights:
            continue
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise PresetError(f"The preset at {directory!r} is missing {name}.")
        expected = hashes.get(name)
        if expected is None:
            raise PresetError(f"metadata.json of {directory!r} lists no sha256 for {name}.")
        if not (isinstance(expected, str) and len(expected) == 64
                and all(c in "0123456789abcdefABCDEF" for c in expected)):
            raise PresetError(
                f"metadata.json of {directory!r}: the field `sha256.{name}` must "
                f"be 64 hexadecimal digits; received {expected!r:.80}."
            )
        actual = sha256_of(path)
        if actual != expected.lower():
            raise PresetError(
                f"{path!r} is corrupted or was changed: its sha256 is "
                f"{actual}, metadata.json expects {expected.lower()}."
            )


def resolve_class(directory, config, expected_class=None):
    """The registered class named by `config`, checked against `expected_class`."""
    from zoo.core import GenerativeModel

    name = config.get("registered_name") or config.get("class_name")
    if not isinstance(name, str) or not name:
        raise PresetError(f"{os.path.join(directory, CONFIG_FILE)!r} names no class.")
    _import_class_module(config)
    cls = keras.saving.get_registered_object(name)
    if cls is None:
        raise PresetError(
            f"The preset at {directory!r} needs the class {name!r}, which is not "
            "registered: it is not a keras-genzoo model (or the module that "
            "defines it has not been imported)."
        )
    if not (isinstance(cls, type) and issubclass(cls, GenerativeModel)):
        raise PresetError(
            f"The preset at {directory!r} holds a {name!r}, not a keras-genzoo "
            "GenerativeModel."
        )
    if expected_class is not None and not issubclass(cls, expected_class):
        raise PresetError(
            f"The preset at {directory!r} holds a {cls.__name__}, not a "
            f"{expected_class.__name__}: load it with zoo.from_preset(...) or "
            f"{cls.__name__}.from_preset(...)."
        )
    return cls


def _build(config, message):
    """The model of a config, in safe mode as every preset is loaded; any
    failure is a `PresetError` saying `message(error)`."""
    try:
        return keras.saving.deserialize_keras_object(config, safe_mode=True)
    except Exception as error:
        raise PresetError(message(error)) from error


def load_from_directory(directory, load_weights=True, expected_class=None):
    """Builds the model of the preset at `directory`; see the module doc."""
    metadata = read_metadata(directory)
    check_metadata(directory, metadata)
    verify_files(directory, metadata, need_weights=load_weights)
    config = read_json(os.path.join(directory, CONFIG_FILE), CONFIG_FILE)
    check_metadata(directory, metadata, config)
    cls = resolve_class(directory, config, expected_class)
    family = metadata.get("family")
    if family is not None and family != family_of(cls):
        warnings.warn(
            f"{os.path.join(directory, METADATA_FILE)!r}: the field `family` is "
            f"{family!r:.40}, but the preset holds a {cls.__name__} (family "
            f"{family_of(cls)!r}); the metadata is out of date.",
            stacklevel=3,
        )
    model = _build(config, lambda error: (
        f"Could not build the {cls.__name__} of the preset at {directory!r} "
        f"from its {CONFIG_FILE}: {describe(error)}"
    ))
    if type(model) is not cls:
        raise PresetError(
            f"{CONFIG_FILE} of {directory!r} built a {type(model).__name__}, "
            f"expected {cls.__name__}."
        )
    try:
        model._assert_networks_built()
    except ValueError as error:
        raise PresetError(f"The preset at {directory!r}: {describe(error)}") from error
    if load_weights:
        path = os.path.join(directory, WEIGHTS_FILE)
        try:
            with h5py.File(path, "r"):
                pass
            with warnings.catch_warnings():
                # Keras warns (and keeps fresh weights) for groups it cannot
                # match; the check below turns any such gap into an error.
                warnings.simplefilter("ignore", UserWarning)
                model.load_weights(path)
            _check_fully_loaded(model, path)
        except Exception as error:
            raise PresetError(
                f"Could not load the weights {path!r} into {cls.__name__}: "
                f"{describe(error)}"
            ) from error
        bad = nonfinite_variables(model)
        if bad:
            raise PresetError(
                f"The weights {path!r} hold NaN or Inf values in {len(bad)} "
                f"variable(s): {_names(bad)}; the preset is unusable."
            )
    return model


def _arrays(path):
    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: found.__setitem__(name, obj[()])
            if isinstance(obj, h5py.Dataset) else None
        )
    return found


def _check_fully_loaded(model, path):
    """Saving the loaded model must give back the file's arrays exactly:
    otherwise some variable kept its fresh value (Keras only warns)."""
    with tempfile.TemporaryDirectory() as tmp:
        again = os.path.join(tmp, WEIGHTS_FILE)
        model.save_weights(again)
        saved, loaded = _arrays(path), _arrays(again)
    # Random-generator states are not part of what a preset promises.
    saved = {k: v for k, v in saved.items() if "/seed_" not in f"/{k}"}
    loaded = {k: v for k, v in loaded.items() if "/seed_" not in f"/{k}"}
    missing = sorted(set(loaded) - set(saved))
    extra = sorted(set(saved) - set(loaded))
    if missing or extra:
        raise ValueError(
            f"the file does not match the model's variables (model variables "
            f"not in the file: {missing[:5]}; file arrays the model lacks: {extra[:5]})."
        )
    differ = [k for k in saved if not np.array_equal(saved[k], loaded[k], equal_nan=True)]
    if differ:
        raise ValueError(f"variables {differ[:5]} did not take the file's values.")
