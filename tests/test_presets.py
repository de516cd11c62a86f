"""Tests of zoo.presets on every backend: the format, every source (a
directory, file:// and http:// archives served from 127.0.0.1), the errors,
and the built-in presets' golden values and quality figures."""

import functools
import http.server
import io
import json
import os
import shutil
import tarfile
import threading
import zipfile

import keras
import numpy as np
import pytest

import zoo
from zoo.core import GenerativeModel
from zoo.gan import GAN
from zoo.presets import PresetError, checks, preset_metadata
from zoo.presets.format import sha256_of
from zoo.vae import VAE


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    model = GAN(data_shape=(2,), latent_dim=4, hidden_units=(8,), seed=0)
    # Weights unlike a fresh model's, as if trained.
    rng = np.random.default_rng(1)
    for v in model.weights:
        if "float" in str(v.dtype):
            v.assign(rng.normal(size=v.shape).astype("float32"))
    directory = str(tmp_path_factory.mktemp("presets") / "tiny_gan")
    model.save_to_preset(
        directory,
        metadata={"dataset": "none", "goldens": checks.record_goldens(model, "generator")},
    )
    return directory


@pytest.fixture(autouse=True)
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


def _copy(preset, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(preset, target)
    return target


def _rehash(directory):
    """Updates metadata.json's sha256 after a test edits a file on purpose."""
    meta_path = directory / "metadata.json"
    meta = json.loads(meta_path.read_text())
    for name in meta["sha256"]:
        meta["sha256"][name] = sha256_of(directory / name)
    meta_path.write_text(json.dumps(meta))


# ---------------------------------------------------------------------------
# The format and the local directory source.


def test_directory_round_trip(tiny_preset):
    files = sorted(os.listdir(tiny_preset))
    assert files == ["config.json", "metadata.json", "model.weights.h5"]
    meta = preset_metadata(tiny_preset)
    assert meta["family"] == "gan" and meta["class_name"] == "zoo>GAN"
    assert meta["training_backend"] in ("tensorflow", "jax", "torch")
    assert meta["parameter_count"] > 0 and meta["keras_version"]
    for load in (zoo.from_preset, GAN.from_preset, GenerativeModel.from_preset):
        model = load(tiny_preset)
        assert type(model) is GAN and model.latent_dim == 4
        assert checks.check_goldens(model, meta) < 1e-5
    fresh = zoo.from_preset(tiny_preset, load_weights=False)
    with pytest.raises(PresetError, match="golden"):
        checks.check_goldens(fresh, meta)


def test_wrong_class_is_refused_before_building(tiny_preset):
    with pytest.raises(PresetError, match="holds a GAN, not a VAE"):
        VAE.from_preset(tiny_preset)


def test_save_refuses_existing_directory_and_overwrites_on_request(tiny_preset, tmp_path):
    target = _copy(tiny_preset, tmp_path)
    model = GAN.from_preset(tiny_preset)
    with pytest.raises(ValueError, match="already exists.*overwrite=True"):
        model.save_to_preset(target)
    model.save_to_preset(target, metadata={"note": "again"}, overwrite=True)
    assert preset_metadata(str(target))["note"] == "again"
    assert [e for e in os.listdir(tmp_path) if ".tmp-" in e or ".old-" in e] == []


def test_failed_save_leaves_nothing(tiny_preset, tmp_path, monkeypatch):
    model = GAN.from_preset(tiny_preset)

    def broken(self, path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(GAN, "save_weights", broken)
    with pytest.raises(OSError, match="disk full"):
        model.save_to_preset(tmp_path / "out" / "p")
    assert os.listdir(tmp_path / "out") == []


def test_missing_file(tiny_preset, tmp_path):
    target = _copy(tiny_preset, tmp_path)
    os.remove(target / "model.weights.h5")
    with pytest.raises(PresetError, match="missing model.weights.h5"):
        zoo.from_preset(str(target))
    # Without weights the config alone suffices.
    assert type(zoo.from_preset(str(target), load_weights=False)) is GAN


def test_corrupted_weights_fail_the_hash(tiny_preset, tmp_path):
    target = _copy(tiny_preset, tmp_path)
    data = bytearray((target / "model.weights.h5").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (target / "model.weights.h5").write_bytes(bytes(data))
    with pytest.raises(PresetError, match="corrupted or was changed"):
        zoo.from_preset(str(target))


def test_truncated_weights_are_a_clear_error(tiny_preset, tmp_path):
    target = _copy(tiny_preset, tmp_path)
    data = (target / "model.weights.h5").read_bytes()
    (target / "model.weights.h5").write_bytes(data[: len(data) // 2])
    _rehash(target)  # get past the hash: the HDF5 reader must refuse it too
    with pytest.raises(PresetError, match="Could not load the weights"):
        zoo.from_preset(str(target))


def test_weights_of_another_architecture(tiny_preset, tmp_path):
    target = _copy(tiny_preset, tmp_path)
    other = GAN(data_shape=(2,), latent_dim=4, hidden_units=(8, 8), seed=0)
    other.save_to_preset(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "model.weights.h5", target / "model.weights.h5")
    _rehash(target)
    with pytest.raises(PresetError, match="Could not load the weights"):
        zoo.from_preset(str(target))


def test_unknown_class(tiny_preset, tmp_path):
    target = _copy(tiny_preset, tmp_path)
    config = json.loads((target / "config.json").read_text())
    config["registered_name"] = config["class_name"] = "evil>Payload"
    (target / "config.json").write_text(json.dumps(config))
    _rehash(target)
    with pytest.raises(PresetError, match="'evil>Payload', which is not registered"):
        zoo.from_preset(str(target))


def test_config_with_python_code_is_refused(tiny_preset, tmp_path):
    # A Lambda layer's config holds marshalled Python bytecode: safe mode
    # refuses to run it, when saving (the preset could not load) and when
    # loading a config that was written by other means.
    generator = keras.Sequential(
        [keras.Input((4,)), keras.layers.Lambda(lambda z: z[:, :2] * 2.0)]
    )
    model = GAN(data_shape=(2,), latent_dim=4, hidden_units=(8,), generator=generator,
                ema_momentum=None, seed=0)
    with pytest.raises(PresetError, match="does not load back in safe mode"):
        model.save_to_preset(tmp_path / "lambda_gan")
    assert not os.path.exists(tmp_path / "lambda_gan")

    target = _copy(tiny_preset, tmp_path)
    config = keras.saving.serialize_keras_object(model)
    (target / "config.json").write_text(json.dumps(config, default=str))
    _rehash(target)
    with pytest.raises(PresetError, match="(?s)Could not build the GAN.*Lambda"):
        zoo.from_preset(str(target))


def test_unknown_name_lists_the_closest():
    with pytest.raises(PresetError, match="Unknown preset 'gan_rign'. Closest: gan_ring"):
        zoo.from_preset("gan_rign")
    with pytest.raises(PresetError, match="No preset directory"):
        zoo.from_preset("./no/such/dir")
    with pytest.raises(ValueError, match="load_weights"):
        zoo.from_preset("gan_ring", load_weights="yes")


def test_list_presets():
    names = zoo.list_presets()
    assert names == sorted(names) and len(names) >= 5
    families = {f: zoo.list_presets(f) for f in ("gan", "vae", "flow", "diffusion", "transformer")}
    assert all(families.values()), families
    assert sorted(sum(families.values(), [])) == names
    with pytest.raises(ValueError, match="`family` must be None or one of"):
        zoo.list_presets("gans")


# ---------------------------------------------------------------------------
# Archives: file:// and http:// from a server on 127.0.0.1.


def _tar(preset, path, top="tiny_gan"):
    with tarfile.open(path, "w:gz") as t:
        t.add(preset, arcname=top)
    return path


def _zip(preset, path):
    with zipfile.ZipFile(path, "w") as z:
        for name in os.listdir(preset):
            z.write(os.path.join(preset, name), name)
    return path


def test_file_archives(tiny_preset, tmp_path):
    meta = preset_metadata(tiny_preset)
    for archive in (_tar(tiny_preset, tmp_path / "p.tar.gz"), _zip(tiny_preset, tmp_path / "p.zip")):
        url = archive.as_uri()
        model = zoo.from_preset(url, sha256=sha256_of(archive))
        assert checks.check_goldens(model, meta) < 1e-5
        cached = os.path.join(os.environ["KERAS_HOME"], "zoo_presets")
        assert any(os.path.isdir(os.path.join(cached, d, "preset")) for d in os.listdir(cached))
    with pytest.raises(PresetError, match="No archive"):
        zoo.from_preset((tmp_path / "missing.tar").as_uri())
    with pytest.raises(ValueError, match="must name a .tar"):
        zoo.from_preset((tmp_path / "p.rar").as_uri())


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving `tmp_path / "www"`; counts GETs."""
    root = tmp_path / "www"
    root.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


def test_http_archive_is_downloaded_once_and_verified(tiny_preset, server):
    root, base, hits = server
    archive = _tar(tiny_preset, root / "tiny.tar.gz")
    digest = sha256_of(archive)
    url = f"{base}/tiny.tar.gz#sha256={digest}"
    first = zoo.from_preset(url)
    second = GAN.from_preset(url)
    assert len(hits) == 1  # the second load used the cache
    meta = preset_metadata(url)
    assert checks.check_goldens(first, meta) < 1e-5
    assert checks.check_goldens(second, meta) < 1e-5


def test_http_hash_mismatch_deletes_the_download(tiny_preset, server):
    root, base, hits = server
    _tar(tiny_preset, root / "tiny.tar.gz")
    with pytest.raises(PresetError, match="expected 0{64}; the download was deleted"):
        zoo.from_preset(f"{base}/tiny.tar.gz", sha256="0" * 64)
    cache = os.path.join(os.environ["KERAS_HOME"], "zoo_presets")
    assert not os.path.exists(cache) or os.listdir(cache) == []
    with pytest.raises(PresetError, match="Could not download"):
        zoo.from_preset(f"{base}/absent.tar.gz")
    with pytest.raises(ValueError, match="64 hexadecimal digits"):
        zoo.from_preset(f"{base}/tiny.tar.gz", sha256="abc")


def test_http_only_for_loopback_and_archives_are_checked(tiny_preset, tmp_path):
    with pytest.raises(ValueError, match="use https:// for 'example.org'"):
        zoo.from_preset("http://example.org/p.tar.gz")
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as t:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        t.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(PresetError, match="unsafe path"):
        zoo.from_preset(evil.as_uri())
    assert not (tmp_path / "escaped.txt").exists()
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("readme.txt", "no preset here")
    with pytest.raises(PresetError, match="holds no preset"):
        zoo.from_preset(empty.as_uri())
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not an archive")
    with pytest.raises(PresetError, match="damaged"):
        zoo.from_preset(broken.as_uri())


# ---------------------------------------------------------------------------
# Built-in presets: goldens on this backend, and quality with margin.


@pytest.mark.parametrize("name", zoo.list_presets())
def test_builtin_preset(name):
    meta = preset_metadata(name)
    size = sum(
        os.path.getsize(os.path.join(zoo.presets.sources.BUILTIN_DIR, name, f))
        for f in os.listdir(os.path.join(zoo.presets.sources.BUILTIN_DIR, name))
    )
    assert size < 2 * 1024 * 1024
    model = zoo.from_preset(name)
    assert meta["family"] == zoo.presets.format.family_of(model)
    checks.check_goldens(model, meta)
    figures, failures = checks.evaluate(model, meta)
    assert not failures, f"{name}: {failures}; measured {figures}"


def test_builtins_span_the_three_backends():
    backends = {preset_metadata(n)["training_backend"] for n in zoo.list_presets()}
    assert backends == {"tensorflow", "jax", "torch"}


@pytest.mark.slow
def test_build_is_reproducible(tmp_path):
    """Rebuilding a built-in preset on its own backend gives back its goldens."""
    from zoo.core import backend_name
    from zoo.presets.build import RECIPES, build

    names = [n for n, (_, b) in RECIPES.items() if b == backend_name()]
    assert names, f"no built-in preset is trained on {backend_name()}"
    name = min(names, key=lambda n: preset_metadata(n)["training"]["seconds"])
    directory = build(name, out=str(tmp_path / name))
    rebuilt, shipped = preset_metadata(directory), preset_metadata(name)
    checks.check_goldens(zoo.from_preset(directory), shipped)
    assert rebuilt["quality"]["figures"] == pytest.approx(shipped["quality"]["figures"], rel=1e-3)
