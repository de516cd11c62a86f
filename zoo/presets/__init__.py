"""Pretrained presets: load a trained zoo model by name, path or URL.

```python
import zoo

zoo.list_presets()                      # built-in names, e.g. ["gan_ring", ...]
model = zoo.from_preset("gan_ring")     # any zoo model
samples = model.sample(16, seed=0)

from zoo.gan import GAN
gan = GAN.from_preset("gan_ring")       # checks that the preset holds a GAN
gan.save_to_preset("my_gan")            # config.json, model.weights.h5, metadata.json
zoo.from_preset("my_gan")
gan.save_to_preset("my_gan", overwrite=True)  # replaces that preset in one step
```

Archives and Hugging Face checkpoints load the same way:

```text
zoo.from_preset("https://example.org/my_gan.tar.gz#sha256=<hex>")
zoo.from_preset("hf://owner/name")      # a transformers checkpoint, converted
```

See `zoo.presets.format` for the directory layout and what loading checks,
`zoo.presets.replace` for what saving may replace and how, in one step,
`zoo.presets.sources` for names, directories, archives (`file://`,
`https://`) verified and cached under `KERAS_HOME`, and Hugging Face
checkpoints, and `zoo.presets.checks` for golden values and quality
evaluations. Built-in presets are trained by
`python -m zoo.presets.build NAME`.
"""

import os

from zoo.presets.format import CONFIG_FILE, PresetError, read_json, read_metadata
from zoo.presets.format import load_from_directory as _load
from zoo.presets.format import save_to_preset
# `huggingface` is also the name of the submodule zoo.presets.huggingface,
# which replaces this package's attribute of that name once imported.
from zoo.presets.sources import builtin_names, locate, resolve
from zoo.presets.sources import huggingface as _huggingface_module

_FAMILIES = ("gan", "vae", "flow", "diffusion", "transformer", "multimodal")


def list_presets(family=None):
    """Names of the built-in presets, sorted; only `family`'s if given.

    `family` is one of "gan", "vae", "flow", "diffusion", "transformer",
    "multimodal".
    """
    if family is not None and family not in _FAMILIES:
        raise ValueError(
            f"`family` must be None or one of {', '.join(_FAMILIES)}; received "
            f"family={family!r}."
        )
    names = builtin_names()
    if family is None:
        return names
    return [n for n in names if read_metadata(locate(n)).get("family") == family]


def preset_metadata(preset, sha256=None):
    """metadata.json of a preset (name, directory or URL), as a dict.

    For a local Hugging Face checkpoint folder: `{"format": "huggingface",
    "model_type": ..., "architectures": [...]}` from its config.json.
    """
    kind, where = resolve(preset, sha256=sha256)
    if kind == "zoo":
        return read_metadata(where)
    if not os.path.isdir(where):
        raise PresetError(
            f"{preset!r} is a Hugging Face Hub checkpoint: it has no zoo "
            f"metadata; load it with zoo.from_preset({preset!r})."
        )
    config = read_json(os.path.join(where, CONFIG_FILE), CONFIG_FILE)
    return {
        "format": "huggingface",
        "model_type": config.get("model_type"),
        "architectures": config.get("architectures"),
    }


def from_preset(preset, load_weights=True, sha256=None, expected_class=None):
    """Loads a zoo model from a preset.

    Args:
        preset: a built-in name (`list_presets()`), a preset directory, a
            `file://` / `https://` URL of a tar or zip archive of one
            (optionally ending in `#sha256=<hex>`), or a Hugging Face
            checkpoint: a local folder or `"hf://owner/name"`, converted by
            `zoo.presets.huggingface`.
        load_weights: load the trained weights; False returns the model
            freshly initialized from the config.
        sha256: the archive's expected sha256 (URL sources only).
        expected_class: raise `PresetError` unless the preset holds an
            instance of this class (what `SomeModel.from_preset` passes).

    Raises:
        PresetError (a ValueError, with a one-line message): unknown name
            (with the closest names and every place looked), missing,
            corrupted or malformed files, an unknown `format_version`, an
            unknown or wrong class, weights that do not fit or are not
            finite. The model is returned only when fully loaded.
    """
    if not isinstance(load_weights, bool):
        raise ValueError(f"`load_weights` must be True or False; received {load_weights!r}.")
    kind, where = resolve(preset, sha256=sha256)
    if kind == "zoo":
        return _load(where, load_weights=load_weights, expected_class=expected_class)
    model = _huggingface_module(where).load_hf_checkpoint(where, load_weights=load_weights)
    if expected_class is not None and not isinstance(model, expected_class):
        raise PresetError(
            f"The Hugging Face checkpoint {preset!r} converts to a "
            f"{type(model).__name__}, not a {expected_class.__name__}: load it "
            f"with zoo.from_preset(...) or {type(model).__name__}.from_preset(...)."
        )
    return model


__all__ = [
    "PresetError",
    "from_preset",
    "list_presets",
    "preset_metadata",
    "save_to_preset",
]
