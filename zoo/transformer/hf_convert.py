"""Conversion between the zoo's `GPT` and Hugging Face transformers
checkpoints of model type `gpt2`, `gpt_neox` and `llama`: their config.json
to `GPT` arguments and back, and their tensors to the GPT's variables and
back, all in NumPy (no PyTorch).

Each model type is described once, as a list of `Entry`s: one zoo variable,
the checkpoint tensors it is made of, and the two conversions. Loading,
checking shapes and exporting all read that list.
"""

import dataclasses
from typing import Callable

import numpy as np
from keras import ops

from zoo.layers.causal_self_attention import kernel_variable, merged_kernel

MODEL_TYPES = ("gpt2", "gpt_neox", "llama")
ARCHITECTURES = {
    "gpt2": "GPT2LMHeadModel",
    "gpt_neox": "GPTNeoXForCausalLM",
    "llama": "LlamaForCausalLM",
}
# transformers' activation names -> the zoo's.
_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_approximate",
    "gelu_pytorch_tanh": "gelu_approximate",
    "gelu_fast": "gelu_approximate",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
_EXPORTED_ACTIVATIONS = {"gelu": "gelu", "gelu_approximate": "gelu_new", "relu": "relu",
                         "silu": "silu"}
# Buffers some checkpoints hold that carry no weights.
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".attention.bias",
                     ".attention.masked_bias", ".rotary_emb.inv_freq")


class UnsupportedCheckpoint(ValueError):
    """A checkpoint of a model type or option the zoo's GPT does not have."""


@dataclasses.dataclass
class Entry:
    """One zoo variable made of checkpoint tensors `names`."""

    variable: object
    names: list
    shapes: list  # the checkpoint tensors' shapes
    to_zoo: Callable  # list of arrays -> the variable's value
    from_zoo: Callable  # the variable's value -> list of arrays
    projection: object = None  # the Dense layer of a kernel (LoRA merged on export)


def _transpose(arrays):
    return arrays[0].T


def _same(arrays):
    return arrays[0]


def _rope(config):
    """(theta, partial rotary factor) from either config layout (transformers
    5's `rope_parameters` or the older `rope_theta` / `rope_scaling` /
    `rotary_pct` / `rotary_emb_base`), refusing scaled rotary positions."""
    parameters = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling")
    kind = parameters.get("rope_type") or (
        (scaling or {}).get("rope_type") or (scaling or {}).get("type") if scaling else None
    )
    if kind not in (None, "default"):
        raise UnsupportedCheckpoint(
            f"Unsupported option rope_type={kind!r} (rotary scaling) in this "
            f"{config['model_type']} checkpoint: the zoo's GPT has default rotary "
            "positions only."
        )
    theta = (parameters.get("rope_theta") or config.get("rope_theta")
             or config.get("rotary_emb_base") or 10000.0)
    fraction = (parameters.get("partial_rotary_factor") or config.get("partial_rotary_factor")
                or config.get("rotary_pct") or 1.0)
    return float(theta), float(fraction)


def _refuse(config, name, value, allowed):
    if value not in allowed:
        raise UnsupportedCheckpoint(
            f"Unsupported option {name}={value!r} in this {config['model_type']} "
            f"checkpoint; the zoo's GPT supports {name} in {list(allowed)}."
        )


def _activation(config, name, default):
    value = config.get(name, default)
    _refuse(config, name, value, _ACTIVATIONS)
    return _ACTIVATIONS[value]


def gpt_arguments(config):
    """The `GPT` constructor arguments of a transformers config.json (a dict)."""
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise UnsupportedCheckpoint(
            f"Unsupported model_type {model_type!r}: the zoo loads transformers "
            f"checkpoints of model_type {', '.join(MODEL_TYPES)}."
        )
    if model_type == "gpt2":
        _refuse(config, "scale_attn_weights", config.get("scale_attn_weights", True), (True,))
        _refuse(config, "scale_attn_by_inverse_layer_idx",
                config.get("scale_attn_by_inverse_layer_idx", False), (False,))
        _refuse(config, "add_cross_attention", config.get("add_cross_attention", False),
                (False,))
        hidden = config["n_embd"]
        return dict(
            vocab_size=config["vocab_size"], max_length=config["n_positions"],
            num_layers=config["n_layer"], num_heads=config["n_head"], hidden_dim=hidden,
            intermediate_dim=config.get("n_inner") or 4 * hidden,
            activation=_activation(config, "activation_function", "gelu_new"),
            layer_norm_epsilon=config.get("layer_norm_epsilon", 1e-5),
            initializer_stddev=config.get("initializer_range", 0.02),
            position_embedding="learned",
            tie_embeddings=config.get("tie_word_embeddings", True),
        )
    theta, fraction = _rope(config)
    common = dict(
        vocab_size=config["vocab_size"], max_length=config["max_position_embeddings"],
        num_layers=config["num_hidden_layers"], num_heads=config["num_attention_heads"],
        hidden_dim=config["hidden_size"], intermediate_dim=config["intermediate_size"],
        initializer_stddev=config.get("initializer_range", 0.02),
        position_embedding="rotary", rotary_max_wavelength=theta, rotary_fraction=fraction,
    )
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    if model_type == "gpt_neox":
        # GPT-NeoX's MLP always has biases.
        _refuse(config, "attention_bias", config.get("attention_bias", True), (True,))
        return dict(
            common, activation=_activation(config, "hidden_act", "gelu"),
            layer_norm_epsilon=config.get("layer_norm_eps", 1e-5),
            parallel_residual=config.get("use_parallel_residual", True),
            tie_embeddings=config.get("tie_word_embeddings", False),
        )
    _refuse(config, "head_dim", config.get("head_dim") or head_dim, (head_dim,))
    attention_bias = config.get("attention_bias", False)
    _refuse(config, "mlp_bias", config.get("mlp_bias", False), (attention_bias,))
    return dict(
        common, activation=_activation(config, "hidden_act", "silu"),
        layer_norm_epsilon=config.get("rms_norm_eps", 1e-6),
        num_key_value_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
        normalization="rms_norm", gated_mlp=True, use_bias=attention_bias,
        tie_embeddings=config.get("tie_word_embeddings", False),
    )


def model_type_of(model):
    """The transformers model type that computes what `model` computes."""
    problems = []
    if model.num_experts:
        problems.append(f"num_experts={model.num_experts}")
    if model.activation not in _EXPORTED_ACTIVATIONS:
        problems.append(f"activation={model.activation!r}")
    if problems:
        raise UnsupportedCheckpoint(
            f"This GPT has no transformers equivalent: {', '.join(problems)}."
        )
    learned = model.position_embedding_type == "learned"
    layer_norm = model.normalization == "layer_norm"
    grouped = model.num_key_value_heads not in (None, model.num_heads)
    if learned and layer_norm and model.use_bias and not (
        model.gated_mlp or model.parallel_residual or grouped
    ):
        return "gpt2"
    if not learned and layer_norm and model.use_bias and not (model.gated_mlp or grouped):
        return "gpt_neox"
    if not learned and not layer_norm and model.gated_mlp and not model.parallel_residual \
            and model.rotary_fraction == 1.0:
        return "llama"
    raise UnsupportedCheckpoint(
        "This GPT's combination of options has no transformers model type: "
        f"position_embedding={model.position_embedding_type!r}, "
        f"normalization={model.normalization!r}, gated_mlp={model.gated_mlp}, "
        f"parallel_residual={model.parallel_residual}, use_bias={model.use_bias}, "
        f"num_key_value_heads={model.num_key_value_heads}, "
        f"rotary_fraction={model.rotary_fraction} (gpt2: learned positions, layer norm, "
        "biases; gpt_neox: rotary, layer norm, biases; llama: rotary on every channel, "
        "rms_norm, gated MLP)."
    )


def hf_config(model, model_type):
    """The transformers config.json (a dict) of `model` as `model_type`."""
    activation = _EXPORTED_ACTIVATIONS[model.activation]
    tokenizer = model.tokenizer
    ids = {
        f"{kind}_token_id": getattr(tokenizer, f"{kind}_token_id", None)
        for kind in ("bos", "eos", "pad")
    }
    common = dict(model_type=model_type, architectures=[ARCHITECTURES[model_type]],
                  vocab_size=model.vocab_size, initializer_range=model.initializer_stddev,
                  tie_word_embeddings=model.tie_embeddings, dtype="float32", **ids)
    if model_type == "gpt2":
        return dict(
            common, n_positions=model.max_length, n_layer=model.num_layers,
            n_head=model.num_heads, n_embd=model.hidden_dim, n_inner=model.intermediate_dim,
            activation_function=activation, layer_norm_epsilon=model.layer_norm_epsilon,
            resid_pdrop=model.dropout, embd_pdrop=model.dropout, attn_pdrop=0.0,
        )
    common.update(
        max_position_embeddings=model.max_length, num_hidden_layers=model.num_layers,
        num_attention_heads=model.num_heads, hidden_size=model.hidden_dim,
        intermediate_size=model.intermediate_dim, hidden_act=activation,
    )
    rope = {"rope_type": "default", "rope_theta": model.rotary_max_wavelength}
    if model_type == "gpt_neox":
        return dict(
            common, layer_norm_eps=model.layer_norm_epsilon,
            use_parallel_residual=model.parallel_residual, attention_bias=True,
            rope_parameters=dict(rope, partial_rotary_factor=model.rotary_fraction),
            rotary_pct=model.rotary_fraction, rotary_emb_base=model.rotary_max_wavelength,
        )
    return dict(
        common, rms_norm_eps=model.layer_norm_epsilon,
        num_key_value_heads=model.num_key_value_heads or model.num_heads,
        head_dim=model.hidden_dim // model.num_heads, attention_bias=model.use_bias,
        mlp_bias=model.use_bias, rope_parameters=rope, rope_theta=model.rotary_max_wavelength,
    )


def _kernel(projection, names, shapes, transposed=True):
    """A Dense kernel stored as a torch Linear weight (`transposed`) or as a
    GPT-2 Conv1D weight."""
    entries = [Entry(kernel_variable(projection), names[:1], shapes[:1],
                     _transpose if transposed else _same,
                     (lambda v: [v.T]) if transposed else (lambda v: [v]), projection)]
    if projection.bias is not None:
        entries.append(Entry(projection.bias, names[1:], [shapes[0][:1] if transposed
                                                          else shapes[0][1:]],
                             _same, lambda v: [v]))
    return entries


def _linear(projection, prefix):
    out_features = projection.units
    in_features = kernel_variable(projection).shape[0]
    return _kernel(projection, [f"{prefix}.weight", f"{prefix}.bias"],
                   [(out_features, in_features)])


def _conv1d(projection, prefix):
    kernel = kernel_variable(projection)
    return _kernel(projection, [f"{prefix}.weight", f"{prefix}.bias"],
                   [tuple(kernel.shape)], transposed=False)


def _norm(gamma, beta, prefix):
    entries = [Entry(gamma, [f"{prefix}.weight"], [tuple(gamma.shape)], _same,
                     lambda v: [v])]
    if beta is not None:
        entries.append(Entry(beta, [f"{prefix}.bias"], [tuple(beta.shape)], _same,
                             lambda v: [v]))
    return entries


def _neox_qkv(attention, prefix):
    """GPT-NeoX fuses queries, keys and values per head, (heads, 3, head_dim);
    the zoo's `qkv` holds all queries, then keys, then values."""
    h, d, hd = attention.num_heads, attention.hidden_dim, attention.head_dim

    def kernel_in(arrays):
        return arrays[0].reshape(h, 3, hd, d).transpose(1, 0, 2, 3).reshape(3 * h * hd, d).T

    def kernel_out(value):
        return [value.T.reshape(3, h, hd, d).transpose(1, 0, 2, 3).reshape(3 * h * hd, d)]

    def bias_in(arrays):
        return arrays[0].reshape(h, 3, hd).transpose(1, 0, 2).reshape(-1)

    def bias_out(value):
        return [value.reshape(3, h, hd).transpose(1, 0, 2).reshape(-1)]

    return [
        Entry(kernel_variable(attention.qkv), [f"{prefix}.weight"], [(3 * d, d)],
              kernel_in, kernel_out, attention.qkv),
        Entry(attention.qkv.bias, [f"{prefix}.bias"], [(3 * d,)], bias_in, bias_out),
    ]


def _llama_qkv(attention, prefix):
    """Separate q, k, v projections, concatenated into the zoo's `qkv`."""
    d, hd = attention.hidden_dim, attention.head_dim
    widths = [attention.num_heads * hd] + [attention.num_key_value_heads * hd] * 2
    names = [f"{prefix}.{p}_proj" for p in "qkv"]
    splits = np.cumsum(widths)[:-1]
    entries = [Entry(kernel_variable(attention.qkv), [f"{n}.weight" for n in names],
                     [(w, d) for w in widths],
                     lambda arrays: np.concatenate([a.T for a in arrays], axis=1),
                     lambda value: [a.T for a in np.split(value, splits, axis=1)],
                     attention.qkv)]
    if attention.qkv.bias is not None:
        entries.append(Entry(attention.qkv.bias, [f"{n}.bias" for n in names],
                             [(w,) for w in widths], np.concatenate,
                             lambda value: np.split(value, splits)))
    return entries


def entries(model, model_type):
    """Every variable of `model` with its checkpoint tensors, for `model_type`."""
    out = []
    if model_type == "gpt2":
        out.append(Entry(model.token_embedding.embeddings, ["transformer.wte.weight"],
                         [(model.vocab_size, model.hidden_dim)], _same, lambda v: [v]))
        out.append(Entry(model.position_embedding.embeddings, ["transformer.wpe.weight"],
                         [(model.max_length, model.hidden_dim)], _same, lambda v: [v]))
        for i, block in enumerate(model.blocks):
            p = f"transformer.h.{i}"
            out += _norm(block.norm_1_gamma, block.norm_1_beta, f"{p}.ln_1")
            out += _conv1d(block.attention.qkv, f"{p}.attn.c_attn")
            out += _conv1d(block.attention.output_projection, f"{p}.attn.c_proj")
            out += _norm(block.norm_2_gamma, block.norm_2_beta, f"{p}.ln_2")
            out += _conv1d(block.mlp_1, f"{p}.mlp.c_fc")
            out += _conv1d(block.mlp_2, f"{p}.mlp.c_proj")
        final, head = "transformer.ln_f", "lm_head.weight"
    elif model_type == "gpt_neox":
        out.append(Entry(model.token_embedding.embeddings, ["gpt_neox.embed_in.weight"],
                         [(model.vocab_size, model.hidden_dim)], _same, lambda v: [v]))
        for i, block in enumerate(model.blocks):
            p = f"gpt_neox.layers.{i}"
            out += _norm(block.norm_1_gamma, block.norm_1_beta, f"{p}.input_layernorm")
            out += _neox_qkv(block.attention, f"{p}.attention.query_key_value")
            out += _linear(block.attention.output_projection, f"{p}.attention.dense")
            out += _norm(block.norm_2_gamma, block.norm_2_beta,
                         f"{p}.post_attention_layernorm")
            out += _linear(block.mlp_1, f"{p}.mlp.dense_h_to_4h")
            out += _linear(block.mlp_2, f"{p}.mlp.dense_4h_to_h")
        final, head = "gpt_neox.final_layer_norm", "embed_out.weight"
    else:
        out.append(Entry(model.token_embedding.embeddings, ["model.embed_tokens.weight"],
                         [(model.vocab_size, model.hidden_dim)], _same, lambda v: [v]))
        for i, block in enumerate(model.blocks):
            p = f"model.layers.{i}"
            out += _norm(block.norm_1_gamma, None, f"{p}.input_layernorm")
            out += _llama_qkv(block.attention, f"{p}.self_attn")
            out += _linear(block.attention.output_projection, f"{p}.self_attn.o_proj")
            out += _norm(block.norm_2_gamma, None, f"{p}.post_attention_layernorm")
            out += _linear(block.mlp_gate, f"{p}.mlp.gate_proj")
            out += _linear(block.mlp_1, f"{p}.mlp.up_proj")
            out += _linear(block.mlp_2, f"{p}.mlp.down_proj")
        final, head = "model.norm", "lm_head.weight"
    norm = model.final_norm
    beta = getattr(norm, "beta", None)
    gamma = norm.scale if model.normalization == "rms_norm" else norm.gamma
    out += _norm(gamma, beta, final)
    if model.output_head is not None:
        out += _linear(model.output_head, head[: -len(".weight")])
    return out


def canonical_name(name, model_type):
    """The name a tensor has in `entries`; None for buffers without weights.

    Older GPT-2 checkpoints (the hub's `gpt2`) name tensors without the
    `transformer.` prefix."""
    if name.endswith(_IGNORED_SUFFIXES):
        return None
    if model_type == "gpt2" and not name.startswith(("transformer.", "lm_head.")):
        return "transformer." + name
    return name


def export_tensors(model, model_type):
    """`{name: float32 array}`: the checkpoint tensors of `model`."""
    tensors = {}
    for entry in entries(model, model_type):
        value = (
            merged_kernel(entry.projection) if entry.projection is not None
            else ops.convert_to_numpy(entry.variable)
        ).astype(np.float32)
        for name, array in zip(entry.names, entry.from_zoo(value)):
            tensors[name] = np.ascontiguousarray(array, dtype=np.float32)
    return tensors
