"""JAX: `keras.distribution` over 4 virtual CPU devices, in one fresh process
(the devices must exist before JAX starts, which this pytest process has
already done): `DataParallel` for each family, matching one device (weights
and logs); a `ModelParallel` with a `LayoutMap` sharding the GPT's and the
DDPM denoiser's weights over a model axis, matching one device too; a
non-finite batch skipped under `DataParallel`; a batch size the devices do
not divide refused; a last batch they do not divide laid out whole on each
device, matching one device too; a preset saved under `DataParallel`
loading on one device. Then 2 processes on 127.0.0.1 (`jax.distributed` through
`keras.distribution.initialize`, gloo CPU collectives) training one model.
"""

import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from tests import distributed_models as dm

pytestmark = [
    pytest.mark.skipif(
        keras.backend.backend() != "jax", reason="keras.distribution runs on JAX here"
    ),
    pytest.mark.heavy,
]

DEVICES = 4
# Seconds without heartbeats after which jax.distributed counts a process as
# dead (the 2-process test's `distributed.initialize(timeout=...)`).
HEARTBEAT = 5

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


# Runs whose last batch the devices do not divide: (distribution, family,
# rows, as a dataset). 37 rows in batches of 16 end with 5 (on 4 devices,
# and on the 2 of the 2 x 2 mesh's batch axis); 33 end with 1.
UNEVEN = [("dp", "gan", 37, False), ("dp", "vae", 33, True), ("dp", "ddpm", 37, True),
          ("dp", "gpt", 33, False), ("mp", "gpt", 37, False)]


def devices_run(out):
    import jax
    from keras import distribution as kd

    assert len(jax.devices()) == DEVICES, jax.devices()
    report = {}
    data_parallel = kd.DataParallel(devices=jax.devices())
    for name in dm.FAMILIES:
        with data_parallel.scope():
            run = dm.equivalence_run(name)
        dm.save_run(os.path.join(out, f"dp_{name}"), run)
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
            run = dm.equivalence_run(name)
        dm.save_run(os.path.join(out, f"mp_{name}"), run)
    # A last batch the devices do not divide, laid out whole on each.
    for kind, name, rows, as_dataset in UNEVEN:
        scope = data_parallel.scope() if kind == "dp" else kd.ModelParallel(
            layout_map=kd.LayoutMap(mesh), batch_dim_name="batch").scope()
        with scope:
            run = dm.equivalence_run(name, rows=rows, as_dataset=as_dataset)
        dm.save_run(os.path.join(out, f"uneven_{kind}_{name}"), run)
    from keras.src.backend.jax import distribution_lib
    report["unpatched"] = distribution_lib.distribute_data_input.__name__

    from tests.core_models import TinyGAN, toy_data

    with data_parallel.scope():
        model = TinyGAN(penalty=1.0, seed=0)
        model.compile()
        x = toy_data(64)
        x[3] = np.nan
        history = model.fit(x, batch_size=16, epochs=1, shuffle=False, verbose=0)
    report["skipped"] = history.history["skipped_updates"]
    # A preset saved under DataParallel (the parent loads it on one device).
    model.save_to_preset(os.path.join(out, "preset"))
    np.savez(os.path.join(out, "preset_state.npz"),
             *[np.asarray(v.numpy()) for v in model.variables])
    with data_parallel.scope():
        try:  # 64 rows in batches of 10: the last has 4, and batches of 10 split
            model.fit(toy_data(64), batch_size=10, epochs=1, verbose=0)
            report["indivisible"] = "no error"
        except ValueError as error:
            report["indivisible"] = str(error)
        import tensorflow as tf

        try:  # a dataset batched by 10, known in advance: refused before any step
            model.fit(tf.data.Dataset.from_tensor_slices(toy_data(64)).batch(
                10, drop_remainder=True), epochs=1, verbose=0)
            report["indivisible_dataset"] = "no error"
        except ValueError as error:
            report["indivisible_dataset"] = str(error)
    report["finite"] = bool(all(np.isfinite(v.numpy()).all() for v in model.trainable_variables))
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f)


def test_data_and_model_parallel_match_one_device(tmp_path):
    env = dm.child_env(
        KERAS_BACKEND="jax", XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}"
    )
    result = subprocess.run(
        [sys.executable, "-c",
         f"from tests.test_distributed_jax import devices_run; devices_run({str(tmp_path)!r})"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    # Weights, and every logged number (losses, gradient norms) of every
    # batch and of the epoch, as one device has them.
    for name in dm.FAMILIES:
        reference = dm.equivalence_run(name)
        kinds = ["dp"] + (["mp"] if name in LAYOUTS else [])
        for kind in kinds:
            dm.assert_same_run(dm.load_run(tmp_path / f"{kind}_{name}.npz"), reference,
                               f"{kind} {name}")
    for kind, name, rows, as_dataset in UNEVEN:
        dm.assert_same_run(dm.load_run(tmp_path / f"uneven_{kind}_{name}.npz"),
                           dm.equivalence_run(name, rows=rows),
                           f"{kind} {name}, {rows} rows{' as a dataset' * as_dataset}")
    assert report["unpatched"] == "distribute_data_input"  # (restored after fit)
    # The LayoutMap's kernels are split over the model axis.
    assert len(report["sharded_gpt"]) == 5, report["sharded_gpt"]
    assert len(report["sharded_ddpm"]) == 4, report["sharded_ddpm"]
    # Row 3 is in the first of 4 batches: that step's discriminator update
    # (its loss reads the data) is skipped, not the generator's.
    assert report["skipped"] == [1.0] and report["finite"]
    assert "`batch_size` (10)" in report["indivisible"], report["indivisible"]
    assert "multiple of 4" in report["indivisible"]
    assert "batches of 10" in report["indivisible_dataset"], report["indivisible_dataset"]
    assert "multiple of 4" in report["indivisible_dataset"]
    # The preset saved under DataParallel loads on one device.
    dm.assert_preset_holds(tmp_path / "preset", tmp_path / "preset_state.npz")


def processes_run(out):
    """One of 2 `jax.distributed` processes (`RANK`, `PORT` in the
    environment), one CPU device each, under a `DataParallel` over both."""
    import jax
    import keras

    from tests.core_models import TinyGAN, toy_data
    from zoo.core import distributed

    rank = int(os.environ["RANK"])
    # (The zoo's initialize: keras.distribution.initialize with a heartbeat
    # timeout, which bounds the death at the end.)
    distributed.initialize(f"127.0.0.1:{os.environ['PORT']}", num_processes=2,
                           process_id=rank, timeout=HEARTBEAT)
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    report = {"count": distributed.process_count(), "index": distributed.process_index(),
              "devices": len(jax.devices())}
    # The global batch of 16 as a tf.data.Dataset: Keras gives each process 8.
    kept = []
    dm.save_run(os.path.join(out, f"process{rank}"),
                dm.equivalence_run("gan", as_dataset=True, keep=kept))
    # Rank 0 alone writes the preset of the model trained on 2 processes.
    model = kept[0]
    model.save_to_preset(os.path.join(out, f"preset_process{rank}"))
    np.savez(os.path.join(out, f"state_process{rank}.npz"),
             *[np.asarray(v.numpy()) for v in model.variables])

    import tensorflow as tf

    def batches(rows):
        return tf.data.Dataset.from_tensor_slices(toy_data(rows)).batch(16, drop_remainder=True)

    odd = TinyGAN(penalty=float(rank), seed=0)  # another model on process 1
    odd.compile()
    try:
        odd.fit(batches(32), epochs=1, verbose=0)
        report["mismatch"] = "no error"
    except ValueError as error:
        report["mismatch"] = str(error)

    with open(os.path.join(out, f"report_process{rank}.json"), "w") as f:
        json.dump(report, f)

    # Process 1 dies mid-fit: process 0's `fit` fails with an error, and the
    # process ends within the heartbeat timeout (never hangs).
    try:
        model.fit(batches(16 * 64), epochs=1, verbose=0,
                  callbacks=[dm.DieMidFit(rank, out)])
        death = {"error": None}
    except Exception as error:  # noqa: BLE001 -- whichever error JAX raises
        death = {"error": f"{type(error).__name__}: {str(error)[:500]}"}
    death["failed_at"] = time.time()
    with open(os.path.join(out, f"death{rank}.json"), "w") as f:
        json.dump(death, f)


def test_two_jax_processes_train_one_model(tmp_path):
    port = dm.free_port()
    processes = []
    for rank in range(2):
        # (Files, not pipes: a process blocked on a full pipe would leave
        # the other waiting in a collective.)
        with open(tmp_path / f"stderr{rank}.txt", "w") as stderr:
            processes.append(subprocess.Popen(
                [sys.executable, "-c",
                 f"from tests.test_distributed_jax import processes_run; "
                 f"processes_run({str(tmp_path)!r})"],
                env=dm.child_env(KERAS_BACKEND="jax", RANK=rank, PORT=port),
                stdout=subprocess.DEVNULL, stderr=stderr,
            ))
    start = time.monotonic()
    for p in processes:
        try:
            p.wait(timeout=max(1, 420 - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            for q in processes:
                q.kill()
            raise
    ended = time.time()
    # Process 1 dies on purpose at the end; process 0 is then ended by
    # JAX's coordination service (SIGABRT) at its exit, within the timeout.
    assert processes[1].returncode == 3, (tmp_path / "stderr1.txt").read_text()[-3000:]
    stderr0 = (tmp_path / "stderr0.txt").read_text()
    assert processes[0].returncode != 0, stderr0[-3000:]
    died_at = float((tmp_path / "died_at").read_text())
    death = json.loads((tmp_path / "death0.json").read_text())
    assert death["error"] is not None, stderr0[-3000:]
    assert 0 < death["failed_at"] - died_at < 30, death
    assert ended - died_at < HEARTBEAT + 30, (ended - died_at, stderr0[-3000:])
    reference = dm.equivalence_run("gan")
    for rank in range(2):
        dm.assert_same_run(dm.load_run(tmp_path / f"process{rank}.npz"), reference,
                           f"process {rank}")
        report = json.loads((tmp_path / f"report_process{rank}.json").read_text())
        assert report["count"] == 2 and report["index"] == rank and report["devices"] == 2
        assert "process(es) [1]" in report["mismatch"], report["mismatch"]
    assert (tmp_path / "preset_process0").is_dir()
    assert not (tmp_path / "preset_process1").exists()
    dm.assert_preset_holds(tmp_path / "preset_process0", tmp_path / "state_process0.npz")


def test_initialize_states_its_timeout(monkeypatch):
    from zoo.core import distributed

    # One process (no coordinator): nothing to start.
    assert distributed.initialize() is False
    for bad in (0, -5, "soon"):
        with pytest.raises(ValueError, match="`timeout`"):
            distributed.initialize("127.0.0.1:1", num_processes=2, process_id=0, timeout=bad)
    monkeypatch.setenv("ZOO_DISTRIBUTED_TIMEOUT", "0")
    with pytest.raises(ValueError, match="ZOO_DISTRIBUTED_TIMEOUT"):
        distributed.initialize("127.0.0.1:1", num_processes=2, process_id=0)
    monkeypatch.delenv("ZOO_DISTRIBUTED_TIMEOUT")

    # A JAX whose `jax.distributed.initialize` takes no heartbeat timeout
    # (0.4.30, the oldest allowed): a `timeout` is refused, none is passed on.
    import jax

    calls = []

    def older(coordinator_address=None, num_processes=None, process_id=None):
        calls.append((coordinator_address, num_processes, process_id))
        raise RuntimeError("started")

    monkeypatch.setattr(jax.distributed, "initialize", older)
    with pytest.raises(ValueError, match="heartbeat_timeout_seconds"):
        distributed.initialize("127.0.0.1:1", num_processes=2, process_id=0, timeout=5)
    assert not calls
    with pytest.raises(RuntimeError, match="started"):
        distributed.initialize("127.0.0.1:1", num_processes=2, process_id=0)
    assert calls == [("127.0.0.1:1", 2, 0)]
