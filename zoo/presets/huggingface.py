"""Hugging Face transformers checkpoints: loaded as a zoo `GPT`, and written.

A checkpoint is a folder with transformers' `config.json` (model_type
`gpt2`, `gpt_neox` or `llama`), its weights in `model.safetensors` or in
shards listed by `model.safetensors.index.json`, and usually
`tokenizer.json`. `zoo.from_preset` reads such a folder, or
`hf://owner/name[@revision]` downloaded by `huggingface_hub` into its cache
(`HF_HUB_OFFLINE=1` reads the cache only). Weights are read with
`safetensors` into NumPy: no PyTorch needed.

```python
import zoo
gpt = zoo.from_preset("hf://openai-community/gpt2")   # a GPT with its tokenizer
gpt.generate("The zoo", max_new_tokens=20, temperature=0)
gpt.save_to_hf("/tmp/gpt2_again")      # transformers' from_pretrained reads it
```

Every file and tensor is checked (present, of the config's shapes) before
any weight is set, and the model is returned only when fully loaded.
"""

import json
import os
import shutil
import tempfile

import numpy as np

from zoo.presets.format import PresetError
from zoo.transformer import hf_convert
from zoo.transformer.hf_convert import UnsupportedCheckpoint

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# What a download fetches: no PyTorch pickles, no other frameworks' weights.
_DOWNLOAD_PATTERNS = [CONFIG_FILE, "*.safetensors", INDEX_FILE, *TOKENIZER_FILES,
                      "generation_config.json", "tokenizer.model"]
_ZOO_FILES = ("metadata.json", "model.weights.h5")


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError, RecursionError, UnicodeDecodeError) as error:
        raise PresetError(f"Could not read {path!r}: {type(error).__name__}: {error}") from None


def is_hf_checkpoint(directory):
    """Whether `directory` holds a transformers checkpoint: a config.json with
    a "model_type", and none of a zoo preset's files."""
    directory = os.fspath(directory)
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path) or any(
        os.path.exists(os.path.join(directory, name)) for name in _ZOO_FILES
    ):
        return False
    try:
        config = _read_json(path)
    except PresetError:
        return False
    return isinstance(config, dict) and "model_type" in config


def download(source):
    """The local snapshot folder of `hf://owner/name[@revision]`."""
    repo = source[len("hf://"):]
    repo, _, revision = repo.partition("@")
    parts = repo.split("/")
    if len(parts) != 2 or not all(parts):
        raise PresetError(
            f"{source!r} is not a Hugging Face Hub name: write hf://owner/name "
            "(optionally @revision)."
        )
    import huggingface_hub
    from huggingface_hub import errors

    try:
        return huggingface_hub.snapshot_download(
            repo, revision=revision or None, allow_patterns=_DOWNLOAD_PATTERNS
        )
    except errors.LocalEntryNotFoundError:
        raise PresetError(
            f"{source!r} is not in the Hugging Face cache and cannot be downloaded "
            "now (HF_HUB_OFFLINE is set, or the Hub is unreachable); download it "
            "once while online, or pass a local checkpoint folder."
        ) from None
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as error:
        raise PresetError(f"{source!r}: {type(error).__name__}: {error}") from None
    except (errors.HfHubHTTPError, OSError, ValueError) as error:
        raise PresetError(f"Could not download {source!r}: {type(error).__name__}: "
                          f"{error}") from None


def _shards(directory):
    """`{tensor name: shard path}` from the index, or from the single file."""
    index_path = os.path.join(directory, INDEX_FILE)
    if os.path.isfile(index_path):
        index = _read_json(index_path)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) for v in weight_map.values()
        ):
            raise PresetError(f"{index_path!r} has no weight_map of tensor names to files.")
        files = sorted(set(weight_map.values()))
        bad = [f for f in files if os.path.basename(f) != f or not f.endswith(".safetensors")]
        if bad:
            raise PresetError(f"{index_path!r} names shard files outside the folder: {bad[:3]}.")
        missing = [f for f in files if not os.path.isfile(os.path.join(directory, f))]
        if missing:
            raise PresetError(
                f"The checkpoint {directory!r} is missing {len(missing)} of its "
                f"{len(files)} weight shards listed in {INDEX_FILE}: {', '.join(missing)}."
            )
        return {name: os.path.join(directory, f) for name, f in weight_map.items()}
    single = os.path.join(directory, SINGLE_FILE)
    if os.path.isfile(single):
        from safetensors import safe_open

        with safe_open(single, framework="numpy") as f:
            return {name: single for name in f.keys()}
    others = sorted(n for n in os.listdir(directory) if n.endswith((".bin", ".pt", ".h5",
                                                                      ".msgpack")))
    found = f" (found {', '.join(others)}: the zoo reads safetensors only)" if others else ""
    raise PresetError(
        f"No weights in {directory!r}: expected {SINGLE_FILE} or {INDEX_FILE}{found}."
    )


def _load_tensors(directory, model, model_type, tie_embeddings):
    """Sets every variable of `model`, after checking every tensor."""
    from safetensors import safe_open

    entries = hf_convert.entries(model, model_type)
    locations = _shards(directory)
    wanted = {name for entry in entries for name in entry.names}
    canonical = {}
    for name in locations:
        key = hf_convert.canonical_name(name, model_type)
        if key is None or (tie_embeddings and key == "lm_head.weight"):
            continue  # buffers; a tied head saved anyway
        canonical[key] = name
    missing = sorted(wanted - set(canonical))
    if missing:
        raise PresetError(
            f"The checkpoint {directory!r} lacks {len(missing)} tensor(s) its config "
            f"needs: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}."
        )
    unknown = sorted(set(canonical) - wanted)
    if unknown:
        raise PresetError(
            f"The checkpoint {directory!r} holds tensors the {model_type} model the "
            f"zoo builds from its config has no place for: {', '.join(unknown[:5])}."
        )
    handles = {}
    try:
        for path in sorted(set(locations[canonical[n]] for n in wanted)):
            handles[path] = safe_open(path, framework="numpy")
        # Shapes first, all of them, before any tensor is read.
        for entry in entries:
            for name, shape in zip(entry.names, entry.shapes):
                got = tuple(handles[locations[canonical[name]]].get_slice(canonical[name])
                            .get_shape())
                if got != tuple(shape):
                    raise PresetError(
                        f"Tensor {canonical[name]!r} in "
                        f"{os.path.basename(locations[canonical[name]])} has shape {got}; "
                        f"the config ({CONFIG_FILE}) makes it {tuple(shape)}."
                    )
        # Every file and shape is known good: each variable is set as soon
        # as its tensors are read, so that one copy at a time is held. A
        # read that still fails (a corrupt file) raises, and the model is
        # never returned.
        for entry in entries:
            arrays = [
                np.asarray(handles[locations[canonical[n]]].get_tensor(canonical[n]),
                           dtype=np.float32)
                for n in entry.names
            ]
            entry.variable.assign(entry.to_zoo(arrays))
            del arrays
    except PresetError:
        raise
    except Exception as error:  # safetensors' own errors: corrupt or truncated file
        raise PresetError(
            f"Could not read the weights of {directory!r}: {type(error).__name__}: {error}"
        ) from None
    finally:
        for handle in handles.values():
            handle.__exit__(None, None, None)


def load_hf_checkpoint(source, load_weights=True):
    """A zoo `GPT` (with an `HFTokenizer` if the folder has tokenizer.json)
    from a checkpoint folder or `hf://owner/name[@revision]`.

    Raises:
        PresetError (a ValueError): unsupported model type or option (named),
            missing config, shard or tensor, tensors of the wrong shape, an
            unsupported tokenizer, an hf:// name neither cached nor
            downloadable.
    """
    from zoo.transformer import GPT, HFTokenizer

    source = os.fspath(source)
    directory = download(source) if source.startswith("hf://") else source
    config_path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise PresetError(f"No {CONFIG_FILE} in the checkpoint folder {directory!r}.")
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise PresetError(f"{config_path!r} does not hold a JSON object.")
    try:
        arguments = hf_convert.gpt_arguments(config)
    except UnsupportedCheckpoint as error:
        raise PresetError(f"{source!r}: {error}") from None
    except (KeyError, TypeError) as error:
        raise PresetError(f"{config_path!r} lacks or mistypes the field {error}.") from None
    if load_weights:
        _shards(directory)  # missing files fail before any model is built
    tokenizer = None
    names = set(os.listdir(directory))
    if "tokenizer.json" in names or "tokenizer.model" in names:
        try:
            tokenizer = HFTokenizer.from_directory(directory, vocab_size=config["vocab_size"])
        except ValueError as error:
            raise PresetError(f"{source!r}: {error}") from None
    try:
        model = GPT(**arguments, tokenizer=tokenizer, name=config["model_type"])
    except ValueError as error:
        raise PresetError(f"{source!r}: the config makes no valid GPT: {error}") from None
    if load_weights:
        _load_tensors(directory, model, config["model_type"], arguments["tie_embeddings"])
    return model


def save_hf_checkpoint(model, directory, model_type=None, max_shard_size=None):
    """Writes `model` as a transformers checkpoint folder (see `GPT.save_to_hf`)."""
    directory = os.fspath(directory)
    if model_type is None:
        model_type = hf_convert.model_type_of(model)
    elif model_type not in hf_convert.MODEL_TYPES:
        raise ValueError(
            f"`model_type` must be None or one of {hf_convert.MODEL_TYPES}; received "
            f"{model_type!r}."
        )
    elif model_type != hf_convert.model_type_of(model):
        raise ValueError(
            f"This GPT's options make a {hf_convert.model_type_of(model)!r} model, not "
            f"model_type={model_type!r}."
        )
    if max_shard_size is not None and (
        not isinstance(max_shard_size, int) or isinstance(max_shard_size, bool)
        or max_shard_size < 1
    ):
        raise ValueError(
            f"`max_shard_size` must be None or a positive number of bytes; received "
            f"{max_shard_size!r}."
        )
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise ValueError(
            f"{directory!r} exists and is not an empty folder; save_to_hf writes a "
            "new checkpoint folder and never replaces files."
        )
    config = hf_convert.hf_config(model, model_type)
    tensors = hf_convert.export_tensors(model, model_type)
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    # Written into a fresh sibling folder and renamed: never half a checkpoint.
    final, directory = directory, tempfile.mkdtemp(prefix=".partial-", dir=parent)
    try:
        _write(model, directory, config, tensors, max_shard_size)
        if os.path.isdir(final):
            os.rmdir(final)  # empty, checked above
        os.rename(directory, final)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return final


def _write(model, directory, config, tensors, max_shard_size):
    from safetensors.numpy import save_file

    with open(os.path.join(directory, CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    if max_shard_size is None or sum(a.nbytes for a in tensors.values()) <= max_shard_size:
        save_file(tensors, os.path.join(directory, SINGLE_FILE), metadata={"format": "pt"})
    else:
        shards, size = [[]], 0
        for name, array in tensors.items():
            if shards[-1] and size + array.nbytes > max_shard_size:
                shards.append([])
                size = 0
            shards[-1].append(name)
            size += array.nbytes
        weight_map = {}
        for i, names in enumerate(shards):
            file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file({n: tensors[n] for n in names}, os.path.join(directory, file),
                      metadata={"format": "pt"})
            weight_map.update({n: file for n in names})
        index = {"metadata": {"total_size": int(sum(a.nbytes for a in tensors.values()))},
                 "weight_map": weight_map}
        with open(os.path.join(directory, INDEX_FILE), "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2, sort_keys=True)
    if hasattr(model.tokenizer, "save_to_directory"):
        model.tokenizer.save_to_directory(directory)
