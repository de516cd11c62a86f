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

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="torchrun runs PyTorch processes"
)

WORLD = 2


def _launch(task, out, timeout, **env):
    port = dm.free_port()
    processes = []
    for rank in range(WORLD):
        child = dm.child_env(
            RANK=rank, LOCAL_RANK=rank, WORLD_SIZE=WORLD, MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port, KERAS_BACKEND="torch", **env,
        )
        processes.append(subprocess.Popen(
            [sys.executable, "-c",
             f"from tests.test_distributed_torch import {task}; {task}({str(out)!r})"],
            env=child, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    results = []
    start = time.monotonic()
    for p in processes:
        try:
            stdout, stderr = p.communicate(timeout=max(1, timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            for q in processes:
                q.kill()
            raise AssertionError(f"{task}: the processes did not finish in {timeout} s")
        results.append((p.returncode, stdout, stderr))
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
        weights = dm.equivalence_run(name, batch_size=dm.GLOBAL_BATCH // WORLD)
        np.savez(os.path.join(out, f"{name}_rank{rank}.npz"), *weights)
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
    report["group_active"] = torch_distributed.active()
    with open(os.path.join(out, f"report_rank{rank}.json"), "w") as f:
        json.dump(report, f)


def dying_run(out):
    rank = int(os.environ["RANK"])

    class Die(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if rank == 1 and batch == 2:
                os._exit(3)

    model = TinyGAN(seed=0)
    model.compile()
    model.fit(toy_data(256), batch_size=8, epochs=5, verbose=0, callbacks=[Die()])


# ---------------------------------------------------------------------------
# The tests.


def test_torchrun_trains_one_model_across_processes(tmp_path):
    results, _ = _launch("working_run", tmp_path, timeout=240)
    for code, stdout, stderr in results:
        assert code == 0, stderr[-3000:]
    reports = [json.loads((tmp_path / f"report_rank{r}.json").read_text()) for r in range(WORLD)]
    r0, r1 = reports

    # Equivalence with one process seeing the whole global batch.
    for name in dm.FAMILIES:
        reference = dm.equivalence_run(name)
        for rank in range(WORLD):
            got = np.load(tmp_path / f"{name}_rank{rank}.npz")
            got = [got[f"arr_{k}"] for k in range(len(got.files))]
            assert len(got) == len(reference)
            for a, b in zip(got, reference):
                np.testing.assert_allclose(a, b, atol=dm.ATOL, err_msg=name)

    assert [r["process_index"] for r in reports] == [0, 1]
    assert r0["process_count"] == 2 and r0["group_active"]
    # 64 rows, 8 per process, 2 processes: 4 steps an epoch.
    assert r0["steps_arrays"] == r1["steps_arrays"] == 8
    # 5 batches of 8 (tf.data, PyDataset): 2 each; 40 rows (DataLoader): 20 each, 3 steps.
    assert r0["steps"] == r1["steps"] == {"tf_data": 2, "py_dataset": 2, "data_loader": 3}
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
    results, seconds = _launch("dying_run", tmp_path, timeout=120, ZOO_DISTRIBUTED_TIMEOUT=30)
    assert results[1][0] == 3
    code, _, stderr = results[0]
    assert code != 0
    assert "Error" in stderr, stderr[-2000:]
    assert seconds < 90
