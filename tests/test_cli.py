"""Tests of the command line, `python -m zoo`, and of what `import zoo` loads,
on every backend."""

import argparse
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import zoo
import zoo.__main__ as cli
from zoo.__main__ import main
from zoo.presets import checks, preset_metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def keep_torch_threads(monkeypatch):
    """`sample` and `train` may lower PyTorch's thread count on a busy
    machine (and say so on stderr, which the tests read): the tests run as
    on an idle machine (`test_torch_threads_only_on_idle_cores` sets the load
    itself), and the thread count is put back for the tests that follow."""
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    if keras.backend.backend() != "torch":
        yield
        return
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_python(args, env=None, timeout=300):
    """`python ARGS` from the repository root, so that its `zoo` is this one."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def one_error_line(err):
    """stderr is the backend line and one error line, no traceback."""
    lines = err.strip().splitlines()
    return len(lines) == 2 and "backend" in lines[0] and lines[1].startswith("python -m zoo")


def test_list(capsys):
    assert main(["list"]) == 0
    captured = capsys.readouterr()
    for name in zoo.list_presets():
        assert name in captured.out
    # The backend, once, on stderr (stdout stays the table).
    assert captured.err.count("backend") == 1
    assert f"backend {keras.backend.backend()}" in captured.err
    assert main(["list", "--family", "gan"]) == 0
    out = capsys.readouterr().out
    assert "gan_ring" in out and "vae_digits" not in out


def test_bad_arguments_are_clear(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["list", "--family", "gans"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'gans'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sample", "gan_ring", "--num", "0"])
    assert "expected a positive integer, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sample", "gpt_markov", "--temperature", "-1"])
    assert "expected a number >= 0, got -1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "gan", "--epochs", "1", "--out", "x"])
    assert "--data" in capsys.readouterr().err
    assert main(["info", "gan_rign"]) == 2
    err = capsys.readouterr().err
    assert "Closest: gan_ring" in err and one_error_line(err)
    assert main(["sample", "my_vae"]) == 2  # neither built in nor a folder here
    err = capsys.readouterr().err
    assert "'my_vae'" in err and one_error_line(err)
    # Every place zoo.from_preset looked: the built-in names, a folder, the cache.
    assert all(place in err for place in ("built-in", "folder", "cache")), err
    assert main(["train", "nsf", "--data", "digits", "--epochs", "1", "--out", "x"]) == 2
    assert "nsf takes vectors" in capsys.readouterr().err
    assert main(["train", "vae", "--data", "markov", "--epochs", "1", "--out", "x"]) == 2
    assert "trains only MODEL gpt" in capsys.readouterr().err


def test_options_that_do_not_apply_are_errors(tmp_path, capsys):
    cases = [
        (["sample", "gpt_markov", "--out", str(tmp_path / "t.png")], "--out does not apply"),
        (["sample", "gpt_markov", "--steps", "5"], "--steps does not apply"),
        (["sample", "gan_ring", "--prompt", "hi"], "--prompt does not apply"),
        (["sample", "vae_digits", "--temperature", "0.5"], "--temperature does not apply"),
        (["sample", "gan_ring", "--max-new-tokens", "3"], "--max-new-tokens does not apply"),
        (["sample", "gan_ring", "--steps", "5"], "--steps does not apply"),
        (["sample", "gan_ring", "--out", str(tmp_path / "x.txt")], "--out must name a .png"),
        (["train", "gan", "--data", "digits", "--num-data", "9", "--epochs", "1",
          "--out", str(tmp_path / "p")], "--num-data does not apply to --data digits"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not list(tmp_path.iterdir())


def test_info(capsys):
    assert main(["info", "gan_ring"]) == 0
    out = capsys.readouterr().out
    meta = preset_metadata("gan_ring")
    assert f"trained on:  {meta['training_backend']}" in out
    assert "modes_covered=8" in out


def test_sample_images_points_and_text(tmp_path, capsys):
    grid = tmp_path / "grid.png"
    assert main(["sample", "vae_digits", "--num", "16", "--seed", "0", "--out", str(grid)]) == 0
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(grid) in capsys.readouterr().out  # says where it wrote
    points = tmp_path / "points.png"
    assert main(["sample", "gan_ring", "--num", "64", "--out", str(points)]) == 0
    assert points.exists()
    raw = tmp_path / "points.npy"
    assert main(["sample", "gan_ring", "--num", "5", "--out", str(raw)]) == 0
    assert np.load(raw).shape == (5, 2)
    capsys.readouterr()
    assert main(["sample", "gpt_markov", "--num", "2", "--max-new-tokens", "12"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(len(line) == len("[0] ") + 13 for line in lines)


def test_train_saves_a_preset(tmp_path, capsys):
    out = tmp_path / "my_gan"
    args = ["train", "gan", "--data", "ring", "--epochs", "1", "--num-data", "256",
            "--batch-size", "128", "--out", str(out)]
    assert main(args) == 0
    assert "Saved the preset" in capsys.readouterr().out
    model = zoo.from_preset(str(out))
    checks.check_goldens(model, preset_metadata(str(out)))
    # The command that made it, as given (not the test runner's arguments).
    assert preset_metadata(str(out))["command"].startswith("python -m zoo train gan ")
    assert main(args + ["--overwrite"]) == 0
    capsys.readouterr()


def test_train_checks_out_before_training(tmp_path, capsys, monkeypatch):
    def no_training(args):
        raise AssertionError("trained before checking --out")

    monkeypatch.setattr(cli, "_model_and_data", no_training)
    preset = tmp_path / "preset"
    preset.mkdir()
    for name in cli.PRESET_FILES:
        (preset / name).write_text("{}")
    args = ["train", "gan", "--data", "ring", "--epochs", "1", "--out"]
    assert main(args + [str(preset)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    # A folder of the user's own files is never replaced, --overwrite or not.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(args + [str(mine), "--overwrite"]) == 2
    assert "not a keras-genzoo preset (it holds notes.txt)" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    assert main(args + [str(tmp_path / "file")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_tensorflow_logs_quiet_unless_verbose(monkeypatch, capsys):
    quiet = argparse.Namespace(verbose=False, command="list")
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    cli._load_keras(quiet)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    cli._load_keras(argparse.Namespace(verbose=True, command="list"))
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # the user's own setting wins
    cli._load_keras(quiet)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    capsys.readouterr()
    # --verbose before or after the command.
    assert cli._parser().parse_args(["-v", "list"]).verbose
    assert cli._parser().parse_args(["list", "--verbose"]).verbose
    assert not cli._parser().parse_args(["list"]).verbose


def test_torch_threads_only_on_idle_cores(monkeypatch, capsys):
    from zoo.core import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cpus = threads.idle_cores()[0]
    monkeypatch.setattr(os, "getloadavg", lambda: (cpus + 0.8, 0.0, 0.0))
    if keras.backend.backend() != "torch":
        assert threads.limit_torch_threads() is None
        return
    import torch

    torch.set_num_threads(2)
    assert threads.limit_torch_threads() == 1 and torch.get_num_threads() == 1
    assert "PyTorch: 1 CPU thread instead of 2" in capsys.readouterr().err
    torch.set_num_threads(2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # an idle machine
    assert threads.limit_torch_threads() == min(2, cpus) and capsys.readouterr().err == ""
    monkeypatch.setattr(os, "getloadavg", lambda: (cpus + 0.8, 0.0, 0.0))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice
    assert threads.limit_torch_threads() is None and torch.get_num_threads() == 2


@pytest.mark.parametrize("orig_argv, light", [
    (["python", "-m", "zoo", "--help"], True),
    (["python", "-mzoo"], True),
    (["python", "-B", "-X", "importtime", "-W", "error", "-Bm", "zoo", "list"], True),
    (["python", "-m", "zoo.presets.build", "gan_ring"], False),
    (["python", "-m", "mypackage"], False),
    (["python", "-X", "m", "-m", "other"], False),
])
def test_light_only_under_python_m_zoo(monkeypatch, orig_argv, light):
    monkeypatch.setattr(sys, "argv", ["-m"])  # as runpy leaves it while importing
    monkeypatch.setattr(sys, "orig_argv", orig_argv, raising=False)
    assert zoo._imported_by_python_m_zoo() is light
    monkeypatch.setattr(sys, "argv", ["/path/to/zoo/__main__.py", "list"])
    assert not zoo._imported_by_python_m_zoo()


def test_help_does_not_import_keras():
    # -X importtime lists every module the process imports, on stderr.
    for args in (["--help"], ["train", "--help"], ["sample", "--help"]):
        result = run_python(["-X", "importtime", "-m", "zoo", *args], timeout=120)
        assert result.returncode == 0, result.stderr
        assert "usage: python -m zoo" in result.stdout
        imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()
                    if line.startswith("import time:")}
        assert imported, result.stderr
        heavy = sorted(imported & {"keras", "numpy", "tensorflow", "jax", "torch"})
        assert not heavy, f"python -m zoo {' '.join(args)} imported {heavy}"


def test_module_entry_point():
    result = run_python(["-m", "zoo", "list", "--family", "transformer"], timeout=300)
    assert result.returncode == 0, result.stderr
    assert "gpt_markov" in result.stdout
    assert result.stderr.count("backend") == 1


def registering_modules():
    """Every zoo module that registers a class with Keras, from the source."""
    found = []
    for folder, _, files in os.walk(os.path.join(ROOT, "zoo")):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".py") and name != "__main__.py":
                with open(path, encoding="utf-8") as f:
                    if "register_keras_serializable" in f.read():
                        module = os.path.relpath(path[:-3], ROOT).replace(os.sep, ".")
                        found.append(module.removesuffix(".__init__"))
    return sorted(found)


def test_import_zoo_registers_every_class(tmp_path):
    # One model of each family, saved here, loaded in a process that imports
    # nothing but keras and zoo.
    expected = {}
    for name in ("gan_ring", "vae_digits", "nsf_moons", "ddpm_ring", "gpt_markov"):
        model = zoo.from_preset(name)
        model.save(tmp_path / f"{name}.keras")
        expected[name] = [type(model).__name__, float(sum(np.sum(w) for w in model.get_weights()))]
    script = (
        "import json, sys, keras, numpy as np\n"
        "import zoo\n"
        "found = {}\n"
        f"for name in {sorted(expected)!r}:\n"
        f"    model = keras.saving.load_model({str(tmp_path)!r} + '/' + name + '.keras')\n"
        "    found[name] = [type(model).__name__,\n"
        "                   float(sum(np.sum(w) for w in model.get_weights()))]\n"
        "print(json.dumps({'models': found, 'modules': sorted(sys.modules)}))\n"
    )
    result = run_python(["-c", script])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["models"] == expected
    missing = sorted(set(registering_modules()) - set(report["modules"]))
    assert not missing, f"`import zoo` does not import {missing}, which register classes"
