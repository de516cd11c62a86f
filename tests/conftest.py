"""pytest configuration: report which Keras backend the run uses, and order
the test files for parallel runs.

The whole suite runs once per backend (see tests/all_backends.py); the header
line makes every log say which one it was, whatever KERAS_BACKEND or
keras.json asked for.
"""

import collections
import importlib


def pytest_report_header(config):
    import keras

    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    version = getattr(importlib.import_module(module), "__version__", "?") if module else "?"
    return f"keras {keras.__version__}, backend: {backend} {version}"


def pytest_collection_modifyitems(config, items):
    """Files marked `heavy` first, then the others by number of tests, most
    first; each file's tests keep their order. pytest-xdist's `loadfile`
    hands out files in this order when run with `--no-loadscope-reorder`
    (tests/all_backends.py does): a worker that picks up a file of a few
    long tests last would otherwise leave the others idle at the end."""
    counts = collections.Counter(item.path for item in items)
    heavy = {item.path for item in items if item.get_closest_marker("heavy")}
    items.sort(key=lambda item: (item.path not in heavy, -counts[item.path]))
