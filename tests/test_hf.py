"""Hugging Face checkpoints: gpt2, gpt_neox and llama loaded as a zoo `GPT`,
their tokenizers, LoRA, full fine-tuning and export, against transformers.

Nothing is downloaded: one module fixture makes tiny random models with
transformers and tiny tokenizers with `tokenizers`, saves them, and records
transformers' logits, greedy continuations and encodings (importing
transformers and PyTorch costs seconds, so it happens once).
"""

import json
import os
import shutil

import keras
import numpy as np
import pytest

import zoo
from zoo.presets import PresetError
from zoo.presets.huggingface import is_hf_checkpoint, load_hf_checkpoint
from zoo.transformer import GPT, HFTokenizer

TYPES = ("gpt2", "gpt_neox", "llama")
TEXT = "Hello, wörld! 日本語のテキスト — ünïcödé 🙂 Привет мир.  two  spaces\n"
CORPUS = ["the quick brown fox jumps over the lazy dog", "hello world, héllo wörld",
          "日本語のテキスト", "Привет мир"] * 10


def byte_level_tokenizer():
    """GPT-2 / GPT-NeoX style: byte-level BPE."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers import trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok, {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}


def llama_tokenizer():
    """The Llama family's: BPE on "▁"-joined text, byte fallback, <s> first."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

    normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    base = Tokenizer(models.BPE())
    base.normalizer = normalizer
    base.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=120, show_progress=False))
    spec = json.loads(base.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{i:02X}>": 3 + i for i in range(256)})
    for token in sorted(spec["vocab"], key=spec["vocab"].get):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True,
                               unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizer
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return tok, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def save_tokenizer(tok, special, directory):
    tok.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump(dict(special, tokenizer_class="PreTrainedTokenizerFast"), f)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """Per model type: its folder and transformers' results on it."""
    import torch
    import transformers

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hf")
    byte_level, llama = byte_level_tokenizer(), llama_tokenizer()
    # Weights larger than usual: random logits far apart, so that greedy
    # choices are not decided by rounding.
    big = dict(initializer_range=0.3, bos_token_id=None, eos_token_id=None)
    specs = {
        "gpt2": (transformers.GPT2Config(
            vocab_size=300, n_embd=32, n_layer=2, n_head=4, n_positions=64, **big),
            transformers.GPT2LMHeadModel, byte_level),
        # A model vocabulary larger than the tokenizer's, as GPT-NeoX pads it;
        # a quarter of each head rotated; an untied output layer.
        "gpt_neox": (transformers.GPTNeoXConfig(
            vocab_size=320, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64, rotary_pct=0.5, **big),
            transformers.GPTNeoXForCausalLM, byte_level),
        # Grouped-query attention, RMSNorm, SwiGLU, untied output.
        "llama": (transformers.LlamaConfig(
            vocab_size=378, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64, **big),
            transformers.LlamaForCausalLM, llama),
    }
    out = {}
    for name, (config, cls, (tok, special)) in specs.items():
        model = cls(config).eval()
        directory = str(root / name)
        # gpt2 in shards with an index, the others in one file.
        model.save_pretrained(directory, max_shard_size="40KB" if name == "gpt2" else "1GB")
        save_tokenizer(tok, special, directory)
        tokens = np.random.default_rng(0).integers(0, config.vocab_size, (2, 12))
        with torch.no_grad():
            logits = model(torch.tensor(tokens)).logits.numpy()
            greedy = model.generate(
                torch.tensor(tokens[:, :5]), max_new_tokens=32, min_new_tokens=32,
                do_sample=False, attention_mask=torch.ones(2, 5, dtype=torch.long),
            ).numpy()
        hf_tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
        encoded = hf_tokenizer.encode(TEXT)
        out[name] = dict(
            dir=directory, tokens=tokens, logits=logits, greedy=greedy, encoded=encoded,
            decoded=hf_tokenizer.decode(encoded),
            decoded_skip=hf_tokenizer.decode(encoded, skip_special_tokens=True),
        )
    out["transformers"] = transformers
    out["torch"] = torch
    return out


@pytest.fixture(scope="module")
def loaded(hf):
    return {name: load_hf_checkpoint(hf[name]["dir"]) for name in TYPES}


def logits(gpt, tokens):
    # An eager call: `predict` would compile a function per model instance.
    return keras.ops.convert_to_numpy(gpt(tokens))


def hf_logits(hf, directory, tokens):
    model = hf["transformers"].AutoModelForCausalLM.from_pretrained(directory).eval()
    with hf["torch"].no_grad():
        return model(hf["torch"].tensor(tokens)).logits.numpy()


@pytest.mark.parametrize("name", TYPES)
def test_logits_and_greedy_generation_match_transformers(hf, loaded, name):
    gpt, ref = loaded[name], hf[name]
    assert is_hf_checkpoint(ref["dir"])
    np.testing.assert_allclose(logits(gpt, ref["tokens"]), ref["logits"],
                               atol=1e-4, rtol=0)
    # 32 greedy tokens, exactly transformers' tokens.
    tokens = gpt.generate(ref["tokens"][:, :5], max_new_tokens=32, temperature=0)
    np.testing.assert_array_equal(tokens, ref["greedy"])


def test_from_preset_reads_the_folder_and_the_hub_cache_offline(hf, loaded, tmp_path,
                                                               monkeypatch):
    from huggingface_hub import constants

    gpt = zoo.from_preset(hf["llama"]["dir"])
    assert isinstance(gpt, GPT) and isinstance(gpt.tokenizer, HFTokenizer)
    # A Hub cache filled by hand: hf:// then loads with HF_HUB_OFFLINE.
    cache = tmp_path / "hub"
    repo = cache / "models--owner--tiny-llama"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(hf["llama"]["dir"], snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    cached = zoo.from_preset("hf://owner/tiny-llama")
    ref = hf["llama"]
    np.testing.assert_allclose(logits(cached, ref["tokens"]), ref["logits"],
                               atol=1e-4, rtol=0)
    # Offline and not cached: one clear error.
    with pytest.raises(PresetError, match="not in the Hugging Face cache"):
        zoo.from_preset("hf://owner/not-cached")


@pytest.mark.parametrize("name", TYPES)
def test_tokenizer_matches_transformers(hf, loaded, name):
    ref, tokenizer = hf[name], loaded[name].tokenizer
    assert tokenizer.encode(TEXT).tolist() == ref["encoded"]
    assert tokenizer.decode(ref["encoded"]) == ref["decoded"]
    assert tokenizer.decode(np.array(ref["encoded"]), skip_special_tokens=True) == (
        ref["decoded_skip"])
    assert tokenizer.vocab_size == loaded[name].vocab_size


def test_tokenizer_padding_special_tokens_and_text_generation(hf, loaded):
    gpt = loaded["llama"]
    tokenizer = HFTokenizer.from_config(
        dict(gpt.tokenizer.get_config(), special_tokens=dict(
            gpt.tokenizer.special_tokens, pad_token="</s>")))
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, 2, 2)
    ids, mask = tokenizer.encode_batch(["hello", "the quick brown fox"])
    rows = tokenizer.encode(["hello", "the quick brown fox"])
    assert ids.shape == mask.shape == (2, len(rows[1]))
    assert ids[0, : len(rows[0])].tolist() == rows[0].tolist() and ids[0, 0] == 1
    assert (ids[0, len(rows[0]):] == 2).all() and mask.sum(1).tolist() == [len(r) for r in rows]
    left, left_mask = tokenizer.encode_batch(["hello", "the quick brown fox"],
                                             padding="max_length", max_length=20,
                                             padding_side="left")
    assert left.shape == (2, 20) and left[0, -len(rows[0]):].tolist() == rows[0].tolist()
    with pytest.raises(ValueError, match="truncation=True"):
        tokenizer.encode_batch(["the quick brown fox"], max_length=3)
    with pytest.raises(ValueError, match="no pad_token"):
        gpt.tokenizer.encode_batch(["a", "bc"])
    text = gpt.generate("hello wörld", max_new_tokens=6, temperature=0)
    assert isinstance(text, str) and text.startswith("hello wörld") and "<s>" not in text


def test_lora_adapters_round_trip(hf, tmp_path):
    base = load_hf_checkpoint(hf["llama"]["dir"])
    base.enable_lora(2)
    assert {v.path.rsplit("/", 1)[-1] for v in base.trainable_variables} == {
        "lora_kernel_a", "lora_kernel_b"}
    assert len(base.trainable_variables) == 2 * 5 * 2  # 5 projections per block
    frozen = [keras.ops.convert_to_numpy(v) for v in base.non_trainable_variables]
    base.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-2))
    tokens = hf["llama"]["tokens"]
    base.fit(tokens, epochs=3, batch_size=2, verbose=0)
    for before, after in zip(frozen, base.non_trainable_variables):
        if after.path.endswith("last_terms") or "seed" in after.path:
            continue
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(after))
    tuned = logits(base, tokens)
    assert np.abs(tuned - hf["llama"]["logits"]).max() > 1e-3  # the adapters changed it
    path = str(tmp_path / "adapters.safetensors")
    base.save_lora_weights(path)
    assert os.path.getsize(path) < 0.2 * sum(
        os.path.getsize(os.path.join(hf["llama"]["dir"], f))
        for f in os.listdir(hf["llama"]["dir"]) if f.endswith(".safetensors"))
    fresh = load_hf_checkpoint(hf["llama"]["dir"])
    fresh.load_lora_weights(path)
    np.testing.assert_allclose(logits(fresh, tokens), tuned, atol=1e-5, rtol=0)
    # Merged on export: transformers computes the fine-tuned model.
    fresh.save_to_hf(tmp_path / "merged")
    np.testing.assert_allclose(hf_logits(hf, str(tmp_path / "merged"), tokens), tuned,
                               atol=1e-4, rtol=0)
    other = load_hf_checkpoint(hf["gpt_neox"]["dir"])
    with pytest.raises(ValueError, match="do not fit this GPT"):
        other.load_lora_weights(path)
    with pytest.raises(ValueError, match="never replaces"):
        fresh.save_lora_weights(path)


def test_full_fine_tune_under_mixed_precision(hf):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        gpt = load_hf_checkpoint(hf["gpt2"]["dir"])
    finally:
        keras.config.set_dtype_policy(previous)
    assert gpt.compute_dtype == "bfloat16"
    gpt.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-3))
    history = gpt.fit(hf["gpt2"]["tokens"], epochs=3, batch_size=2, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert all(v.dtype == "float32" for v in gpt.weights)
    # (Generation under mixed precision: test_transformer.py.)


@pytest.mark.parametrize("name", TYPES)
def test_export_round_trip(hf, loaded, name, tmp_path):
    ref = hf[name]
    directory = str(tmp_path / name)
    loaded[name].save_to_hf(directory, max_shard_size=60_000 if name == "llama" else None)
    np.testing.assert_allclose(hf_logits(hf, directory, ref["tokens"]), ref["logits"],
                               atol=1e-4, rtol=0)
    again = load_hf_checkpoint(directory)
    assert again.get_config() == loaded[name].get_config() | {"name": again.name}
    with pytest.raises(ValueError, match="not an empty folder"):
        loaded[name].save_to_hf(directory)


def test_bad_checkpoints_fail_clearly(hf, loaded, tmp_path):
    def copy(name):
        target = tmp_path / f"{name}_{len(os.listdir(tmp_path))}"
        shutil.copytree(hf[name]["dir"], target)
        return target

    # A missing shard, named.
    folder = copy("gpt2")
    shards = sorted(f for f in os.listdir(folder) if f.startswith("model-"))
    assert len(shards) > 1
    os.remove(folder / shards[-1])
    with pytest.raises(PresetError, match=f"missing 1 of its {len(shards)}.*{shards[-1]}"):
        load_hf_checkpoint(str(folder))
    # Tensors that do not fit the config.
    folder = copy("llama")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, intermediate_size=48)))
    with pytest.raises(PresetError, match=r"layers.0.mlp.gate_proj.weight.*\(64, 32\).*\(48, 32\)"):
        load_hf_checkpoint(str(folder))
    # An unsupported tokenizer kind.
    from tokenizers import Tokenizer, models

    folder = copy("gpt_neox")
    Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]")).save(
        str(folder / "tokenizer.json"))
    with pytest.raises(PresetError, match="Unsupported tokenizer model type 'WordPiece'"):
        load_hf_checkpoint(str(folder))
    # Unsupported model types and options, named.
    folder = copy("llama")
    (folder / "config.json").write_text(json.dumps(dict(config, model_type="mistral")))
    with pytest.raises(PresetError, match="Unsupported model_type 'mistral'"):
        load_hf_checkpoint(str(folder))
    scaled = dict(config, rope_parameters={"rope_type": "linear", "factor": 2.0,
                                           "rope_theta": 10000.0})
    (folder / "config.json").write_text(json.dumps(scaled))
    with pytest.raises(PresetError, match="rope_type='linear'"):
        load_hf_checkpoint(str(folder))
    with pytest.raises(ValueError, match="no transformers"):
        GPT(vocab_size=8, max_length=8, num_layers=1, num_heads=2, hidden_dim=8,
            num_experts=2).save_to_hf(tmp_path / "moe")
    assert not os.path.exists(tmp_path / "moe")
