"""LoRA for the `GPT` with Keras's own `Dense.enable_lora`, and its adapter
files: only the low-rank factors, loaded onto the same base weights."""

import json
import os

import numpy as np
from keras import ops

from zoo.layers.causal_self_attention import kernel_variable

# The projections that get adapters, by their attribute names.
_ATTENTION = ("qkv", "output_projection")
_MLP = ("mlp_1", "mlp_gate", "mlp_2")


def projections(model):
    """`{name: Dense layer}` of every attention and MLP projection."""
    found = {}
    for i, block in enumerate(model.blocks):
        for attr in _ATTENTION:
            found[f"blocks.{i}.attention.{attr}"] = getattr(block.attention, attr)
        for attr in _MLP:
            layer = getattr(block, attr)
            if layer is not None:
                found[f"blocks.{i}.{attr}"] = layer
    return found


def _check_rank(rank, name="rank"):
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"`{name}` must be a positive integer; received {name}={rank!r}.")
    return rank


def enable_lora(model, rank, lora_alpha=None):
    if model.num_experts:
        raise ValueError(
            "enable_lora applies to GPTs with MLP blocks; this one has "
            f"num_experts={model.num_experts}."
        )
    _check_rank(rank)
    if lora_alpha is not None and not (
        isinstance(lora_alpha, (int, float)) and not isinstance(lora_alpha, bool)
        and lora_alpha > 0
    ):
        raise ValueError(f"`lora_alpha` must be a positive number; received {lora_alpha!r}.")
    layers = projections(model)
    if any(layer.lora_enabled for layer in layers.values()):
        raise ValueError("LoRA is already enabled on this GPT.")
    # Everything else is frozen: the adapters are all that trains (biases
    # included), so that the adapter file holds all that changed.
    for variable in model.trainable_variables:
        variable.trainable = False
    for layer in layers.values():
        layer.enable_lora(rank, lora_alpha=lora_alpha)


def save_lora_weights(model, filepath):
    from safetensors.numpy import save_file

    filepath = os.fspath(filepath)
    if not filepath.endswith(".safetensors"):
        raise ValueError(
            f"`filepath` must end in .safetensors; received {filepath!r}."
        )
    layers = projections(model)
    if not all(layer.lora_enabled for layer in layers.values()):
        raise ValueError("This GPT has no LoRA adapters: call enable_lora(rank) first.")
    if os.path.exists(filepath):
        raise ValueError(f"{filepath!r} exists; save_lora_weights never replaces a file.")
    tensors = {}
    for name, layer in layers.items():
        tensors[f"{name}.lora_a"] = ops.convert_to_numpy(layer.lora_kernel_a)
        tensors[f"{name}.lora_b"] = ops.convert_to_numpy(layer.lora_kernel_b)
    first = next(iter(layers.values()))
    metadata = {"rank": str(first.lora_rank), "alpha": json.dumps(first.lora_alpha),
                "format": "keras-genzoo-lora"}
    # Written beside the target and renamed: never a half-written file.
    partial = filepath + ".partial"
    try:
        save_file(tensors, partial, metadata=metadata)
        os.replace(partial, filepath)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def load_lora_weights(model, filepath):
    from safetensors import safe_open

    filepath = os.fspath(filepath)
    if not os.path.isfile(filepath):
        raise ValueError(f"No LoRA adapter file at {filepath!r}.")
    try:
        with safe_open(filepath, framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as error:  # safetensors' own errors: not a safetensors file
        raise ValueError(f"Could not read {filepath!r}: {type(error).__name__}: {error}") from None
    if metadata.get("format") != "keras-genzoo-lora":
        raise ValueError(f"{filepath!r} is not a LoRA adapter file of save_lora_weights.")
    rank, alpha = int(metadata["rank"]), json.loads(metadata["alpha"])
    layers = projections(model)
    expected = {f"{n}.lora_{p}" for n in layers for p in "ab"}
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise ValueError(
            f"The adapters in {filepath!r} do not fit this GPT (missing: {missing[:4]}; "
            f"not in this model: {extra[:4]})."
        )
    for name, layer in layers.items():
        a, b = tensors[f"{name}.lora_a"], tensors[f"{name}.lora_b"]
        layer_shape = tuple(kernel_variable(layer).shape)
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != rank or b.shape[0] != rank or (
            (a.shape[0], b.shape[1]) != layer_shape
        ):
            raise ValueError(
                f"Adapter {name} in {filepath!r} has factors {a.shape} and {b.shape}; this "
                f"GPT's projection is {layer_shape} with rank {rank}."
            )
    enabled = [layer.lora_enabled for layer in layers.values()]
    if any(enabled):
        first = next(iter(layers.values()))
        if first.lora_rank != rank:
            raise ValueError(
                f"This GPT's LoRA has rank {first.lora_rank}; {filepath!r} holds rank {rank}."
            )
    else:
        enable_lora(model, rank, lora_alpha=alpha)
    for name, layer in layers.items():
        layer.lora_kernel_a.assign(np.asarray(tensors[f"{name}.lora_a"]))
        layer.lora_kernel_b.assign(np.asarray(tensors[f"{name}.lora_b"]))
