"""What `pyproject.toml` promises: the extras, the PyTorch floor, and a
PyTorch-only install (no TensorFlow, no JAX) that runs the Quickstart."""

import os
import re
import subprocess
import sys
import tomllib

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

with open(os.path.join(ROOT, "pyproject.toml"), "rb") as _f:
    PROJECT = tomllib.load(_f)["project"]

# What `pip install -e ".[torch]"` leaves out: the other backends and the
# test extra's packages.
NOT_INSTALLED = ("tensorflow", "tf_keras", "tensorboard", "jax", "jaxlib",
                 "transformers", "diffusers")

# Runs in a fresh process: the packages above marked as not installed (None
# in sys.modules: `import` raises ModuleNotFoundError and
# `importlib.util.find_spec` answers None, as for a missing package), then
# the Quickstart script itself, shortened.
TORCH_ONLY = f"""
import runpy, sys

for name in {NOT_INSTALLED!r}:
    sys.modules[name] = None
import zoo  # every subpackage
sys.argv = ["gan_digits.py", "--epochs", "1", "--batch-size", "256", "--verbose", "0",
            "--out", sys.argv[1]]
runpy.run_path("examples/gan_digits.py", run_name="__main__")
loaded = sorted(name for name, module in sys.modules.items()
                if module is not None and name.split(".")[0] in {NOT_INSTALLED!r})
print("not installed but imported:", loaded)
"""


def source_files():
    for folder in ("zoo", "callbacks", "examples", "benchmarks"):
        for parent, _, files in os.walk(os.path.join(ROOT, folder)):
            yield from (os.path.join(parent, f) for f in files if f.endswith(".py"))


def test_extras():
    extras = PROJECT["optional-dependencies"]
    # keras-cv: nothing imports it, so no extra installs it.
    assert "cv" not in extras
    for path in source_files():
        with open(path, encoding="utf-8") as f:
            assert not re.search(r"^\s*(import|from)\s+keras_cv\b", f.read(), re.M), path
    # The core registers a torch.library.custom_op (new in PyTorch 2.4).
    (torch,) = extras["torch"]
    floor = re.fullmatch(r"torch>=(\d+)\.(\d+)", torch)
    assert floor and (int(floor[1]), int(floor[2])) >= (2, 4), torch
    with open(os.path.join(ROOT, "zoo", "core", "torch_step.py"), encoding="utf-8") as f:
        assert "torch.library.custom_op" in f.read()
    assert all(extras[backend] for backend in ("tensorflow", "jax", "torch"))
    assert extras["all"] == ["keras-genzoo[tensorflow,jax,torch]"]


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="a PyTorch-only install: run once, under the torch backend")
def test_quickstart_without_tensorflow_or_jax(tmp_path):
    out = tmp_path / "grid.png"
    result = subprocess.run(
        [sys.executable, "-c", TORCH_ONLY, str(out)], cwd=ROOT, capture_output=True,
        text=True, timeout=600, env={**os.environ, "KERAS_BACKEND": "torch"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "not installed but imported: []" in result.stdout
    assert f"wrote {out}" in result.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
