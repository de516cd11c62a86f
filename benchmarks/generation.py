"""Generation and sampling speed against the libraries users would pick.

    pip install keras-hub --no-deps      # the peer; imports with what the zoo installs
    KERAS_BACKEND=jax OMP_NUM_THREADS=1 python benchmarks/generation.py
    KERAS_BACKEND=torch OMP_NUM_THREADS=1 python benchmarks/generation.py --parts ddim

(`keras-hub` pulls `tensorflow-text`, which pins its own TensorFlow: installed
without its dependencies it runs on what the zoo already installs. diffusers
is needed for the DDIM peer, on PyTorch only.)

GPT: the zoo's `GPT.generate` against KerasHub's `GPT2CausalLM.generate`, both
GPT-2's architecture (6 layers, width 384, 6 heads, context 256, GPT-2's
vocabulary of 50257 tokens, tanh GELU) with the same weights: the zoo model's,
copied into a `GPT2Backbone` through KerasHub's own Hugging Face GPT-2 converter.
Greedy decoding of `--new-tokens` after a 16-token prompt, no stop token. Before
anything is timed, both decode the same prompts and must give the same tokens
(the script fails otherwise). Then calls alternate (zoo, KerasHub, zoo, ...)
`--repeats` times after warm-up calls of the same shapes; tokens/s is new
tokens over the median wall time of a call; "CPU ratio" compares the
process's CPU time (all threads), less sensitive to other jobs on a shared
machine.

DDIM: the zoo's `DDPM` with its U-Net (channels 64, multipliers 1-2-2, self
attention in the middle block) against diffusers' `DDIMPipeline`
(`UNet2DModel` with `block_out_channels` chosen so the parameter counts are
within 10%, the same cosine schedule and v-prediction, `DDIMScheduler`,
eta 0): `--ddim-batch` 32x32x3 images in 50 steps, then `--scaling-batch`
images in each of `--ddim-steps` steps (diffusers on PyTorch only). Seconds
per sample is a call's median wall time over its batch.

The zoo runs at its defaults (`jit_compile="auto"`): on JAX and TensorFlow the
whole loop compiled by `jax.jit` / XLA for generation, a `tf.function` for
sampling; on PyTorch, where the loop runs in Python, steps compiled by
TorchInductor for loops of more than 100 steps (`zoo.core.LONG_LOOP`), else,
once a setting has run more than 100 steps in all, the step traced once
(warm-up calls run until then, so the timed calls are that steady state;
generation's settings include the length, sampling's only the batch).
KerasHub compiles `generate` with `jax.jit` / XLA and runs eagerly under
`torch.no_grad()` on PyTorch; diffusers runs eagerly. "first call" is the first call's wall time in a fresh
process (tracing and compilation included; TorchInductor's on-disk cache
may hold the zoo's graphs from earlier runs).

Peak memory: each library in a fresh process; on CPU the growth of the
process's peak resident memory (VmHWM, reset through /proc/self/clear_refs)
over its resident memory once the model is built, across the first call
(compilation included; memory the process freed while building the model
may be reused unseen); on a GPU the backend's device peak (PyTorch
`max_memory_allocated`, TensorFlow `get_memory_info`, JAX `memory_stats`)
over the memory in use before the calls.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _markdown  # noqa: E402

GPT_CONFIG = dict(vocab_size=50257, max_length=256, num_layers=6, num_heads=6,
                  hidden_dim=384)
PROMPT_LENGTH = 16
UNET = dict(channels=64, channel_multipliers=(1, 2, 2))
DIFFUSERS_CHANNELS = (56, 112, 112)
_LABELS = {"jax": "JAX", "tensorflow": "TensorFlow", "torch": "PyTorch"}


def backend():
    import keras

    return keras.backend.backend()


# ---------------------------------------------------------------------------
# Peak memory: CPU resident memory, or the backend's device memory.


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _gpu():
    name = backend()
    if name == "torch":
        import torch

        return torch.cuda.is_available()
    if name == "jax":
        import jax

        return jax.devices()[0].platform == "gpu"
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


class PeakMemory:
    """`with PeakMemory() as m: ...`; then `m.growth_mb`: the peak memory
    inside the block above the memory in use when it began."""

    def __enter__(self):
        self.gpu = _gpu()
        name = backend()
        if self.gpu and name == "torch":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        elif self.gpu and name == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.reset_memory_stats("GPU:0")
            self.start = tf.config.experimental.get_memory_info("GPU:0")["current"]
        elif self.gpu:
            import jax

            # JAX cannot reset its peak: the growth is only seen if the
            # block's peak exceeds the one before it.
            self.start = jax.devices()[0].memory_stats()["bytes_in_use"]
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident size
            self.start = _status_kb("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        name = backend()
        if self.gpu and name == "torch":
            import torch

            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self.gpu and name == "tensorflow":
            import tensorflow as tf

            peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
        elif self.gpu:
            import jax

            peak = jax.devices()[0].memory_stats()["peak_bytes_in_use"]
        else:
            peak = _status_kb("VmHWM") * 1024
        self.growth_mb = max(0, peak - self.start) / 2**20
        return False


# ---------------------------------------------------------------------------
# The models.


def zoo_gpt():
    from zoo.transformer import GPT

    return GPT(**GPT_CONFIG, activation="gelu_approximate", seed=0)


def keras_hub_gpt(tensors):
    """A `GPT2CausalLM` holding `tensors` (Hugging Face GPT-2 names)."""
    import keras_hub
    from keras_hub.src.utils.transformers import convert_gpt2

    c = GPT_CONFIG
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=c["vocab_size"], num_layers=c["num_layers"],
        num_heads=c["num_heads"], hidden_dim=c["hidden_dim"],
        intermediate_dim=4 * c["hidden_dim"], dropout=0.0,
        max_sequence_length=c["max_length"],
    )

    class Loader:  # what KerasHub's converter asks of a checkpoint
        def port_weight(self, keras_variable, hf_weight_key, hook_fn=None):
            value = tensors["transformer." + hf_weight_key]
            if hook_fn is not None:
                value = hook_fn(value, tuple(keras_variable.shape))
            if tuple(value.shape) != tuple(keras_variable.shape):
                raise ValueError(f"{hf_weight_key}: {value.shape} for {keras_variable.shape}")
            keras_variable.assign(value)

    convert_gpt2.convert_weights(backbone, Loader(), {"n_embd": c["hidden_dim"]})
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    lm.compile(sampler="greedy")
    return lm


def gpt_tensors():
    from zoo.transformer.hf_convert import export_tensors

    return export_tensors(zoo_gpt(), "gpt2")


def prompts(batch):
    rng = np.random.default_rng(batch)
    return rng.integers(0, GPT_CONFIG["vocab_size"], (batch, PROMPT_LENGTH)).astype("int32")


def gpt_caller(library, model, batch, new_tokens):
    """A call that decodes `new_tokens` greedily and returns the tokens."""
    prompt = prompts(batch)
    if library == "zoo":
        return lambda: model.generate(prompt, new_tokens, temperature=0)
    total = PROMPT_LENGTH + new_tokens
    ids = np.zeros((batch, total), "int32")
    ids[:, :PROMPT_LENGTH] = prompt
    mask = np.arange(total)[None].repeat(batch, 0) < PROMPT_LENGTH
    inputs = {"token_ids": ids, "padding_mask": mask}

    def call():
        out = model.generate(inputs, stop_token_ids=None)
        return np.asarray(__import__("keras").ops.convert_to_numpy(out["token_ids"]))

    return call


def zoo_ddpm():
    from zoo.diffusion import DDPM

    return DDPM((32, 32, 3), **UNET, seed=0)


def diffusers_ddim():
    import torch
    from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

    n = len(DIFFUSERS_CHANNELS)
    unet = UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=DIFFUSERS_CHANNELS, norm_num_groups=8,
        down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n,
    )
    # The zoo DDPM's defaults: cosine schedule over 1000 steps, v-prediction,
    # predictions of x0 clipped to [-1, 1].
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                              prediction_type="v_prediction", clip_sample=True)
    pipe = DDIMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    if torch.cuda.is_available():
        pipe.to("cuda")
    return pipe


def ddim_caller(library, model, batch, steps):
    if library == "zoo":
        return lambda: model.sample(batch, steps=steps, sampler="ddim", seed=0)
    import torch

    return lambda: model(batch_size=batch, num_inference_steps=steps, eta=0.0,
                         generator=torch.Generator().manual_seed(0), output_type="np").images


def parameter_counts():
    zoo = zoo_ddpm()
    zoo.sample(1, steps=1, seed=0)  # builds the denoiser
    counts = {"zoo": int(zoo.denoiser.count_params())}
    if backend() == "torch":
        counts["diffusers"] = sum(p.numel() for p in diffusers_ddim().unet.parameters())
    return counts


# ---------------------------------------------------------------------------
# Child processes: one measurement each, printed as JSON on the last line.


def _timed(call):
    start, cpu = time.perf_counter(), time.process_time()
    out = call()
    return out, time.perf_counter() - start, time.process_time() - cpu


def child_memory(task, library, batch, length):
    """First-call time and peak memory of one library in this fresh process."""
    if task == "gpt":
        if library == "zoo":
            model = zoo_gpt()
        else:
            model = keras_hub_gpt(dict(np.load(os.environ["GENERATION_TENSORS"])))
        call = gpt_caller(library, model, batch, length)
    else:
        model = zoo_ddpm() if library == "zoo" else diffusers_ddim()
        call = ddim_caller(library, model, batch, length)
    with PeakMemory() as memory:
        _, first, _ = _timed(call)
    return {"first_s": first, "peak_mb": memory.growth_mb}


def _alternate(calls, repeats):
    """Median wall and CPU seconds per call, the calls taking turns."""
    wall = {name: [] for name in calls}
    cpu = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            _, w, c = _timed(call)
            wall[name].append(w)
            cpu[name].append(c)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name]))
            for name in calls}


def child_gpt_time(settings, repeats):
    """Same tokens check, then alternating timed calls, per (batch, tokens)."""
    tensors = dict(np.load(os.environ["GENERATION_TENSORS"]))
    models = {"zoo": zoo_gpt(), "keras_hub": keras_hub_gpt(tensors)}
    from zoo.core import LONG_LOOP

    results = []
    for batch, new_tokens in settings:
        calls = {lib: gpt_caller(lib, m, batch, new_tokens) for lib, m in models.items()}
        # The first calls compile; "auto" on PyTorch settles on its tier once
        # a setting has decoded more than LONG_LOOP tokens.
        outputs = {lib: call() for lib, call in calls.items()}
        for _ in range(math.ceil((LONG_LOOP + 1) / new_tokens) - 1):
            calls["zoo"]()
        if not np.array_equal(outputs["zoo"], outputs["keras_hub"]):
            differ = np.argwhere(outputs["zoo"] != outputs["keras_hub"])
            raise SystemExit(
                f"batch {batch}, {new_tokens} tokens: the zoo and KerasHub decode different "
                f"tokens from the same weights, first at (row, position) {differ[0].tolist()}")
        times = _alternate(calls, repeats)
        results.append({"batch": batch, "new_tokens": new_tokens, **{
            lib: {"wall": w, "cpu": c} for lib, (w, c) in times.items()}})
    return results


def child_ddim_time(settings, repeats):
    models = {"zoo": zoo_ddpm()}
    if backend() == "torch":
        models["diffusers"] = diffusers_ddim()
    from zoo.core import LONG_LOOP

    results, sampled = [], {}
    for batch, steps in settings:
        calls = {lib: ddim_caller(lib, m, batch, steps) for lib, m in models.items()}
        for call in calls.values():
            call()  # compiles
        # "auto" on PyTorch settles on its tier once a batch size has
        # sampled more than LONG_LOOP steps (every step count shares it).
        sampled[batch] = sampled.get(batch, 0) + steps
        while sampled[batch] <= LONG_LOOP:
            calls["zoo"]()
            sampled[batch] += steps
        times = _alternate(calls, repeats)
        results.append({"batch": batch, "steps": steps, **{
            lib: {"wall": w, "cpu": c} for lib, (w, c) in times.items()}})
    return results


def run_child(spec):
    """Runs `spec` in a fresh process of this backend; its JSON result."""
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"child {spec} failed with exit code {proc.returncode}: "
                         f"{proc.stdout.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main(spec):
    kind = spec.pop("kind")
    if kind == "memory":
        result = child_memory(**spec)
    elif kind == "gpt_time":
        result = child_gpt_time(**spec)
    elif kind == "ddim_time":
        result = child_ddim_time(**spec)
    else:
        result = parameter_counts()
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------------------
# The parent: runs the children, prints the tables.


def _ints(text):
    return [int(v) for v in text.split(",") if v]


def gpt_part(args, tmp):
    path = os.path.join(tmp, "gpt2.npz")
    np.savez(path, **gpt_tensors())
    os.environ["GENERATION_TENSORS"] = path
    longest = max(args.new_tokens)
    settings = [(1, n) for n in args.new_tokens] + [
        (b, longest) for b in args.gpt_batches if b != 1]
    timed = run_child({"kind": "gpt_time", "settings": settings, "repeats": args.repeats})
    c = GPT_CONFIG
    weights = 4 * sum(v.size for v in np.load(path).values()) / 2**20
    out = [
        f"### GPT generation on {_LABELS[backend()]}: the zoo against KerasHub's "
        "GPT2CausalLM", "",
        f"GPT-2's architecture: {c['num_layers']} layers, width {c['hidden_dim']}, "
        f"{c['num_heads']} heads, context {c['max_length']}, vocabulary {c['vocab_size']} "
        f"({weights:.0f} MB of float32 weights, the same in both); {PROMPT_LENGTH}-token "
        "prompts, greedy decoding, no stop token. Both decoded the same tokens (checked "
        "before timing). Time ratios above 1: the zoo is faster.", "",
        "| batch | new tokens | zoo tokens/s | KerasHub tokens/s | KerasHub/zoo time "
        "| KerasHub/zoo CPU time |",
        "|---|---|---|---|---|---|",
    ]
    for r in timed:
        tokens = r["batch"] * r["new_tokens"]
        z, k = r["zoo"], r["keras_hub"]
        out.append(f"| {r['batch']} | {r['new_tokens']} | {tokens / z['wall']:.0f} | "
                   f"{tokens / k['wall']:.0f} | {k['wall'] / z['wall']:.2f} | "
                   f"{k['cpu'] / z['cpu']:.2f} |")
    out += ["", "Cost against new tokens (batch 1): wall seconds per call, and CPU "
            "milliseconds per token.", "",
            "| new tokens | zoo s | zoo CPU ms/token | KerasHub s | KerasHub CPU ms/token |",
            "|---|---|---|---|---|"]
    for r in timed:
        if r["batch"] == 1:
            n, z, k = r["new_tokens"], r["zoo"], r["keras_hub"]
            out.append(f"| {n} | {z['wall']:.3f} | {1000 * z['cpu'] / n:.1f} | "
                       f"{k['wall']:.3f} | {1000 * k['cpu'] / n:.1f} |")
    batch = max(args.gpt_batches)
    out += ["", f"First call and peak memory growth, each library in a fresh process "
            f"(batch {batch}, {longest} new tokens).", "",
            "| library | first call s | peak memory growth MB |", "|---|---|---|"]
    for library, label in (("zoo", "zoo"), ("keras_hub", "KerasHub")):
        m = run_child({"kind": "memory", "task": "gpt", "library": library,
                       "batch": batch, "length": longest})
        out.append(f"| {label} | {m['first_s']:.1f} | {m['peak_mb']:.0f} |")
    return out


def ddim_part(args):
    counts = run_child({"kind": "counts"})
    libraries = [("zoo", "zoo")] + ([("diffusers", "diffusers")] if "diffusers" in counts else [])
    steps = 50 if 50 in args.ddim_steps else max(args.ddim_steps)
    settings = [(args.ddim_batch, steps)] + [
        (args.scaling_batch, s) for s in args.ddim_steps]
    timed = run_child({"kind": "ddim_time", "settings": settings,
                       "repeats": args.ddim_repeats})
    names = ", ".join(f"{label} {counts[lib] / 1e6:.2f}M" for lib, label in libraries)
    peer = len(libraries) > 1
    out = [
        f"### DDIM sampling on {_LABELS[backend()]}"
        + (": the zoo against diffusers" if peer else ""), "",
        f"32x32x3 images, DDIM with eta 0; denoiser parameters: {names}"
        + (" (diffusers: PyTorch only). Time ratios above 1: the zoo is faster." if peer
           else " (diffusers runs on PyTorch only)."), "",
        "| batch | steps | " + " | ".join(f"{label} s/sample | {label} CPU s/sample"
                                          for _, label in libraries)
        + (" | diffusers/zoo time | diffusers/zoo CPU time |" if peer else " |"),
        "|---|---|" + "---|" * (2 * len(libraries) + 2 * peer),
    ]
    for r in timed:
        cells = " | ".join(f"{r[lib]['wall'] / r['batch']:.3f} | {r[lib]['cpu'] / r['batch']:.3f}"
                           for lib, _ in libraries)
        extra = (f" {r['diffusers']['wall'] / r['zoo']['wall']:.2f} |"
                 f" {r['diffusers']['cpu'] / r['zoo']['cpu']:.2f} |") if peer else ""
        out.append(f"| {r['batch']} | {r['steps']} | {cells} |{extra}")
    out += ["", f"First call and peak memory growth, each library in a fresh process "
            f"(batch {args.ddim_batch}, {steps} steps).", "",
            "| library | first call s | peak memory growth MB |", "|---|---|---|"]
    for library, label in libraries:
        m = run_child({"kind": "memory", "task": "ddim", "library": library,
                       "batch": args.ddim_batch, "length": steps})
        out.append(f"| {label} | {m['first_s']:.1f} | {m['peak_mb']:.0f} |")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="gpt,ddim", help="gpt, ddim or both")
    parser.add_argument("--repeats", type=int, default=3, help="timed GPT calls of each")
    parser.add_argument("--ddim-repeats", type=int, default=2, help="timed DDIM calls of each")
    parser.add_argument("--gpt-batches", type=_ints, default=[1, 8])
    parser.add_argument("--new-tokens", type=_ints, default=[32, 64, 128])
    parser.add_argument("--ddim-batch", type=int, default=8)
    parser.add_argument("--ddim-steps", type=_ints, default=[10, 25, 50, 100])
    parser.add_argument("--scaling-batch", type=int, default=1,
                        help="batch of the runs against the number of steps")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    _markdown.add_argument(parser)
    args = parser.parse_args()
    if args.child:
        return child_main(json.loads(args.child))
    parts = set(args.parts.split(","))
    if not parts or parts - {"gpt", "ddim"}:
        parser.error(f"--parts must name gpt and/or ddim; received {args.parts!r}")
    start = time.perf_counter()
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        if "gpt" in parts:
            out += gpt_part(args, tmp) + [""]
        if "ddim" in parts:
            out += ddim_part(args) + [""]
    zoo_setting = (
        '`jit_compile="auto"`: TorchInductor for loops over 100 steps, else the traced '
        'step once a setting has run 100 steps' if backend() == "torch"
        else '`jit_compile="auto"`')
    notes = (
        f"The zoo at its default, {zoo_setting}. Timed calls of each library: "
        + ", ".join([f"{args.repeats} (GPT)"] * ("gpt" in parts)
                    + [f"{args.ddim_repeats} (DDIM)"] * ("ddim" in parts))
        + ", alternating, after warm-up calls of the same shapes; "
        "medians. \"first call\" includes tracing and compilation; peak memory growth is "
        "measured over the built model (see the script's docstring). "
        f"The whole run took {time.perf_counter() - start:.0f} s."
    )
    print(f"backend: {backend()}\n")
    print("\n".join(out))
    print(notes)
    _markdown.write(args.markdown, "Generation and sampling against KerasHub and diffusers",
                    "\n".join(out), notes)


if __name__ == "__main__":
    main()
