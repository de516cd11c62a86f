"""What a zoo model saves beside Keras's weights: the states of its random
generators (Keras does not save them; a loaded model then resumes training
with the noise an uninterrupted run draws) and the extra state callbacks
register (the EMA's average), under `seed_<i>` and `extra.<name>.<key>` in
the model's own variable store."""

import warnings

import numpy as np


def seed_states(model):
    """The state variables of every `SeedGenerator` of the model's layers."""
    states = []
    for layer in model._flatten_layers(include_self=True):
        states.extend(sg.state for sg in layer._seed_generators)
    return states


def register(model, name, fn):
    """`GenerativeModel.set_saved_state`: saves `fn()` with the weights."""
    if not str(name).isidentifier():
        raise ValueError(f"`name` must be an identifier; received {name!r}.")
    providers = model.__dict__.setdefault("_saved_state_providers", {})
    if fn is None:
        providers.pop(name, None)
    else:
        providers[name] = fn


def loaded(model, name, pop):
    """`GenerativeModel.loaded_state`."""
    found = model.__dict__.get("_loaded_extra_state", {})
    return found.pop(name, None) if pop else found.get(name)


def save(model, store):
    """Writes the generator states and the registered extra state into
    `store` (after Keras has written the model's own variables)."""
    for i, state in enumerate(seed_states(model)):
        store[f"seed_{i}"] = state.numpy()
    for name, fn in model.__dict__.get("_saved_state_providers", {}).items():
        for key, value in fn().items():
            store[f"extra.{name}.{key}"] = np.asarray(value)


def split(model, store):
    """Keeps the extra state of `store` for `loaded`; returns Keras's part
    of it (the model's own variables) and the generator states' keys."""
    seed_keys = [k for k in store.keys() if k.startswith("seed_")]
    extra_keys = [k for k in store.keys() if k.startswith("extra.")]
    found = {}
    for key in extra_keys:
        _, name, item = key.split(".", 2)
        found.setdefault(name, {})[item] = np.asarray(store[key])
    object.__setattr__(model, "_loaded_extra_state", found)
    own = {
        k: np.asarray(store[k])
        for k in store.keys()
        if k not in seed_keys and k not in extra_keys
    }
    return own, seed_keys


def restore_seeds(model, store, seed_keys):
    """Assigns the saved generator states, or warns (and keeps the fresh
    ones) where their number differs from the model's generators."""
    states = seed_states(model)
    if len(seed_keys) != len(states):
        warnings.warn(
            f"{type(model).__name__}: the saved file has {len(seed_keys)} "
            f"random-generator states, the model {len(states)}; the "
            "generators keep their fresh states.",
            stacklevel=3,
        )
        return
    for i, state in enumerate(states):
        state.assign(np.asarray(store[f"seed_{i}"]))
