"""Text-conditioned diffusion: cross-attention, captions through `fit`,
prompts and classifier-free guidance in `sample`, frozen encoders, saving,
and the errors of bad prompts and arguments."""

import warnings

import keras
import numpy as np
import pytest

from zoo.data import caption_vocabulary, captioned_digits
from zoo.diffusion import DDPM, FlowMatching
from zoo.layers.cross_attention import CrossAttention
from zoo.multimodal import CLIP, TextEncoder

# Few tests, each training and sampling a text-conditioned model.
pytestmark = pytest.mark.heavy

CONTEXT = 16


def _encoder(seed=0):
    return TextEncoder(caption_vocabulary(), context_length=CONTEXT, hidden_dim=8,
                       num_layers=1, num_heads=2, seed=seed)


def _data(n=32):
    data = captioned_digits("train", seed=0, num_captions=1)
    return data.images[:n], data.captions[:n, 0]


def _tiny(cls, denoiser="dit", **kwargs):
    options = dict(channels=8, channel_multipliers=(1,), seed=0)
    if denoiser == "dit":
        options = dict(denoiser="dit", denoiser_options=dict(
            patch_size=4, hidden_dim=8, depth=1, num_heads=2), seed=0)
    if cls is DDPM:
        options["timesteps"] = 50
    return cls((8, 8, 1), text_encoder=kwargs.pop("text_encoder", None) or _encoder(),
               **{**options, **kwargs})


def test_cross_attention_reads_real_tokens_only():
    layer = CrossAttention(num_heads=2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 4, 8)).astype("float32")
    context = rng.standard_normal((2, 5, 6)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], bool)
    out = keras.ops.convert_to_numpy(layer(x, context, mask))
    assert out.shape == x.shape
    padded = context.copy()
    padded[:, 3:] = 100.0  # padding of both rows
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, padded, mask)), out,
                               atol=1e-5)
    real = context.copy()
    real[:, 0] += 1.0  # a real token of both rows
    assert np.abs(keras.ops.convert_to_numpy(layer(x, real, mask)) - out).max() > 1e-3


# The U-Net's text path is also exercised by the t2i_digits preset's tests
# (tests/test_presets.py, the command line test below); here its compiled
# JAX sampling loop alone takes minutes to compile, so it runs with the slow tests.
@pytest.mark.parametrize("cls,denoiser", [
    (DDPM, "dit"), (FlowMatching, "dit"), pytest.param(DDPM, "unet", marks=pytest.mark.slow)])
def test_fit_on_captions_and_sample_from_prompts(cls, denoiser, tmp_path):
    x, captions = _data()
    model = _tiny(cls, denoiser)
    # DDPM's step runs eagerly here, flow matching's compiled: both ways
    # are covered without paying for two compilations. Not on JAX, where an
    # eager DiT step dispatches op by op (a minute here against seconds
    # compiled) and an eager step is the same traced function anyway.
    eager_step = cls is DDPM and keras.backend.backend() != "jax"
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=eager_step)
    history = model.fit(x, captions, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    prompts = ["a thick three", "the digit 7"]
    kwargs = dict(steps=3, seed=1)
    a = model.sample(2, prompts=prompts, guidance_scale=3.0, **kwargs)  # the compiled loop
    assert a.shape == (2, 8, 8, 1) and np.isfinite(a).all()
    eager = dict(kwargs, jit_compile=False)
    np.testing.assert_allclose(model.sample(2, prompts=prompts, guidance_scale=3.0, **eager),
                               a, rtol=1e-4, atol=1e-4)
    # The prompt reaches the images: another prompt, other images.
    b = model.sample(2, prompts=["a thin one", "a small 0"], guidance_scale=3.0, **eager)
    assert np.abs(a - b).max() > 1e-4
    # Guidance 0 is the null ("no caption") condition: the unconditional model.
    np.testing.assert_allclose(model.sample(2, prompts=prompts, guidance_scale=0.0, **eager),
                               model.sample(2, **eager), rtol=1e-4, atol=1e-4)
    # Saved and loaded with its encoder, tokenizer and null token.
    path = str(tmp_path / "t2i.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.sample(2, prompts=prompts, guidance_scale=3.0, **eager),
                               a, rtol=1e-4, atol=1e-4)


def test_frozen_encoder_stays_and_joint_encoder_trains():
    x, captions = _data(16)
    # Two steps each: the denoiser's output layer starts at zero, so the
    # first step's gradient reaches nothing before it. The frozen encoder is
    # a CLIP's, as docs/text_to_image.md suggests; the CLIP's text
    # embeddings must not move either.
    clip = CLIP(caption_vocabulary(), embed_dim=8, context_length=CONTEXT, text_hidden_dim=8,
                text_num_layers=1, text_num_heads=2, image_filters=4, seed=0)
    frozen_encoder = clip.text_encoder
    before = [np.array(v) for v in frozen_encoder.weights]
    texts = clip.encode_text(["a thick three", "the digit 7"])
    frozen = _tiny(FlowMatching, text_encoder=frozen_encoder, train_text_encoder=False,
                   ema_decay=None)
    assert not any(v is w for v in frozen.trainable_variables for w in frozen_encoder.weights)
    # Eager steps, but not on JAX, where eager dispatch compiles op by op
    # (see the test above).
    eager = keras.backend.backend() != "jax"
    frozen.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=eager)
    frozen.fit(x, captions, batch_size=8, epochs=1, verbose=0)
    for v, b in zip(frozen_encoder.weights, before):
        np.testing.assert_array_equal(np.array(v), b)
    np.testing.assert_array_equal(clip.encode_text(["a thick three", "the digit 7"]), texts)

    joint = _tiny(FlowMatching, ema_decay=None, text_dropout=0.5)
    before = [np.array(v) for v in joint.text_encoder.trainable_weights]
    null = np.array(joint.null_text)
    joint.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=eager)
    joint.fit(x, captions, batch_size=8, epochs=1, verbose=0)
    assert any(np.abs(np.array(v) - b).max() > 0
               for v, b in zip(joint.text_encoder.trainable_weights, before))
    assert np.abs(np.array(joint.null_text) - null).max() > 0  # dropped captions train it


def test_bad_prompts_and_arguments_are_clear_errors():
    model = _tiny(DDPM, ema_decay=None)
    model.compile()
    x, captions = _data(4)
    with pytest.raises(ValueError, match="empty"):
        model.sample(2, prompts=[], steps=2)
    with pytest.raises(ValueError, match="2 prompts for num_samples=3"):
        model.sample(3, prompts=["a 3", "a 4"], steps=2)
    with pytest.raises(ValueError, match="outside the tokenizer's vocabulary"):
        model.sample(1, prompts=["a purple seven"], steps=2)
    with pytest.raises(ValueError, match="guidance_scale"):
        model.sample(1, prompts=["a 3"], guidance_scale=-1.0, steps=2)
    with pytest.raises(ValueError, match="needs `prompts`"):
        model.sample(1, guidance_scale=2.0, steps=2)
    with pytest.raises(ValueError, match="not `labels`"):
        model.sample(1, labels=[3], steps=2)
    with pytest.raises(ValueError, match="fit\\(images, captions\\)"):
        model.fit(x, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="one per image"):
        model.fit(x, np.stack([captions, captions], 1), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="outside the tokenizer's vocabulary"):
        model.fit(x, ["a purple seven"] * 4, epochs=1, verbose=0)
    long = " ".join(["a thick thin"] * 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = model.tokenize_captions([long])
    assert any("truncated" in str(w.message) for w in caught)
    assert ids.shape == (1, CONTEXT)
    with pytest.raises(ValueError, match="not both"):
        DDPM((8, 8, 1), num_classes=10, text_encoder=_encoder())
    with pytest.raises(ValueError, match="U-Net or DiT"):
        DDPM((2,), text_encoder=_encoder())
    with pytest.raises(ValueError, match="text_dropout"):
        _tiny(DDPM, text_dropout=1.0)

    labelled = DDPM((2,), num_classes=3, hidden_units=8, timesteps=10, seed=0)
    with pytest.raises(ValueError, match="no `text_encoder`"):
        labelled.sample(2, prompts=["a 3", "a 4"], steps=2)
    with pytest.raises(ValueError, match="no `text_encoder`"):
        labelled.fit(np.zeros((2, 2), "float32"), ["a 3", "a 4"], verbose=0)
    with pytest.raises(ValueError, match="guidance_scale"):
        labelled.sample(2, labels=[0, 1], guidance_scale=-0.5, steps=2)


def test_command_line_samples_the_preset_from_a_prompt(tmp_path, capsys):
    from zoo.__main__ import main

    grid = tmp_path / "grid.png"
    args = ["sample", "t2i_digits", "--num", "4", "--steps", "2", "--out", str(grid)]
    assert main(args + ["--prompt", "a slanted seven"]) == 0
    assert grid.exists() and "a slanted seven" in capsys.readouterr().out
    assert main(args) == 2
    assert "pass --prompt" in capsys.readouterr().err
    assert main(args + ["--prompt", "a purple seven"]) == 2
    assert "outside the tokenizer's vocabulary" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: "expected a number >= 0"
        main(args + ["--prompt", "a 7", "--guidance-scale", "-1"])
    assert main(["sample", "fm_ring", "--prompt", "a 7", "--num", "2"]) == 2
    assert "without a text encoder" in capsys.readouterr().err
