"""Tests of zoo.presets on every backend: the format, every source (a
directory, file:// and http:// archives served from 127.0.0.1), the errors,
and the built-in presets' golden values and quality figures."""

import functools
import http.server
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import types
import urllib.parse
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
    # The folder has the usual permissions, not a private temporary folder's.
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(target).st_mode & 0o777 == 0o777 & ~umask
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
    meta = json.loads((target / "metadata.json").read_text())
    meta["class_name"] = "evil>Payload"
    (target / "metadata.json").write_text(json.dumps(meta))
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


def test_overwrite_replaces_only_a_preset(tiny_preset, tmp_path):
    model = GAN.from_preset(tiny_preset)
    # A user's folder: refused with overwrite=True, every file kept.
    user = tmp_path / "mine"
    (user / "sub").mkdir(parents=True)
    (user / "notes.txt").write_text("keep me")
    (user / "sub" / "data.csv").write_text("1,2")
    with pytest.raises(ValueError, match=r"is not a keras-genzoo preset \(it holds notes.txt, sub"):
        model.save_to_preset(user, overwrite=True)
    assert (user / "notes.txt").read_text() == "keep me" and (user / "sub" / "data.csv").exists()
    # A preset plus a file of the user's: refused too.
    extra = _copy(tiny_preset, tmp_path, "extra")
    (extra / "README.md").write_text("mine")
    with pytest.raises(ValueError, match="it holds README.md, which no preset holds"):
        model.save_to_preset(extra, overwrite=True)
    # Preset file names without a preset's metadata.json: refused.
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="it has no metadata.json"):
        model.save_to_preset(fake, overwrite=True)
    (fake / "metadata.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="has no format_version and class_name"):
        model.save_to_preset(fake, overwrite=True)
    # A link to a preset and a plain file: refused.
    os.symlink(extra, tmp_path / "link")
    with pytest.raises(ValueError, match="is a symbolic link"):
        model.save_to_preset(tmp_path / "link", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a folder"):
        model.save_to_preset(tmp_path / "file", overwrite=True)
    with pytest.raises(ValueError, match="`overwrite` must be True or False"):
        model.save_to_preset(tmp_path / "new", overwrite="yes")
    # An empty folder needs no overwrite=True.
    (tmp_path / "empty").mkdir()
    model.save_to_preset(tmp_path / "empty")
    assert preset_metadata(str(tmp_path / "empty"))["class_name"] == "zoo>GAN"


def _fake_preset(directory, content):
    directory.mkdir()
    for name in ("config.json", "model.weights.h5"):
        (directory / name).write_text(content)
    (directory / "metadata.json").write_text(
        json.dumps({"format_version": 1, "class_name": content})
    )


def _contents(directory):
    return {p.name: p.read_text() for p in directory.iterdir()}


_KILLED_CHILD = r"""
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("replace_under_test", sys.argv[1])
replace = importlib.util.module_from_spec(spec)
spec.loader.exec_module(replace)
new, target, step, ready = sys.argv[2:]
real = replace.exchange

def exchange(a, b):
    if step == "before_swap":
        open(ready, "w").close()
        time.sleep(60)
    real(a, b)
    if step == "after_swap":
        open(ready, "w").close()
        time.sleep(60)

replace.exchange = exchange
replace.remove_preset(replace.replace_directory(new, target))
"""


def test_replacement_is_atomic_when_the_process_is_killed(tmp_path):
    from zoo.presets import replace

    probe_a, probe_b = tmp_path / "a", tmp_path / "b"
    probe_a.mkdir()
    probe_b.mkdir()
    try:
        replace.exchange(probe_a, probe_b)
    except replace.ExchangeUnsupported:
        pytest.skip("this file system has no atomic directory swap (the fallback is tested below)")
    for step, survivor in (("before_swap", "old"), ("after_swap", "new"), ("none", "new")):
        work = tmp_path / step
        work.mkdir()
        target, new, ready = work / "p", work / ".p.tmp-1", work / "ready"
        _fake_preset(target, "old")
        _fake_preset(new, "new")
        child = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, replace.__file__,
                                  str(new), str(target), step, str(ready)])
        if step == "none":
            assert child.wait(timeout=60) == 0
        else:
            deadline = time.monotonic() + 60
            while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert ready.exists(), f"the child did not reach {step}"
            child.kill()  # SIGKILL: no cleanup runs
            child.wait()
        # The path holds one whole preset, the old or the new one.
        assert _contents(target) == {
            "config.json": survivor, "model.weights.h5": survivor,
            "metadata.json": json.dumps({"format_version": 1, "class_name": survivor}),
        }
        if step == "none":
            assert sorted(os.listdir(work)) == ["p"]


def test_fallback_replacement_without_an_atomic_swap(tiny_preset, tmp_path, monkeypatch):
    from zoo.presets import replace

    def unsupported(a, b):
        raise replace.ExchangeUnsupported("no swap here")

    monkeypatch.setattr(replace, "exchange", unsupported)
    target = _copy(tiny_preset, tmp_path)
    model = GAN.from_preset(tiny_preset)
    model.save_to_preset(target, metadata={"note": "fallback"}, overwrite=True)
    assert preset_metadata(str(target))["note"] == "fallback"
    assert os.listdir(tmp_path) == ["copy"]
    # The second rename fails: the old preset is moved back.
    real_rename = os.rename

    def failing(src, dst):
        if ".tmp-" in os.fspath(src):
            raise OSError("simulated failure")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(OSError, match="simulated failure"):
        model.save_to_preset(target, metadata={"note": "lost"}, overwrite=True)
    monkeypatch.setattr(os, "rename", real_rename)
    assert preset_metadata(str(target))["note"] == "fallback"
    assert os.listdir(tmp_path) == ["copy"]
    # Killed between the renames, the fallback leaves the old preset beside
    # the path, and loading says where.
    os.rename(target, tmp_path / ".copy.old-1234abcd")
    with pytest.raises(PresetError, match=r"interrupted replacement left .*\.copy\.old-1234abcd"):
        zoo.from_preset(str(target))


def test_failed_swap_keeps_the_old_preset(tiny_preset, tmp_path, monkeypatch):
    from zoo.presets import replace

    def broken(a, b):
        raise OSError("swap failed")

    monkeypatch.setattr(replace, "exchange", broken)
    target = _copy(tiny_preset, tmp_path)
    before = _contents_bytes(target)
    with pytest.raises(OSError, match="swap failed"):
        GAN.from_preset(tiny_preset).save_to_preset(target, overwrite=True)
    assert _contents_bytes(target) == before and os.listdir(tmp_path) == ["copy"]


def _contents_bytes(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_nonfinite_weights_are_refused_at_save_and_load(tiny_preset, tmp_path, monkeypatch):
    from zoo.presets import format as preset_format

    model = GAN.from_preset(tiny_preset)
    variable = model.generator.trainable_weights[0]
    value = np.array(variable.numpy())
    value.flat[0] = np.nan
    variable.assign(value)
    name = f"generator/{variable.path}"
    with pytest.raises(ValueError, match=f"1 variable.s. hold NaN or Inf values: {name}"):
        model.save_to_preset(tmp_path / "nan")
    assert not (tmp_path / "nan").exists() and os.listdir(tmp_path) == []
    # A preset holding NaN weights (written some other way) is refused on
    # load, naming the variable, not reported as a mismatch.
    monkeypatch.setattr(preset_format, "nonfinite_variables", lambda m: [])
    model.save_to_preset(tmp_path / "nan")
    monkeypatch.undo()
    with pytest.raises(PresetError, match=f"hold NaN or Inf values in 1 variable.s.: {name}"):
        zoo.from_preset(str(tmp_path / "nan"))


def _edit_json(path, edit):
    value = json.loads(path.read_text())
    path.write_text(json.dumps(edit(value)))


def _one_line_error(preset, match, **kwargs):
    with pytest.raises(PresetError, match=match) as info:
        zoo.from_preset(str(preset), **kwargs)
    assert "\n" not in str(info.value)
    return info


def test_malformed_presets_are_one_line_preset_errors(tiny_preset, tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    target = _copy(tiny_preset, tmp_path, "deep_meta")
    (target / "metadata.json").write_text(deep)
    _one_line_error(target, "metadata.json .* nested too deeply")
    target = _copy(tiny_preset, tmp_path, "deep_config")
    (target / "config.json").write_text(deep)
    _rehash(target)
    _one_line_error(target, "config.json .* nested too deeply", load_weights=False)
    for name, edit, match in [
        ("list", lambda m: [m], "must hold a JSON object, not list"),
        ("hash_type", lambda m: {**m, "sha256": {**m["sha256"], "config.json": 7}},
         r"`sha256.config.json` must be 64 hexadecimal digits; received 7"),
        ("version", lambda m: {**m, "format_version": 2}, "`format_version` is 2, but this"),
        ("version_str", lambda m: {**m, "format_version": "1"},
         "`format_version` must be a positive integer; received '1'"),
        ("no_version", lambda m: {k: v for k, v in m.items() if k != "format_version"},
         "`format_version` must be a positive integer; received None"),
        ("class", lambda m: {**m, "class_name": "zoo>VAE"},
         "the field `class_name` is 'zoo>VAE', but config.json holds a 'zoo>GAN'"),
    ]:
        target = _copy(tiny_preset, tmp_path, name)
        _edit_json(target / "metadata.json", edit)
        _one_line_error(target, match, load_weights=False)
    target = _copy(tiny_preset, tmp_path, "config_class")
    _edit_json(target / "config.json", lambda c: {**c, "registered_name": ["x"]})
    _rehash(target)
    _one_line_error(target, "the field `class_name` is 'zoo>GAN', but config.json holds a", load_weights=False)
    # Uppercase hashes are hashes.
    target = _copy(tiny_preset, tmp_path, "upper")
    _edit_json(target / "metadata.json",
               lambda m: {**m, "sha256": {k: v.upper() for k, v in m["sha256"].items()}})
    assert type(zoo.from_preset(str(target))) is GAN
    # An out-of-date family is worth a warning naming the field.
    target = _copy(tiny_preset, tmp_path, "family")
    _edit_json(target / "metadata.json", lambda m: {**m, "family": "vae"})
    with pytest.warns(UserWarning, match="the field `family` is 'vae'"):
        zoo.from_preset(str(target), load_weights=False)


def test_unknown_name_lists_the_closest_and_every_place_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PresetError, match="Unknown preset 'gan_rign'. Closest: gan_ring") as info:
        zoo.from_preset("gan_rign")
    message = str(info.value)
    assert "built-in preset" in message and "gan_ring, gpt_markov" in message
    assert repr(str(tmp_path / "gan_rign")) in message and "working directory" in message
    assert repr(os.path.join(os.environ["KERAS_HOME"], "zoo_presets")) in message
    with pytest.raises(PresetError, match="No preset directory"):
        zoo.from_preset("./no/such/dir")
    with pytest.raises(PresetError, match="For the Hugging Face Hub write 'hf://owner/name'"):
        zoo.from_preset("owner/name")
    with pytest.raises(ValueError, match="load_weights"):
        zoo.from_preset("gan_ring", load_weights="yes")


def test_list_presets():
    names = zoo.list_presets()
    assert names == sorted(names) and len(names) >= 5
    families = {f: zoo.list_presets(f) for f in ("gan", "vae", "flow", "diffusion", "transformer",
                                                 "multimodal")}
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
        entry = os.path.join(os.environ["KERAS_HOME"], "zoo_presets", "archives",
                             sha256_of(archive))
        assert sorted(os.listdir(entry)) == ["config.json", "metadata.json", "model.weights.h5"]
    with pytest.raises(PresetError, match="No archive"):
        zoo.from_preset((tmp_path / "missing.tar").as_uri())
    with pytest.raises(ValueError, match="must name a .tar"):
        zoo.from_preset((tmp_path / "p.rar").as_uri())


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving `tmp_path / "www"`; counts GETs.

    Besides files: `/redirect/NAME?to=URL` answers 302 to URL, and
    `/short/NAME` serves NAME announcing 100 more bytes than it sends.
    Yields (root, base URL, the GET paths, a function that stops it).
    """
    root = tmp_path / "www"
    root.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            if self.path.startswith("/redirect/"):
                query = urllib.parse.urlsplit(self.path).query
                self.send_response(302)
                self.send_header("Location", urllib.parse.parse_qs(query)["to"][0])
                self.end_headers()
            elif self.path.startswith("/short/"):
                body = (root / self.path[7:]).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) + 100))
                self.end_headers()
                self.wfile.write(body)
            else:
                super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    running = [True]

    def stop():
        if running.pop():
            httpd.shutdown()
            httpd.server_close()

    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", hits, stop
    if running:
        stop()


def _cached():
    """Everything in the preset cache but the (empty) folders it made."""
    cache = os.path.join(os.environ["KERAS_HOME"], "zoo_presets")
    found = []
    for folder, dirs, files in os.walk(cache):
        found += [os.path.relpath(os.path.join(folder, f), cache) for f in files]
    return found


def test_http_archive_is_downloaded_once_and_verified(tiny_preset, server):
    root, base, hits, _ = server
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
    root, base, hits, _ = server
    _tar(tiny_preset, root / "tiny.tar.gz")
    with pytest.raises(PresetError, match="expected 0{64}; nothing was cached"):
        zoo.from_preset(f"{base}/tiny.tar.gz", sha256="0" * 64)
    assert _cached() == []
    # Nothing to delete by hand: the right hash loads at once.
    assert preset_metadata(f"{base}/tiny.tar.gz", sha256=sha256_of(root / "tiny.tar.gz"))
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


def test_truncated_download_never_enters_the_cache(tiny_preset, server):
    root, base, hits, _ = server
    _tar(tiny_preset, root / "tiny.tar.gz")
    with pytest.raises(PresetError, match=r"is incomplete: \d+ bytes arrived, the server announced"):
        zoo.from_preset(f"{base}/short/tiny.tar.gz")
    assert _cached() == []
    assert preset_metadata(f"{base}/tiny.tar.gz")["class_name"] == "zoo>GAN"


def _noted_archive(tiny_preset, tmp_path, note, path):
    """A tar.gz of the tiny preset whose metadata says `note`."""
    source = tmp_path / f"noted_{note}"
    if not source.exists():
        _copy(tiny_preset, tmp_path, source.name)
        _edit_json(source / "metadata.json", lambda m: {**m, "note": note})
    return _tar(source, path)


def test_rewritten_file_archive_is_noticed(tiny_preset, tmp_path):
    archive = tmp_path / "p.tar.gz"
    url = _noted_archive(tiny_preset, tmp_path, "one", archive).as_uri()
    assert preset_metadata(url)["note"] == "one"
    stat = os.stat(archive)
    _noted_archive(tiny_preset, tmp_path, "two", archive)
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the same mtime
    assert preset_metadata(url)["note"] == "two"
    assert preset_metadata(f"{url}#sha256={sha256_of(archive)}")["note"] == "two"


def test_http_source_is_revalidated(tiny_preset, tmp_path, server):
    root, base, hits, stop = server
    archive = _noted_archive(tiny_preset, tmp_path, "one", root / "p.tar.gz")
    url = f"{base}/p.tar.gz"
    assert preset_metadata(url)["note"] == "one"
    assert preset_metadata(url)["note"] == "one"  # a 304: nothing downloaded again
    assert len(hits) == 2
    _noted_archive(tiny_preset, tmp_path, "two", archive)
    os.utime(archive, (time.time() + 10, time.time() + 10))  # Last-Modified counts seconds
    assert preset_metadata(url)["note"] == "two"
    stop()
    with pytest.warns(UserWarning, match="Using the copy downloaded earlier"):
        assert preset_metadata(url)["note"] == "two"


def test_every_redirect_is_checked(tiny_preset, server):
    root, base, hits, _ = server
    _tar(tiny_preset, root / "tiny.tar.gz")
    to = urllib.parse.quote(f"{base}/tiny.tar.gz", safe="")
    assert preset_metadata(f"{base}/redirect/p.tar.gz?to={to}")["class_name"] == "zoo>GAN"
    for target, match in [
        ("http://example.org/p.tar.gz", "use https:// for 'example.org'.*redirected from"),
        # urllib itself follows only http(s) redirects.
        ("file:///etc/passwd.tar", "Redirection to url 'file:///etc/passwd.tar' is not allowed"),
    ]:
        url = f"{base}/redirect/p.tar.gz?to={urllib.parse.quote(target, safe='')}"
        with pytest.raises(PresetError, match=match):
            preset_metadata(url)
    from zoo.presets.sources import check_url

    with pytest.raises(PresetError, match="from a remote host to a loopback one"):
        check_url("http://127.0.0.1/p.tar", redirected_from="https://example.org/p.tar")
    assert _cached() == [] or all(c.startswith(("archives", "sources")) for c in _cached())


def test_extraction_is_capped(tiny_preset, tmp_path, monkeypatch):
    from zoo.presets import sources

    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz") as t:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 1 << 20
        t.addfile(info, io.BytesIO(bytes(info.size)))
    # By default: at most 50 times the archive's size (over a floor, made
    # small here so that the test stays small).
    monkeypatch.setattr(sources, "_MIN_EXTRACT_LIMIT", 1000)
    with pytest.raises(PresetError, match=r"would expand to more than \d+ bytes.*nothing was extracted"):
        preset_metadata(bomb.as_uri())
    assert _cached() == []
    archive = _tar(tiny_preset, tmp_path / "tiny.tar.gz")
    monkeypatch.setenv(sources.MAX_EXTRACT_ENV, "1000")
    with pytest.raises(PresetError, match=f"set {sources.MAX_EXTRACT_ENV} to a larger"):
        preset_metadata(archive.as_uri())
    monkeypatch.setenv(sources.MAX_EXTRACT_ENV, "ten")
    with pytest.raises(ValueError, match=f"{sources.MAX_EXTRACT_ENV} must be a positive number"):
        preset_metadata(archive.as_uri())
    monkeypatch.delenv(sources.MAX_EXTRACT_ENV)
    monkeypatch.setattr(sources, "MAX_MEMBERS", 2)
    with pytest.raises(PresetError, match="holds more than 2 members"):
        preset_metadata(archive.as_uri())
    assert _cached() == []


# ---------------------------------------------------------------------------
# Hugging Face checkpoints: from_preset hands them to zoo.presets.huggingface.


@pytest.fixture
def fake_hf(monkeypatch):
    """A stand-in zoo.presets.huggingface that records its calls."""
    calls = []
    module = types.ModuleType("zoo.presets.huggingface")

    def is_hf_checkpoint(directory):
        calls.append(("is", directory))
        try:
            config = json.loads((pathlib.Path(directory) / "config.json").read_text())
        except OSError:
            return False
        return "model_type" in config

    def load_hf_checkpoint(source, load_weights=True):
        calls.append(("load", source, load_weights))
        return "converted model"

    module.is_hf_checkpoint, module.load_hf_checkpoint = is_hf_checkpoint, load_hf_checkpoint
    monkeypatch.setitem(sys.modules, "zoo.presets.huggingface", module)
    return calls


def test_hf_sources_go_to_the_huggingface_module(fake_hf, tiny_preset, tmp_path):
    assert zoo.from_preset("hf://owner/name", load_weights=False) == "converted model"
    assert fake_hf == [("load", "hf://owner/name", False)]
    local = tmp_path / "hf_folder"
    local.mkdir()
    (local / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    fake_hf.clear()
    assert zoo.from_preset(str(local)) == "converted model"
    assert fake_hf == [("is", str(local)), ("load", str(local), True)]
    assert zoo.presets.locate(str(local)) == str(local)
    assert preset_metadata(str(local)) == {
        "format": "huggingface", "model_type": "gpt2", "architectures": None}
    with pytest.raises(PresetError, match="converts to a str, not a GAN"):
        GAN.from_preset("hf://owner/name")
    with pytest.raises(PresetError, match="use zoo.from_preset.'hf://owner/name'.; it has no local"):
        zoo.presets.locate("hf://owner/name")
    with pytest.raises(ValueError, match="`sha256` checks a downloaded archive"):
        zoo.from_preset("hf://owner/name", sha256="0" * 64)
    # A zoo preset never asks the module.
    fake_hf.clear()
    assert type(zoo.from_preset(tiny_preset, load_weights=False)) is GAN
    assert fake_hf == []


def test_hf_source_without_the_module(monkeypatch):
    from zoo.presets import sources

    monkeypatch.setattr(sources, "HF_MODULE", "zoo.presets.no_such_module")
    with pytest.raises(PresetError, match="has no zoo.presets.no_such_module to convert it"):
        zoo.from_preset("hf://owner/name")


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


def _random_flow(num_classes=3):
    """A small FlowMatching whose weights and EMA are random (so that its
    velocity is far from zero and depends on the labels)."""
    from zoo.diffusion import FlowMatching

    model = FlowMatching((2,), num_classes=num_classes, hidden_units=16, num_blocks=1, seed=0)
    rng = np.random.default_rng(3)
    for v in model.denoiser.trainable_variables + model.ema:
        v.assign(rng.normal(scale=0.5, size=v.shape).astype("float32"))
    return model


def test_flow_sample_probe_is_the_sampler():
    """The `flow_sample` golden probe runs what `sample` runs: from the noise
    `sample(seed=5)` draws, each sampler gives `sample`'s samples."""
    model = _random_flow()
    noise = keras.ops.convert_to_numpy(keras.random.normal((3, 2), seed=5))
    labels = np.arange(3)
    for sampler in ("euler", "heun", "midpoint"):
        expected = model.sample(3, steps=3, sampler=sampler, labels=labels, seed=5,
                                verbose=False)
        inputs = {"noise": noise, "labels": labels, "sampler": sampler, "steps": 3}
        actual = checks.PROBES["flow_sample"](model, inputs)
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4, err_msg=sampler)
        assert np.abs(actual - noise).max() > 0.1  # the samples moved


def test_conditional_goldens_pass_labels(tmp_path):
    model = _random_flow()
    goldens = {probe: checks.record_goldens(model, probe)
               for probe in ("denoiser", "flow_sample")}
    model.save_to_preset(tmp_path / "p", metadata={"goldens": goldens["flow_sample"]})
    loaded = zoo.from_preset(str(tmp_path / "p"))
    assert checks.check_goldens(loaded, preset_metadata(str(tmp_path / "p"))) < 1e-5
    for probe, recorded in goldens.items():
        assert recorded["inputs"]["labels"] == [0, 1, 2]
        assert checks.check_goldens(loaded, {"goldens": recorded}) < 1e-5
        # The labels reach the model: other labels, other outputs.
        other = {**recorded, "inputs": {**recorded["inputs"], "labels": [2, 0, 1]}}
        with pytest.raises(PresetError, match=f"{probe} outputs differ"):
            checks.check_goldens(loaded, {"goldens": other})


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
