"""TensorFlow: `tf.distribute` strategies, in fresh processes (logical CPU
devices and `TF_CONFIG` must be set before TensorFlow starts):
`MirroredStrategy` over 2 logical CPUs for each family, matching one device
seeing the whole global batch (the update size included: each replica's
loss counts 1/replicas, as Keras's own losses do); a non-finite batch
skipped under it; and `MultiWorkerMirroredStrategy` with 2 local workers
(`TF_CONFIG` on 127.0.0.1 ports), the chief alone writing.
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
    keras.backend.backend() != "tensorflow", reason="tf.distribute runs on TensorFlow"
)


def mirrored_run(out):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for name in dm.FAMILIES:
        with strategy.scope():
            weights = dm.equivalence_run(name)
        np.savez(os.path.join(out, f"mirrored_{name}.npz"), *weights)

    from tests.core_models import TinyGAN, toy_data

    with strategy.scope():
        model = TinyGAN(penalty=1.0, batch_norm=True, seed=0)
        model.compile()
    x = toy_data(64)
    x[3] = np.nan
    history = model.fit(x, batch_size=16, epochs=1, shuffle=False, verbose=0)
    report = {
        "skipped": history.history["skipped_updates"],
        "finite": bool(all(np.isfinite(v.numpy()).all() for v in model.variables)),
    }
    with open(os.path.join(out, "mirrored.json"), "w") as f:
        json.dump(report, f)


def worker_run(out):
    import tensorflow as tf

    from zoo.core import distributed

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        weights = dm.equivalence_run("gan")
    index = distributed.process_index()
    np.savez(os.path.join(out, f"worker{index}.npz"), *weights)
    with strategy.scope():
        model, _ = dm.family("gan")
    model.save_to_preset(os.path.join(out, f"preset_worker{index}"))
    with open(os.path.join(out, f"worker{index}.json"), "w") as f:
        json.dump({"count": distributed.process_count(), "chief": distributed.is_chief()}, f)


def _load(path):
    arrays = np.load(path)
    return [arrays[f"arr_{k}"] for k in range(len(arrays.files))]


def _close(got, reference, message):
    assert len(got) == len(reference)
    for a, b in zip(got, reference):
        np.testing.assert_allclose(a, b, atol=dm.ATOL, err_msg=message)


def test_mirrored_strategy_matches_one_device(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c",
         f"from tests.test_distributed_tensorflow import mirrored_run; mirrored_run({str(tmp_path)!r})"],
        env=dm.child_env(KERAS_BACKEND="tensorflow"), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in dm.FAMILIES:
        _close(_load(tmp_path / f"mirrored_{name}.npz"), dm.equivalence_run(name), name)
    report = json.loads((tmp_path / "mirrored.json").read_text())
    # The NaN row is in the first batch: its discriminator update (whose
    # loss reads the data) is skipped on both replicas, not the generator's.
    assert report["skipped"] == [1.0] and report["finite"]


def test_multi_worker_mirrored_strategy_with_two_local_workers(tmp_path):
    ports = [dm.free_port(), dm.free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    processes = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(
            [sys.executable, "-c",
             f"from tests.test_distributed_tensorflow import worker_run; worker_run({str(tmp_path)!r})"],
            env=dm.child_env(KERAS_BACKEND="tensorflow", TF_CONFIG=config),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    for p in processes:
        try:
            _, stderr = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in processes:
                q.kill()
            raise
        assert p.returncode == 0, stderr[-3000:]
    reference = dm.equivalence_run("gan")
    for index in range(2):
        _close(_load(tmp_path / f"worker{index}.npz"), reference, f"worker {index}")
        report = json.loads((tmp_path / f"worker{index}.json").read_text())
        assert report == {"count": 2, "chief": index == 0}
    assert (tmp_path / "preset_worker0").is_dir() and not (tmp_path / "preset_worker1").exists()
