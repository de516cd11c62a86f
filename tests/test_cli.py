"""Tests of the command line, `python -m zoo`, on every backend."""

import os
import subprocess
import sys

import numpy as np
import pytest

import zoo
from zoo.__main__ import main
from zoo.presets import checks, preset_metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in zoo.list_presets():
        assert name in out
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
        main(["train", "gan", "--epochs", "1", "--out", "x"])
    assert "--data" in capsys.readouterr().err
    assert main(["info", "gan_rign"]) == 2
    assert "Closest: gan_ring" in capsys.readouterr().err
    assert main(["train", "nsf", "--data", "digits", "--epochs", "1", "--out", "x"]) == 2
    assert "nsf takes vectors" in capsys.readouterr().err
    assert main(["train", "vae", "--data", "markov", "--epochs", "1", "--out", "x"]) == 2
    assert "trains only MODEL gpt" in capsys.readouterr().err


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
    points = tmp_path / "points.png"
    assert main(["sample", "gan_ring", "--num", "64", "--out", str(points)]) == 0
    assert points.exists()
    raw = tmp_path / "points.npy"
    assert main(["sample", "gan_ring", "--num", "5", "--out", str(raw)]) == 0
    assert np.load(raw).shape == (5, 2)
    assert main(["sample", "gan_ring", "--out", str(tmp_path / "x.txt")]) == 2
    assert "--out must name a .png" in capsys.readouterr().err
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
    assert main(args) == 2  # exists: needs --overwrite
    assert "overwrite" in capsys.readouterr().err


def test_module_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "zoo", "list", "--family", "transformer"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "gpt_markov" in result.stdout
