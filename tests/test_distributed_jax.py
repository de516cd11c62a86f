"""JAX: `keras.distribution` over 4 virtual CPU devices, in one fresh process
(the devices must exist before JAX starts, which this pytest process has
already done): `DataParallel` for each family, matching one device; a
`ModelParallel` with a `LayoutMap` sharding the GPT's and the DDPM
denoiser's weights over a model axis, matching one device too; a non-finite
batch skipped under `DataParallel`.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests import distributed_models as dm

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="keras.distribution runs on JAX here"
)

DEVICES = 4

# Kernels split over the "model" axis: a column split for the first product
# of each pair, a row split for the second (Megatron's layout).
LAYOUTS = {
    "gpt": {
        "token_embedding/embeddings": (None, "model"),
        ".*qkv/kernel": (None, "model"),
        ".*attention/output/kernel": ("model", None),
        ".*mlp_1/kernel": (None, "model"),
        ".*mlp_2/kernel": ("model", None),
    },
    "ddpm": {
        "time_dense1/kernel": (None, "model"),
        "time_dense2/kernel": ("model", None),
        r"block\d+_dense1/kernel": (None, "model"),
        r"block\d+_dense2/kernel": ("model", None),
    },
}


def devices_run(out):
    import jax
    from keras import distribution as kd

    assert len(jax.devices()) == DEVICES, jax.devices()
    report = {}
    data_parallel = kd.DataParallel(devices=jax.devices())
    for name in dm.FAMILIES:
        with data_parallel.scope():
            weights = dm.equivalence_run(name)
        np.savez(os.path.join(out, f"dp_{name}.npz"), *weights)
    mesh = kd.DeviceMesh((2, 2), ["batch", "model"], devices=jax.devices())
    for name, layouts in LAYOUTS.items():
        layout_map = kd.LayoutMap(mesh)
        for key, axes in layouts.items():
            layout_map[key] = axes
        with kd.ModelParallel(layout_map=layout_map, batch_dim_name="batch").scope():
            model, data = dm.family(name)
            sharded = {
                v.path: len(v.value.sharding.device_set) > 1
                and not v.value.sharding.is_fully_replicated
                for v in model.trainable_variables
            }
            report[f"sharded_{name}"] = sorted(p for p, s in sharded.items() if s)
            weights = dm.equivalence_run(name)
        np.savez(os.path.join(out, f"mp_{name}.npz"), *weights)

    from tests.core_models import TinyGAN, toy_data

    with data_parallel.scope():
        model = TinyGAN(penalty=1.0, seed=0)
        model.compile()
        x = toy_data(64)
        x[3] = np.nan
        history = model.fit(x, batch_size=16, epochs=1, shuffle=False, verbose=0)
    report["skipped"] = history.history["skipped_updates"]
    with data_parallel.scope():
        try:  # 64 rows in batches of 10: the last has 4, and batches of 10 split
            model.fit(toy_data(64), batch_size=10, epochs=1, verbose=0)
            report["indivisible"] = "no error"
        except ValueError as error:
            report["indivisible"] = str(error)
    report["finite"] = bool(all(np.isfinite(v.numpy()).all() for v in model.trainable_variables))
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f)


def _load(path):
    arrays = np.load(path)
    return [arrays[f"arr_{k}"] for k in range(len(arrays.files))]


def test_data_and_model_parallel_match_one_device(tmp_path):
    env = dm.child_env(
        KERAS_BACKEND="jax", XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}"
    )
    result = subprocess.run(
        [sys.executable, "-c",
         f"from tests.test_distributed_jax import devices_run; devices_run({str(tmp_path)!r})"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    for name in dm.FAMILIES:
        reference = dm.equivalence_run(name)
        kinds = ["dp"] + (["mp"] if name in LAYOUTS else [])
        for kind in kinds:
            got = _load(tmp_path / f"{kind}_{name}.npz")
            assert len(got) == len(reference)
            for a, b in zip(got, reference):
                np.testing.assert_allclose(a, b, atol=dm.ATOL, err_msg=f"{kind} {name}")
    # The LayoutMap's kernels are split over the model axis.
    assert len(report["sharded_gpt"]) == 5, report["sharded_gpt"]
    assert len(report["sharded_ddpm"]) == 4, report["sharded_ddpm"]
    # Row 3 is in the first of 4 batches: that step's discriminator update
    # (its loss reads the data) is skipped, not the generator's.
    assert report["skipped"] == [1.0] and report["finite"]
    assert "`batch_size` (10)" in report["indivisible"], report["indivisible"]
    assert "multiples of 4" in report["indivisible"]

