"""PyTorch data parallelism under `torchrun`'s environment: 2 real processes
on 127.0.0.1 (gloo), launched as `torchrun` launches them (`RANK`,
`WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` in the environment), running
plain `fit`/`evaluate` code. One pair of processes runs every check of a
working run (each process imports Keras and PyTorch once); a second pair
checks that a rank dying mid-fit stops the other with an error.
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
from tests.core_models import TinyGAN, toy_data  # (registers TinyGAN for the preset)

pytestmark = [
    pytest.mark.skipif(
        keras.backend.backend() != "torch", reason="torchrun runs PyTorch processes"
    ),
    pytest.mark.heavy,
]

WORLD = 2
# Rows of the partial-batch run: batches of 8, 8, 8 and 6, read by ranks 0,
# 1, 0, 1 (global batches of 16 and 14).
PARTIAL_ROWS = 30


def _launch(task, out, timeout, **env):
    port = dm.free_port()
    processes = []
    for rank in range(WORLD):
        child = dm.child_env(
            RANK=rank, LOCAL_RANK=rank, WORLD_SIZE=WORLD, MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port, KERAS_BACKEND="torch", **env,
        )
        # (Files, not pipes: a rank blocked on a full pipe would leave the
        # other waiting in a collective.)
        with open(os.path.join(out, f"{task}_stderr{rank}.txt"), "w") as stderr:
            processes.append(subprocess.Popen(
                [sys.executable, "-c",
                 f"from tests.test_distributed_torch import {task}; {task}({str(out)!r})"],
                env=child, stdout=subprocess.DEVNULL, stderr=stderr, text=True,
            ))
    results = []
    start = time.monotonic()
    for rank, p in enumerate(processes):
        try:
            p.wait(timeout=max(1, timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            for q in processes:
                q.kill()
            raise AssertionError(f"{task}: the processes did not finish in {timeout} s")
        with open(os.path.join(out, f"{task}_stderr{rank}.txt")) as f:
            results.append((p.returncode, "", f.read()))
    return results, time.monotonic() - start


# ---------------------------------------------------------------------------
# What the processes run.


def working_run(out):
    import torch.distributed as dist

    from zoo.core import distributed, torch_distributed

    rank = int(os.environ["RANK"])
    report = {}
    # 1. Equivalence: each rank sees half of every global batch.
    for name in dm.FAMILIES:
        run = dm.equivalence_run(name, batch_size=dm.GLOBAL_BATCH // WORLD)
        dm.save_run(os.path.join(out, f"{name}_rank{rank}"), run)
    # A dataset of 30 rows in batches of 8: rank 1's second batch has 6.
    run = dm.equivalence_run("gan", batch_size=dm.GLOBAL_BATCH // WORLD, as_dataset=True,
                             rows=PARTIAL_ROWS)
    dm.save_run(os.path.join(out, f"partial_rank{rank}"), run)
    # The compiled (jit_compile=True), "auto" and eager (False) training
    # steps: each `fit` plans 40 epochs of 3 steps (120: "auto" traces the
    # step) and stops after the first. The gradients are averaged inside
    # the graphs: the GAN matches one process, the traced step the eager
    # one bit for bit.
    import warnings

    from zoo.core import torch_step

    class StopAfterOneEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    for setting in (True, "auto", False):
        model, data = dm.family("gan")
        model.compile(optimizer={"generator": keras.optimizers.SGD(0.05),
                                 "discriminator": keras.optimizers.SGD(0.05)},
                      jit_compile=setting)
        model.record_gradient_norms(True)
        record = dm._BatchLogs()
        with warnings.catch_warnings(record=True) as caught, dm.constant_noise():
            warnings.simplefilter("always")
            model.fit(data[: dm.GLOBAL_BATCH * dm.STEPS], batch_size=dm.GLOBAL_BATCH // WORLD,
                      epochs=40, shuffle=False, verbose=0,
                      callbacks=[StopAfterOneEpoch(), record])
            report[f"batches_{setting}"] = record.batches  # (over both ranks' examples)
            np.savez(os.path.join(out, f"compiled_{setting}_rank{rank}.npz"),
                     *[v.numpy() for v in model.trainable_variables])
            model.fit(data[:16], batch_size=8, epochs=1, verbose=0)  # (the same trace serves)
        report[f"warnings_{setting}"] = [str(w.message) for w in caught
                                         if "step" in str(w.message)]
        report[f"step_{setting}"] = type(model.train_function).__name__
        step = model.train_function
        traced = getattr(step, "traced", step)  # (AutoStep's traced tier)
        report[f"traced_{setting}"] = (
            isinstance(traced, torch_step.CompiledStep) and getattr(step, "tier", 1) == 1
            and traced.fallback is None and len(traced.cache) == 1)
    report["process_index"] = distributed.process_index()
    report["process_count"] = distributed.process_count()

    # 2. A BatchNorm GAN with per-rank noise, several input kinds; only rank
    # 0 writes. Weights and BatchNorm statistics end equal on every rank.
    model = TinyGAN(penalty=1.0, batch_norm=True, seed=rank)  # seeds differ: rank 0's wins
    model.compile()
    data = toy_data(64)
    csv = os.path.join(out, f"log_rank{rank}.csv")
    history = model.fit(data, batch_size=8, epochs=2, verbose=0,
                        callbacks=[keras.callbacks.CSVLogger(csv)])
    report["steps_arrays"] = int(model.optimizer.iterations.numpy())
    report["loss"] = history.history["loss"]
    seeds = [s.numpy().tolist() for s in model._seed_states()]
    report["seed_states"] = seeds

    import tensorflow as tf
    import torch

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return data[i * 8:(i + 1) * 8]

    loader = torch.utils.data.DataLoader(torch.from_numpy(data[:40]), batch_size=8, shuffle=True)
    steps = {}
    for kind, source in [
        ("tf_data", tf.data.Dataset.from_tensor_slices(data[:40]).batch(8)),
        ("py_dataset", Batches()),
        ("data_loader", loader),
    ]:
        before = int(model.optimizer.iterations.numpy())
        model.fit(source, epochs=1, verbose=0)
        steps[kind] = int(model.optimizer.iterations.numpy()) - before
    report["steps"] = steps
    flat = np.concatenate([np.ravel(v.numpy()) for v in model.variables
                           if "seed" not in v.path])
    gathered = [torch.zeros(flat.size, dtype=torch.float64) for _ in range(WORLD)]
    dist.all_gather(gathered, torch.from_numpy(flat.astype("float64")))
    report["max_weight_difference"] = float(max(
        np.max(np.abs(g.numpy() - gathered[0].numpy())) for g in gathered))

    # 3. evaluate: every rank evaluates its own half; the result is the
    # mean over all examples (the parent compares it with one process).
    with dm.constant_noise():  # (the ranks' own noise would differ from one process's)
        report["evaluate"] = model.evaluate(data, batch_size=8, verbose=0, return_dict=True)
    np.savez(os.path.join(out, f"gan_state_rank{rank}.npz"),
             *[v.numpy() for v in model.variables])
    model.save_to_preset(os.path.join(out, f"preset_rank{rank}"))

    # 4. Different models on different ranks: a clear error on every rank.
    odd = TinyGAN(latent_dim=3 + rank, seed=0)
    odd.compile()
    try:
        odd.fit(data, batch_size=8, epochs=1, verbose=0)
        report["mismatch"] = "no error"
    except ValueError as error:
        report["mismatch"] = str(error)
    # A NaN row in rank 0's first batch: both ranks skip that update (the
    # averaged gradients are NaN on both), counted once.
    nan_model = TinyGAN(seed=0)
    nan_model.compile()
    x = toy_data(64)
    x[0] = np.nan
    history = nan_model.fit(x, batch_size=8, epochs=1, shuffle=False, verbose=0)
    report["skipped"] = history.history["skipped_updates"]
    report["group_active"] = torch_distributed.active()
    with open(os.path.join(out, f"report_rank{rank}.json"), "w") as f:
        json.dump(report, f)


def dying_run(out):
    rank = int(os.environ["RANK"])

    model = TinyGAN(seed=0)
    model.compile()
    try:
        model.fit(toy_data(256), batch_size=8, epochs=5, verbose=0,
                  callbacks=[dm.DieMidFit(rank, out)])
    except Exception as error:  # noqa: BLE001 -- whichever error torch.distributed raises
        with open(os.path.join(out, "failed.json"), "w") as f:
            json.dump({"failed_at": time.time(), "error": f"{type(error).__name__}: {error}"}, f)
        raise


# ---------------------------------------------------------------------------
# The tests.


def test_torchrun_trains_one_model_across_processes(tmp_path):
    results, _ = _launch("working_run", tmp_path, timeout=420)
    for code, stdout, stderr in results:
        assert code == 0, stderr[-3000:]
    reports = [json.loads((tmp_path / f"report_rank{r}.json").read_text()) for r in range(WORLD)]
    r0, r1 = reports

    # Equivalence with one process seeing the whole global batch: weights,
    # and every logged number (losses, gradient norms) of every batch and
    # of the epoch, the same on both ranks.
    for name in dm.FAMILIES:
        reference = dm.equivalence_run(name)
        for rank in range(WORLD):
            dm.assert_same_run(dm.load_run(tmp_path / f"{name}_rank{rank}.npz"), reference,
                               f"{name}, rank {rank}")
        if name == "gan":
            gan_weights = reference[0]
    # A partial batch on one rank counts for its 6 examples: the update of
    # the 14 rows, as one process has it.
    reference = dm.equivalence_run("gan", rows=PARTIAL_ROWS)
    for rank in range(WORLD):
        dm.assert_same_run(dm.load_run(tmp_path / f"partial_rank{rank}.npz"), reference,
                           f"a partial batch on rank 1, rank {rank}")
    # jit_compile=True (TorchInductor), "auto" (the traced step) and False
    # (eager): the same update as one process; traced and eager bit for bit.
    for setting in (True, "auto", False):
        assert r0[f"traced_{setting}"] == (setting is not False), r0[f"step_{setting}"]
        assert r0[f"warnings_{setting}"] == r1[f"warnings_{setting}"] == []
        for rank in range(WORLD):
            got = np.load(tmp_path / f"compiled_{setting}_rank{rank}.npz")
            assert len(got.files) == len(gan_weights)
            for k, reference in enumerate(gan_weights):
                np.testing.assert_allclose(got[f"arr_{k}"], reference, atol=dm.ATOL,
                                           err_msg=f"jit_compile={setting}, rank {rank}")
                if setting == "auto":
                    eager = np.load(tmp_path / f"compiled_False_rank{rank}.npz")
                    np.testing.assert_array_equal(got[f"arr_{k}"], eager[f"arr_{k}"])
        # Every step's logs (losses, gradient norms): the same on both ranks,
        # the one-process numbers, the traced step's the eager step's.
        batches = r0[f"batches_{setting}"]
        assert batches == r1[f"batches_{setting}"] and len(batches) == dm.STEPS
        for got, want in zip(batches, r0["batches_False"]):
            assert got.keys() == want.keys()
            for key in want:
                if setting == "auto":
                    assert got[key] == want[key], (key, got, want)
                np.testing.assert_allclose(got[key], want[key], rtol=dm.LOG_RTOL, err_msg=key)
    for got, want in zip(r0["batches_False"], dm.equivalence_run("gan")[1]["batches"]):
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=dm.LOG_RTOL, atol=1e-6,
                                       err_msg=key)
    assert r0["skipped"] == r1["skipped"] == [1.0]

    assert [r["process_index"] for r in reports] == [0, 1]
    assert r0["process_count"] == 2 and r0["group_active"]
    # 64 rows, 8 per process, 2 processes: 4 steps an epoch.
    assert r0["steps_arrays"] == r1["steps_arrays"] == 8
    # 5 batches of 8 (tf.data, PyDataset): padded with the first, 3 each;
    # 40 rows (DataLoader): 20 each, 3 steps.
    assert r0["steps"] == r1["steps"] == {"tf_data": 3, "py_dataset": 3, "data_loader": 3}
    assert r0["max_weight_difference"] == 0.0 and r1["max_weight_difference"] == 0.0
    assert r0["loss"] == r1["loss"]  # epoch logs: every rank's examples
    # Each rank draws its own noise: its generators are on their own streams.
    assert r0["seed_states"] != r1["seed_states"]
    assert r0["seed_states"][0][0] + 2**24 == r1["seed_states"][0][0]

    # evaluate: the mean over every example, as one process computes it.
    from zoo.presets import from_preset

    assert (tmp_path / "preset_rank0").is_dir() and not (tmp_path / "preset_rank1").exists()
    assert (tmp_path / "log_rank0.csv").exists() and not (tmp_path / "log_rank1.csv").exists()
    model = from_preset(str(tmp_path / "preset_rank0"))  # loads on one device
    state = np.load(tmp_path / "gan_state_rank0.npz")
    for k, v in enumerate(model.variables):
        if "seed" not in v.path:
            np.testing.assert_array_equal(v.numpy(), state[f"arr_{k}"])
    model.compile()
    # The ranks' batches, in one process (the discriminator's BatchNorm uses
    # batch statistics in this model's test step).
    data = toy_data(64)
    with dm.constant_noise():
        single = model.evaluate(np.concatenate([data[0::2], data[1::2]]), batch_size=8,
                                verbose=0, return_dict=True)
    assert r0["evaluate"] == r1["evaluate"]
    for key, value in single.items():
        np.testing.assert_allclose(r0["evaluate"][key], value, rtol=1e-5, err_msg=key)

    for r in reports:
        assert "differs from rank 0's" in r["mismatch"] and "[1]" in r["mismatch"]


def test_a_rank_dying_mid_fit_stops_the_others_with_an_error(tmp_path):
    results, _ = _launch("dying_run", tmp_path, timeout=300, ZOO_DISTRIBUTED_TIMEOUT=30)
    assert results[1][0] == 3
    code, _, stderr = results[0]
    assert code != 0
    assert "Error" in stderr, stderr[-2000:]
    # Rank 0's `fit` fails within the collective timeout (30 s) of rank 1's death.
    failed = json.loads((tmp_path / "failed.json").read_text())
    seconds = failed["failed_at"] - float((tmp_path / "died_at").read_text())
    assert 0 < seconds < 60, (seconds, failed["error"][:500])


def test_initialize_takes_torchruns_environment_and_a_timeout():
    from zoo.core import distributed

    assert distributed.initialize() is False  # no torchrun: one process
    with pytest.raises(ValueError, match="torchrun"):
        distributed.initialize("127.0.0.1:1", num_processes=2, process_id=0)
    with pytest.raises(ValueError, match="`timeout`"):
        distributed.initialize(timeout=-1)
