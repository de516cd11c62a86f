"""Tests of the transformer family: GPT, its layers and its tokenizers.

`helpers.check_model` requires float32 samples, but a language model's
samples are int32 tokens (float tokens would be wrong data, and could not be
fed back to the model), so `check_gpt` below runs the same protocol checks
with int32 samples, using the helper's `assert_trees_close`.
"""

import os

import keras
import numpy as np
import pytest
from keras import ops

from tests.helpers import assert_trees_close, counted_calls
from zoo.data import MarkovText
from zoo.transformer import GPT, ByteTokenizer, CharTokenizer

BACKEND = keras.backend.backend()
VOCAB = 27
MAX_LENGTH = 24
TINY = dict(max_length=MAX_LENGTH, num_layers=2, num_heads=2, hidden_dim=16)


def markov_tokens(n=64, length=MAX_LENGTH + 1, seed=0):
    return MarkovText(vocab_size=VOCAB, order=1, seed=0).sequences(n, length, seed=seed)


def check_gpt(make_model, data, tmp_path, *, num_samples=3, length=10, epochs=2):
    """`helpers.check_model` for int32 token samples (see the module docstring)."""
    model = make_model()
    config = model.get_config()
    clone = type(model).from_config(config)
    assert clone.get_config() == config
    assert [tuple(v.shape) for v in clone.weights] == [tuple(v.shape) for v in model.weights]

    model.compile()
    history = model.fit(data, batch_size=16, epochs=epochs, verbose=0, shuffle=False)
    for name, values in history.history.items():
        assert np.all(np.isfinite(values)), f"{name} is not finite: {values}"
    losses = history.history["loss"]
    assert losses[-1] < losses[0], f"loss did not fall: {losses}"

    samples = model.sample(num_samples, seed=3, length=length)
    assert isinstance(samples, np.ndarray), type(samples)
    assert samples.shape == (num_samples, length) and samples.dtype == np.int32
    assert samples.min() >= 0 and samples.max() < model.vocab_size
    np.testing.assert_array_equal(samples, model.sample(num_samples, seed=3, length=length))
    assert not np.array_equal(samples, model.sample(num_samples, seed=4, length=length))

    path = os.path.join(str(tmp_path), "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    assert_trees_close(
        [v.numpy() for v in loaded.weights], [v.numpy() for v in model.weights],
        what="weights after load",
    )
    assert_trees_close(
        [v.numpy() for v in loaded.optimizer.variables],
        [v.numpy() for v in model.optimizer.variables],
        what="optimizer state after load",
    )
    np.testing.assert_array_equal(loaded.sample(num_samples, seed=3, length=length), samples)
    return model, loaded


@pytest.fixture(scope="module")
def protocol(tmp_path_factory):
    """A tiny learned-position GPT with a character tokenizer and dropout,
    through the protocol checks: `(model, loaded)`, the trained model and its
    `.keras` reload."""
    tokenizer = CharTokenizer(MarkovText(vocab_size=VOCAB, order=1, seed=0).alphabet)

    def make():
        return GPT(tokenizer=tokenizer, dropout=0.1, seed=0, **TINY)

    return check_gpt(make, markov_tokens(), tmp_path_factory.mktemp("gpt"))


@pytest.fixture(scope="module")
def trained(protocol):
    """The protocol's trained model, shared by the read-only tests (one
    training compilation for all of them)."""
    return protocol[0]


@pytest.fixture(scope="module")
def moe():
    """A tiny rotary mixture-of-experts GPT after one SGD step (plain SGD:
    an expert that got no gradient keeps its weights exactly), its history
    and its experts' first kernels before that step."""
    model = GPT(
        vocab_size=VOCAB, position_embedding="rotary", num_experts=4,
        experts_per_token=2, seed=1, **TINY,
    )
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1))
    before = [ops.convert_to_numpy(b.experts.expert_kernel_1) for b in model.blocks]
    history = model.fit(markov_tokens(16), batch_size=16, epochs=1, verbose=0)
    return model, history, before


# ----------------------------------------------------------------------
# Protocol, saving, tokenizers.


def test_protocol_with_char_tokenizer(protocol):
    model, loaded = protocol
    assert loaded.tokenizer == model.tokenizer and loaded.vocab_size == VOCAB
    # Text in, text out; the same shapes as `sample`'s, so nothing new to compile.
    texts = loaded.generate(["t", "a", "b"], max_new_tokens=9, seed=0)
    assert [len(t) for t in texts] == [10, 10, 10] and texts[0][0] == "t"
    assert set("".join(texts)) <= set(loaded.tokenizer.vocabulary)


def test_evaluate_reports_loss_and_perplexity(trained):
    tokens = markov_tokens(32, seed=1)
    logs = trained.evaluate(tokens, batch_size=16, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "perplexity"}
    # Perplexity is exp of the epoch's mean cross-entropy, not a mean of exps.
    np.testing.assert_allclose(logs["perplexity"], np.exp(logs["loss"]), rtol=1e-5)
    # `fit(x, y)` with y the next tokens is `fit(tokens)`; evaluate alike.
    explicit = trained.evaluate(
        tokens[:, :-1], tokens[:, 1:], batch_size=16, verbose=0, return_dict=True
    )
    np.testing.assert_allclose(explicit["loss"], logs["loss"], rtol=1e-5)


def greedy_reference(model, rows, total):
    """Greedy decoding by hand: the argmax of a full forward pass (`predict`,
    on one (3, 12) buffer so it compiles once) for one position at a time."""
    buffer = np.zeros((3, 12), np.int32)
    for b, row in enumerate(rows):
        buffer[b, : len(row)] = row
    for i in range(min(len(r) for r in rows), total):
        logits = model.predict(buffer, verbose=0)
        for b, row in enumerate(rows):
            if i >= len(row):
                buffer[b, i] = logits[b, i - 1].argmax()
    return buffer[: len(rows), :total]


def test_log_prob_matches_logits(trained):
    tokens = markov_tokens(3, length=12, seed=3)
    # Causal: the logits of positions < 11 do not see the last token.
    logits = trained.predict(tokens, verbose=0)[:, :-1].astype(np.float64)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = np.take_along_axis(log_softmax, tokens[:, 1:, None], -1)[..., 0].sum(-1)
    np.testing.assert_allclose(trained.log_prob(tokens, batch_size=1), expected, rtol=1e-4)
    single = trained.log_prob(tokens[0])
    assert isinstance(single, float)
    np.testing.assert_allclose(single, expected[0], rtol=1e-4)


@pytest.mark.parametrize("text", ["", "hello", "héllo wörld ✓", "日本語のテキスト",
                                  "emoji 🧪🐍\n\ttabs\x00nul", "e\u0301 combining"])
def test_tokenizers_round_trip_any_utf8(text):
    byte = ByteTokenizer()
    assert byte.decode(byte.encode(text)) == text
    char = CharTokenizer("abcdefgh ", byte_fallback=True)
    assert char.decode(char.encode(text)) == text
    assert char.encode(text).dtype == np.int32
    if text:
        exact = CharTokenizer.from_text(text)
        assert exact.decode(exact.encode(text)) == text


def test_tokenizer_configs_and_errors():
    for tokenizer in (ByteTokenizer(), CharTokenizer("xyz", byte_fallback=True)):
        serialized = keras.saving.serialize_keras_object(tokenizer)
        assert keras.saving.deserialize_keras_object(serialized) == tokenizer
    with pytest.raises(ValueError, match="not in the vocabulary"):
        CharTokenizer("abc").encode("abd")
    with pytest.raises(ValueError, match="repeats"):
        CharTokenizer("aba")
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        ByteTokenizer().decode([3, 256])
    assert ByteTokenizer().decode([0xE2, 0x9C]) == "\ufffd"  # a cut character
    with pytest.raises(ValueError, match="vocab_size"):
        GPT(vocab_size=30, tokenizer=ByteTokenizer(), **TINY)


# ----------------------------------------------------------------------
# The network.


def test_causality(moe):
    model = moe[0]
    tokens = markov_tokens(2, length=MAX_LENGTH, seed=4)
    changed = tokens.copy()
    changed[:, 10:] = (changed[:, 10:] + 5) % VOCAB
    a, b = model.predict(np.concatenate([tokens, changed]), verbose=0).reshape(
        2, 2, MAX_LENGTH, VOCAB
    )
    np.testing.assert_allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not np.allclose(a[:, 10:], b[:, 10:])


# ----------------------------------------------------------------------
# Generation.


# The generation tests share prompts of shape (3, 4) and 8 new tokens, so
# they share compiled decoding loops.
PROMPT = markov_tokens(3, length=4, seed=5)


def generator(request, which):
    """The fixture `which`'s GPT (a fixture may hold it with its data)."""
    model = request.getfixturevalue(which)
    return model[0] if isinstance(model, tuple) else model


@pytest.mark.parametrize("which", ["trained", "moe"])
def test_cached_and_uncached_generation_agree(which, request):
    model = generator(request, which)
    cached, cached_logits = model.generate(PROMPT, 8, temperature=0, return_logits=True)
    plain, plain_logits = model.generate(
        PROMPT, 8, temperature=0, use_cache=False, return_logits=True
    )
    assert cached.shape == (3, 12) and cached.dtype == np.int32
    np.testing.assert_array_equal(cached[:, :4], PROMPT)
    np.testing.assert_array_equal(cached, plain)
    assert cached_logits.shape == (3, 8, VOCAB)
    np.testing.assert_allclose(cached_logits, plain_logits, atol=1e-4)


@pytest.mark.parametrize("which", ["trained", "moe"])
def test_compiled_steps_agree(which, request):
    # On PyTorch the per-token step compiled by TorchInductor (one
    # compilation per model, the test's whole cost); on JAX and TensorFlow the
    # same XLA loop as "auto". "moe" has rotary positions, whose angles must
    # follow the loop index in the compiled step (not stay at the traced one).
    model = generator(request, which)
    # 10 new tokens: on PyTorch two compiled calls of 4 (the cached loop's
    # unrolling) and 2 eager steps.
    auto, auto_logits = model.generate(PROMPT, 10, temperature=0, return_logits=True)
    compiled, logits = model.generate(
        PROMPT, 10, temperature=0, return_logits=True, jit_compile=True
    )
    np.testing.assert_array_equal(compiled, auto)
    np.testing.assert_allclose(logits, auto_logits, atol=1e-4)


def test_auto_generation_traces_the_step_once_a_setting_has_run_long(trained, monkeypatch):
    # "auto" on PyTorch: a first short run decodes eagerly (Keras calls per
    # token); once runs of a setting have decoded more than LONG_LOOP
    # tokens, the per-token step is traced once, and later runs call Keras
    # only for the prompt (once, before the loop) and decode exactly what
    # eager decoding does. On JAX and TensorFlow the whole loop compiles at
    # its first run. (Prompts of a batch no other test uses: a setting of
    # its own.)
    import zoo.core

    monkeypatch.setattr(zoo.core, "LONG_LOOP", 12)
    calls = counted_calls(monkeypatch, trained.blocks[0])
    prompt = PROMPT[:2]
    for kwargs in (dict(temperature=0, return_logits=True), dict(seed=4, top_k=5)):
        runs = []
        for _ in range(3):
            calls.clear()
            runs.append((trained.generate(prompt, 8, **kwargs), len(calls)))
        if BACKEND == "torch":
            # The prompt, plus: each token eagerly; the trace; nothing.
            assert [n for _, n in runs] == [1 + 8, 1 + 1, 1]
        else:
            assert runs[2][1] == 0
        eager = trained.generate(prompt, 8, jit_compile=False, **kwargs)
        for result, _ in runs:
            if isinstance(eager, tuple):
                np.testing.assert_array_equal(result[0], eager[0])
                np.testing.assert_allclose(result[1], eager[1], atol=1e-5)
            else:
                np.testing.assert_array_equal(result, runs[0][0])
                if BACKEND != "tensorflow":  # (where XLA draws other numbers)
                    np.testing.assert_array_equal(result, eager)


@pytest.mark.parametrize("jit_compile", [True, "traced"])
def test_compile_step_leaves_the_callers_state_alone(trained, jit_compile):
    # On PyTorch the compiled (or traced) step updates a loop's carry in
    # place, but only the carry it returned itself: the state handed to the
    # loop is copied.
    from zoo.core import compile_loop, compile_step

    def fn(i, state):
        x, total = state
        total = total + ops.sum(x)
        x = ops.slice_update(x, [0, i], ops.reshape(ops.cast(i, "float32"), (1, 1)))
        return x, total

    step = compile_step(trained, fn, jit_compile=jit_compile)
    x0, t0 = np.zeros((1, 6), np.float32), np.zeros((), np.float32)
    state = (ops.convert_to_tensor(x0), ops.convert_to_tensor(t0))
    for _ in range(2):  # the same result from the same state, twice
        x, total = ops.fori_loop(0, 6, step, state)
        np.testing.assert_allclose(ops.convert_to_numpy(x), [[0, 1, 2, 3, 4, 5]])
        np.testing.assert_allclose(ops.convert_to_numpy(total), 0 + 0 + 1 + 3 + 6 + 10)
    np.testing.assert_array_equal(ops.convert_to_numpy(state[0]), x0)
    np.testing.assert_array_equal(ops.convert_to_numpy(state[1]), t0)
    # Unrolled: 4 iterations per compiled call, the last 2 eagerly; the
    # same loop from another start, too.
    loop = compile_loop(trained, fn, jit_compile=jit_compile, unroll=4)
    for lower in (0, 1, 0):
        x, total = loop(lower, 6, state)
        expected = np.zeros(6, np.float32)
        expected[lower:] = np.arange(lower, 6)
        np.testing.assert_allclose(ops.convert_to_numpy(x), [expected])
        sums = np.cumsum(np.concatenate([[0.0], expected]))[lower:6]
        np.testing.assert_allclose(ops.convert_to_numpy(total), sums.sum())
    np.testing.assert_array_equal(ops.convert_to_numpy(state[0]), x0)
    with pytest.raises(ValueError, match=r"`unroll` must be >= 1; received 0"):
        compile_loop(trained, fn, unroll=0)


def test_temperature_zero_is_greedy(trained):
    generated, _ = trained.generate(PROMPT, 8, temperature=0, return_logits=True)
    np.testing.assert_array_equal(generated, greedy_reference(trained, PROMPT, 12))
    # Sampling from a nucleus smaller than the top token is greedy too.
    np.testing.assert_array_equal(trained.generate(PROMPT, 8, top_p=1e-6, seed=0), generated)


def test_seeded_sampling_and_ragged_prompts(trained):
    a = trained.generate(PROMPT, 8, top_p=0.9, seed=1)
    np.testing.assert_array_equal(a, trained.generate(PROMPT, 8, top_p=0.9, seed=1))
    assert not np.array_equal(a, trained.generate(PROMPT, 8, top_p=0.9, seed=2))
    # Prompts of different lengths in one batch: each row as if alone.
    rows = [PROMPT[0], PROMPT[1, :2]]
    ragged = trained.generate(rows, 5, temperature=0)
    assert [len(r) for r in ragged] == [9, 7]
    reference = greedy_reference(trained, rows, 9)
    np.testing.assert_array_equal(ragged[0], reference[0])
    np.testing.assert_array_equal(ragged[1], reference[1, :7])


def test_top_k_and_top_p_keep_exactly_the_right_tokens():
    probs = np.array([[0.05, 0.4, 0.1, 0.3, 0.15]], np.float32)
    logits = ops.convert_to_tensor(np.log(probs))

    def kept(**kwargs):
        out = ops.convert_to_numpy(GPT.filter_logits(logits, **kwargs))
        return set(np.flatnonzero(np.isfinite(out[0])).tolist())

    assert kept(top_k=1) == {1}
    assert kept(top_k=3) == {1, 3, 4}
    assert kept(top_k=5) == {0, 1, 2, 3, 4}
    # Nucleus: the fewest most probable tokens reaching top_p.
    assert kept(top_p=0.39) == {1}
    assert kept(top_p=0.41) == {1, 3}
    assert kept(top_p=0.69) == {1, 3}
    assert kept(top_p=0.71) == {1, 3, 4}
    assert kept(top_p=0.96) == {0, 1, 2, 3, 4}
    # top_p applies to what top_k kept, renormalized: 0.4 / 0.85 < 0.5.
    assert kept(top_k=3, top_p=0.5) == {1, 3}
    out = ops.convert_to_numpy(GPT.filter_logits(logits, top_k=2))
    np.testing.assert_allclose(out[0, [1, 3]], np.log(probs[0, [1, 3]]), rtol=1e-6)


# ----------------------------------------------------------------------
# Mixture of experts.


def test_moe_logs_aux_loss_and_every_expert_learns(moe):
    model, history, before = moe
    assert set(history.history) == {"loss", "perplexity", "aux_loss", "skipped_updates"}
    aux = history.history["aux_loss"][0]
    assert np.isfinite(aux) and aux >= 1.0 - 1e-4  # 1 at perfect balance
    for block, old in zip(model.blocks, before):
        new = ops.convert_to_numpy(block.experts.expert_kernel_1)
        change = np.abs(new - old).max(axis=(1, 2))
        assert np.all(change > 0), f"{block.name}: experts without gradient: {change}"
    logs = model.evaluate(markov_tokens(16), batch_size=16, verbose=0, return_dict=True)
    np.testing.assert_allclose(
        logs["loss"], np.log(logs["perplexity"]) + 0.01 * logs["aux_loss"], rtol=1e-4
    )


# ----------------------------------------------------------------------
# Errors.


def test_clear_errors(trained, moe):
    prompt = markov_tokens(1, length=20)
    with pytest.raises(ValueError, match="max_length=24"):
        trained.generate(prompt, max_new_tokens=5)
    bad = prompt.copy()
    bad[0, 3] = VOCAB
    for call in (
        lambda: trained.generate(bad, 2),
        lambda: trained.log_prob(bad),
        lambda: trained(bad),
        lambda: trained.predict(bad, verbose=0),
        lambda: trained.fit(bad, epochs=1, verbose=0),
    ):
        with pytest.raises(ValueError, match="outside the vocabulary"):
            call()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        trained.generate(np.array([[-1, 2]]), 2)
    with pytest.raises(ValueError, match="no tokenizer"):
        moe[0].generate("text", 2)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        trained.generate("TEXT", 2)
    for kwargs, name in (
        (dict(temperature=-1.0), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_k=VOCAB + 1), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
    ):
        with pytest.raises(ValueError, match=f"`{name}`"):
            trained.generate(prompt[:, :2], 2, **kwargs)
    with pytest.raises(ValueError, match="max_new_tokens"):
        trained.generate(prompt[:, :2], 0)
    with pytest.raises(ValueError, match="tokens\\[:, 1:\\]"):
        trained.fit(markov_tokens(4, length=MAX_LENGTH + 2), epochs=1, verbose=0)
    for kwargs, name in (
        (dict(num_heads=3), "num_heads"),
        (dict(position_embedding="sinusoidal"), "position_embedding"),
        (dict(num_experts=1), "num_experts"),
        (dict(num_experts=2, experts_per_token=3), "experts_per_token"),
        (dict(dropout=1.0), "dropout"),
    ):
        with pytest.raises(ValueError, match=f"`{name}`"):
            GPT(vocab_size=VOCAB, **{**TINY, **kwargs})
    with pytest.raises(ValueError, match="vocab_size"):
        GPT(**TINY)
    for kwargs, name in (
        (dict(num_key_value_heads=3), "num_key_value_heads"),
        (dict(rotary_fraction=0.0), "rotary_fraction"),
        (dict(normalization="batch_norm"), "normalization"),
        (dict(gated_mlp=1), "gated_mlp"),
        (dict(tie_embeddings="no"), "tie_embeddings"),
    ):
        with pytest.raises(ValueError, match=f"`{name}`"):
            GPT(vocab_size=VOCAB, **{**TINY, **kwargs})


# ----------------------------------------------------------------------
# Mixed precision and the Llama / GPT-NeoX options.


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_trains_and_generates_under_mixed_precision(policy):
    # Rotary positions with grouped-query attention and Llama's options,
    # and learned positions with a tied output layer.
    options = dict(position_embedding="learned") if policy == "mixed_bfloat16" else dict(
        position_embedding="rotary", num_key_value_heads=1, normalization="rms_norm",
        gated_mlp=True, tie_embeddings=False, activation="silu")
    gpt = GPT(vocab_size=VOCAB, max_length=12, num_layers=1, num_heads=2,
              hidden_dim=8, seed=0, dtype=policy, **options)
    assert gpt.compute_dtype == policy.split("_")[1]
    gpt.compile()
    history = gpt.fit(markov_tokens(8, length=13), batch_size=4, epochs=2, verbose=0,
                      shuffle=False)
    assert np.isfinite(history.history["loss"]).all()
    assert {v.dtype for v in gpt.weights} == {"float32"}
    prompt = markov_tokens(2, length=3)
    # The key/value cache's update mixed float32 and half precision.
    tokens = gpt.generate(prompt, max_new_tokens=3, seed=0)
    assert tokens.shape == (2, 6) and tokens.min() >= 0 and tokens.max() < VOCAB


def test_parallel_residual_partial_rotary_and_grouped_attention_decode_consistently():
    # GPT-NeoX's and Llama's options: the cached decoding (grouped heads,
    # a quarter of each head rotated) computes what the full pass computes.
    gpt = GPT(vocab_size=VOCAB, max_length=12, num_layers=2, num_heads=4, hidden_dim=32,
              position_embedding="rotary", rotary_fraction=0.25, parallel_residual=True,
              num_key_value_heads=2, use_bias=False, seed=0)
    prompt = markov_tokens(2, length=3)
    tokens, logits = gpt.generate(prompt, max_new_tokens=6, temperature=0,
                                  return_logits=True, jit_compile=False)
    full = gpt.predict(tokens[:, :-1], verbose=0)[:, 2:]
    np.testing.assert_allclose(logits, full, atol=1e-5, rtol=0)
    clone = GPT.from_config(gpt.get_config())
    assert [v.shape for v in clone.weights] == [v.shape for v in gpt.weights]


def test_weights_keep_their_saved_layout(tmp_path):
    # The projections are Dense layers now; weight files keep the layout
    # they had as the attention's and block's own variables (the built-in
    # gpt_markov preset was saved so).
    import h5py

    gpt = GPT(vocab_size=VOCAB, **TINY, seed=0)
    path = str(tmp_path / "m.weights.h5")
    gpt.save_weights(path)
    with h5py.File(path) as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    assert "blocks/transformer_block/attention/vars/3" in names
    assert "blocks/transformer_block/vars/7" in names
    assert not [n for n in names if "/qkv/" in n or "/mlp_1/" in n]
    clone = GPT(vocab_size=VOCAB, **TINY, seed=1)
    clone.load_weights(path)
    tokens = markov_tokens(2, length=8)
    np.testing.assert_array_equal(clone.predict(tokens, verbose=0), gpt.predict(tokens, verbose=0))
