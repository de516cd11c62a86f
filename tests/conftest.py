"""pytest configuration: report which Keras backend the run uses.

The whole suite runs once per backend (see tests/all_backends.py); the header
line makes every log say which one it was, whatever KERAS_BACKEND or
keras.json asked for.
"""

import importlib


def pytest_report_header(config):
    import keras

    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    version = getattr(importlib.import_module(module), "__version__", "?") if module else "?"
    return f"keras {keras.__version__}, backend: {backend} {version}"
