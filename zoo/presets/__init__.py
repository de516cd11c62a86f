"""Pretrained presets: load a trained zoo model by name, path or URL.

```python
import zoo

zoo.list_presets()                      # built-in names, e.g. ["gan_ring", ...]
model = zoo.from_preset("gan_ring")     # any zoo model
samples = model.sample(16, seed=0)

from zoo.gan import GAN
gan = GAN.from_preset("gan_ring")       # checks that the preset holds a GAN
gan.save_to_preset("/tmp/my_gan")       # config.json, model.weights.h5, metadata.json
zoo.from_preset("/tmp/my_gan")
zoo.from_preset("https://example.org/my_gan.tar.gz#sha256=<hex>")
```

See `zoo.presets.format` for the directory layout and what loading checks,
`zoo.presets.sources` for names, directories and archives (`file://`,
`https://`) cached under `KERAS_HOME`, and `zoo.presets.checks` for golden
values and quality evaluations. Built-in presets are trained by
`python -m zoo.presets.build NAME`.
"""

from zoo.presets.format import PresetError, read_metadata
from zoo.presets.format import load_from_directory as _load
from zoo.presets.format import save_to_preset
from zoo.presets.sources import builtin_names, locate

_FAMILIES = ("gan", "vae", "flow", "diffusion", "transformer")


def list_presets(family=None):
    """Names of the built-in presets, sorted; only `family`'s if given.

    `family` is one of "gan", "vae", "flow", "diffusion", "transformer".
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
    """metadata.json of a preset (name, directory or URL), as a dict."""
    return read_metadata(locate(preset, sha256=sha256))


def from_preset(preset, load_weights=True, sha256=None, expected_class=None):
    """Loads a zoo model from a preset.

    Args:
        preset: a built-in name (`list_presets()`), a preset directory, or a
            `file://` / `https://` URL of a tar or zip archive of one
            (optionally ending in `#sha256=<hex>`).
        load_weights: load the trained weights; False returns the model
            freshly initialized from the config.
        sha256: the archive's expected sha256 (URL sources only).
        expected_class: raise `PresetError` unless the preset holds an
            instance of this class (what `SomeModel.from_preset` passes).

    Raises:
        PresetError (a ValueError): unknown name (with the closest names),
            missing or corrupted files, unknown or wrong class, weights that
            do not fit. The model is returned only when fully loaded.
    """
    if not isinstance(load_weights, bool):
        raise ValueError(f"`load_weights` must be True or False; received {load_weights!r}.")
    directory = locate(preset, sha256=sha256)
    return _load(directory, load_weights=load_weights, expected_class=expected_class)


__all__ = [
    "PresetError",
    "from_preset",
    "list_presets",
    "preset_metadata",
    "save_to_preset",
]
