"""TensorFlow: `tf.distribute` strategies, in fresh processes (logical CPU
devices and `TF_CONFIG` must be set before TensorFlow starts):
`MirroredStrategy` over 2 logical CPUs for each family, matching one device
seeing the whole global batch (the update size included: each replica's
loss counts 1/replicas, as Keras's own losses do); a non-finite batch
skipped under it; a last batch that leaves a replica without examples;
and `MultiWorkerMirroredStrategy` with 2 local workers
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

pytestmark = [
    pytest.mark.skipif(
        keras.backend.backend() != "tensorflow", reason="tf.distribute runs on TensorFlow"
    ),
    pytest.mark.heavy,
]

# Rows of the uneven-dataset run: batches of 16, 16, 16 and 15.
UNEVEN_ROWS = 63
# Batches of 16, 16, 16 and 1: the last leaves a replica without examples.
EMPTY_ROWS = 49


def mirrored_run(out):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for name in dm.FAMILIES:
        with strategy.scope():
            run = dm.equivalence_run(name)
        dm.save_run(os.path.join(out, f"mirrored_{name}"), run)
    # A tf.data.Dataset whose last batch (15 of 63 rows) splits 8 / 7: each
    # replica's loss counts for its examples, as on one device.
    with strategy.scope():
        run = dm.equivalence_run("gan", as_dataset=True, rows=UNEVEN_ROWS)
    dm.save_run(os.path.join(out, "mirrored_uneven"), run)
    with strategy.scope():  # in-memory arrays ending with the same batch
        run = dm.equivalence_run("gpt", rows=UNEVEN_ROWS)
    dm.save_run(os.path.join(out, "mirrored_uneven_arrays"), run)

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
    # A preset saved under the strategy (the parent loads it on one device).
    model.save_to_preset(os.path.join(out, "preset"))
    np.savez(os.path.join(out, "preset_state.npz"), *[v.numpy() for v in model.variables])
    try:  # batches of 9 rows
        model.fit(toy_data(64), batch_size=9, epochs=1, verbose=0)
        report["indivisible_9"] = "no error"
    except ValueError as error:
        report["indivisible_9"] = str(error)
    # Datasets: batches of 9 known in advance are refused before any step.
    batches = tf.data.Dataset.from_tensor_slices(toy_data(64)).batch(9, drop_remainder=True)
    try:
        model.fit(batches, epochs=1, verbose=0)
        report["dataset_9"] = "no error"
    except ValueError as error:
        report["dataset_9"] = str(error)
    # A last batch of 1 (49 rows) leaves replica 1 without examples: it
    # counts for none, in a dataset and in memory.
    kept = []
    with strategy.scope():
        run = dm.equivalence_run("gpt", as_dataset=True, rows=EMPTY_ROWS, keep=kept)
    dm.save_run(os.path.join(out, "mirrored_empty"), run)
    report["empty_evaluate"] = empty_evaluate(kept[0])
    with strategy.scope():
        run = dm.equivalence_run("gan", rows=EMPTY_ROWS)
    dm.save_run(os.path.join(out, "mirrored_empty_arrays"), run)
    # With BatchNorm, whose statistics over no rows are NaN: the empty
    # replica's copies of them stay finite, and no update is skipped.
    with strategy.scope():
        model = TinyGAN(penalty=1.0, batch_norm=True, seed=0)
        model.compile()
    data = tf.data.Dataset.from_tensor_slices(toy_data(EMPTY_ROWS)).batch(16)
    logs = model.fit(data, epochs=1, verbose=0).history
    logs.update({f"val_{k}": [v] for k, v in model.evaluate(data, verbose=0,
                                                            return_dict=True).items()})
    report["empty_batch_norm_logs"] = {k: float(v[-1]) for k, v in logs.items()}
    report["empty_batch_norm_finite"] = bool(all(
        np.isfinite(part.numpy()).all()
        for v in model.variables for part in strategy.experimental_local_results(v.value)))
    with open(os.path.join(out, "mirrored.json"), "w") as f:
        json.dump(report, f)


def empty_evaluate(model):
    """`evaluate`'s logs on the GPT's `EMPTY_ROWS` rows in batches of 16."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices(dm.family("gpt")[1][:EMPTY_ROWS]).batch(16)
    return model.evaluate(data, verbose=0, return_dict=True)


def worker_run(out):
    import time

    import tensorflow as tf

    from tests.core_models import TinyGAN, toy_data
    from zoo.core import distributed

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    index = distributed.process_index()
    report = {"count": distributed.process_count(), "chief": distributed.is_chief()}
    kept = []
    with strategy.scope():
        run = dm.equivalence_run("gan", keep=kept)
    dm.save_run(os.path.join(out, f"worker{index}"), run)
    # A last batch of 1: worker 1's replica holds no examples.
    with strategy.scope():
        run = dm.equivalence_run("gpt", rows=EMPTY_ROWS)
    dm.save_run(os.path.join(out, f"worker{index}_empty"), run)
    # A preset saved by a multi-worker run: the chief alone writes it.
    model = kept[0]
    model.save_to_preset(os.path.join(out, f"preset_worker{index}"))
    np.savez(os.path.join(out, f"state_worker{index}.npz"), *[v.numpy() for v in model.variables])

    # Workers that built different models (same weights' shapes, another
    # gradient penalty): `fit` stops on every worker before any step.
    with strategy.scope():
        odd = TinyGAN(penalty=float(index), seed=0)
        odd.compile()
    try:
        odd.fit(toy_data(64), batch_size=16, epochs=1, verbose=0)
        report["mismatch"] = "no error"
    except ValueError as error:
        report["mismatch"] = str(error)

    with open(os.path.join(out, f"report_worker{index}.json"), "w") as f:
        json.dump(report, f)

    # Worker 1 dies mid-fit: worker 0's `fit` fails with an error.
    class Die(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if index == 1 and batch == 2:
                with open(os.path.join(out, "died_at"), "w") as f:
                    f.write(repr(time.time()))
                os._exit(3)

    try:
        model.fit(toy_data(512), batch_size=16, epochs=5, verbose=0, callbacks=[Die()])
        death = {"error": None}
    except Exception as error:  # noqa: BLE001 -- whichever error TensorFlow raises
        death = {"error": type(error).__name__, "message": str(error)[:500]}
    death["failed_at"] = time.time()
    with open(os.path.join(out, f"death{index}.json"), "w") as f:
        json.dump(death, f)


def test_mirrored_strategy_matches_one_device(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c",
         f"from tests.test_distributed_tensorflow import mirrored_run; mirrored_run({str(tmp_path)!r})"],
        env=dm.child_env(KERAS_BACKEND="tensorflow"), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Weights, and every logged number (losses, gradient norms) of every
    # batch and of the epoch, as one device has them.
    for name in dm.FAMILIES:
        dm.assert_same_run(dm.load_run(tmp_path / f"mirrored_{name}.npz"),
                           dm.equivalence_run(name), name)
    dm.assert_same_run(dm.load_run(tmp_path / "mirrored_uneven.npz"),
                       dm.equivalence_run("gan", as_dataset=True, rows=UNEVEN_ROWS),
                       "a last batch split 8 / 7")
    report = json.loads((tmp_path / "mirrored.json").read_text())
    # The NaN row is in the first batch: its discriminator update (whose
    # loss reads the data) is skipped on both replicas, not the generator's.
    assert report["skipped"] == [1.0] and report["finite"]
    dm.assert_preset_holds(tmp_path / "preset", tmp_path / "preset_state.npz")
    dm.assert_same_run(dm.load_run(tmp_path / "mirrored_uneven_arrays.npz"),
                       dm.equivalence_run("gpt", rows=UNEVEN_ROWS),
                       "in-memory arrays, a last batch split 8 / 7")
    message = report["indivisible_9"]
    assert "`batch_size` (9)" in message and "2 replicas" in message, message
    assert "multiple of 2" in message, message
    message = report["dataset_9"]
    assert "batches of 9" in message and "multiple of 2" in message, message
    kept = []
    dm.assert_same_run(dm.load_run(tmp_path / "mirrored_empty.npz"),
                       dm.equivalence_run("gpt", as_dataset=True, rows=EMPTY_ROWS, keep=kept),
                       "a last batch of 1 split 1 / 0")
    reference = empty_evaluate(kept[0])
    assert report["empty_evaluate"].keys() == reference.keys()
    for name, value in reference.items():
        np.testing.assert_allclose(report["empty_evaluate"][name], value, rtol=dm.LOG_RTOL,
                                   err_msg=f"evaluate, a last batch of 1 split 1 / 0: {name}")
    dm.assert_same_run(dm.load_run(tmp_path / "mirrored_empty_arrays.npz"),
                       dm.equivalence_run("gan", rows=EMPTY_ROWS),
                       "in-memory arrays, a last batch of 1 split 1 / 0")
    logs = report["empty_batch_norm_logs"]
    assert logs["skipped_updates"] == 0.0 and report["empty_batch_norm_finite"], report
    assert all(np.isfinite(v) for v in logs.values()), logs


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
            # (Files, not pipes: a full pipe would stall a worker, and with
            # it the other in a collective.)
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"stderr{index}.txt", "w"),
        ))
    codes = []
    for p in processes:
        try:
            codes.append(p.wait(timeout=420))
        except subprocess.TimeoutExpired:
            for q in processes:
                q.kill()
            raise
    stderr = (tmp_path / "stderr0.txt").read_text()[-3000:]
    assert codes == [0, 3], stderr  # worker 1 dies on purpose, at the end
    reference = dm.equivalence_run("gan")
    empty = dm.equivalence_run("gpt", rows=EMPTY_ROWS)
    for index in range(2):
        dm.assert_same_run(dm.load_run(tmp_path / f"worker{index}.npz"), reference,
                           f"worker {index}")
        dm.assert_same_run(dm.load_run(tmp_path / f"worker{index}_empty.npz"), empty,
                           f"worker {index}, a last batch of 1 split 1 / 0")
        report = json.loads((tmp_path / f"report_worker{index}.json").read_text())
        assert report["count"] == 2 and report["chief"] == (index == 0)
        assert "differs from rank 0's" in report["mismatch"], report["mismatch"]
        assert "worker(s) [1]" in report["mismatch"], report["mismatch"]
    assert (tmp_path / "preset_worker0").is_dir() and not (tmp_path / "preset_worker1").exists()
    dm.assert_preset_holds(tmp_path / "preset_worker0", tmp_path / "state_worker0.npz")
    # Worker 1's death: worker 0 stops with TensorFlow's error, within the
    # bound docs/distributed.md states (its health check).
    death = json.loads((tmp_path / "death0.json").read_text())
    assert death["error"] is not None, death
    seconds = death["failed_at"] - float((tmp_path / "died_at").read_text())
    assert 0 < seconds < 60, (seconds, death)


def test_initialize_leaves_tensorflow_to_its_strategy():
    from zoo.core import distributed

    assert distributed.initialize() is False  # no TF_CONFIG: one process
    with pytest.raises(ValueError, match="`timeout`"):
        distributed.initialize(timeout=0)
