"""Training-step time and peak memory of zoo models at real sizes against
native loops on the same networks.

    KERAS_BACKEND=jax python benchmarks/real_sizes.py
    KERAS_BACKEND=tensorflow python benchmarks/real_sizes.py --settings defaults,fastest
    KERAS_BACKEND=torch OMP_NUM_THREADS=1 python benchmarks/real_sizes.py --models dcgan
    KERAS_BACKEND=jax python benchmarks/real_sizes.py --models "" --scaling   # widths only

Models (random data; the timings do not depend on it):

- `dcgan`: `GAN((32, 32, 3), latent_dim=128, filters=64)`, the zoo's DCGAN
  networks (generator 4x4x256 -> 8x8x128 -> 16x16x64 -> 32x32x64 -> 3
  with batch norm; discriminator 64-128-256-512 strided convolutions),
  non-saturating loss, Adam(2e-4, 0.5, 0.999) for both players;
- `ddpm`: `DDPM((32, 32, 3))` with the zoo's U-Net, channels 64 x (1, 2, 2),
  one residual block per level, self-attention (4 heads) at the 8x8
  middle, cosine schedule, v-prediction, Adam(2e-4);
- `gpt`: `GPT` of 6 layers, width 384, 6 heads, context 256, vocabulary
  4096, tied embeddings, Adam(3e-4).

The weight averages (`ema_momentum`, `ema_decay`) are off, so that the zoo
step and the native loop do the same work; every model compiles with an
explicit Adam for the same reason.

"zoo" is `model.fit` on NumPy arrays. "native" (`_real_native.py`) is a copy
of the same Keras networks with the zoo model's initial weights, the same
loss written by hand with the backend's ops, the backend's own gradients and
Adam: a `jax.jit` step over `stateless_call`, a `tf.function` step with
`GradientTape`, an eager PyTorch step with `loss.backward()` and
`torch.optim.Adam`. Settings: "defaults" is `compile()`'s `jit_compile`
against the native loop at its default (JAX: both `jax.jit`; TensorFlow:
both a `tf.function`, without XLA on a CPU, as Keras's "auto" there;
PyTorch: the zoo's "auto" in its tier for long fits, the traced step, against
an eager loop); "fastest" is `jit_compile=True` against `tf.function(
jit_compile=True)` on TensorFlow and against `torch.compile` of the native
step on PyTorch (on JAX the defaults are the fastest already).

Before timing, zoo and native run `--check-steps` steps from the same
weights with the same noise (drawn by `keras.random` from a copy of the
model's seed generator and handed to the native step); "check" is the
relative difference of their mean losses, and the script exits non-zero if
it exceeds `--tolerance`. Then runs alternate (zoo, native, ...)
`--repeats` times, each of `--steps` steps, timed from step `--skip`;
medians, and beside the wall-clock ratio the ratio of the process's CPU
time. Peak memory: each run again in a fresh process (`--child`), the
growth of its peak resident set size (`ru_maxrss`) from just before the
first step, compilation included; on a GPU the backend's peak device
memory. `--scaling` times the GPT at widths 384, 768 and 1536 (heads of
64, `--scaling-layers` layers, context `--scaling-length`).
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _markdown  # noqa: E402
import _peak_memory  # noqa: E402
import _real_native  # noqa: E402
from step_time import F, device_name  # noqa: E402

BACKEND = keras.backend.backend()
MODELS = ("dcgan", "ddpm", "gpt")
TOLERANCE = 5e-3 if BACKEND == "torch" else 1e-3


# ---------------------------------------------------------------------------
# The models, their data and their loss written out over `call(network, ...)`.


class Spec:
    batch_size = 16
    noise = ()
    players = {"model": ["model"]}
    adam = dict(learning_rate=2e-4, beta_1=0.9, beta_2=0.999)

    def optimizers(self):
        return {p: dict(self.adam) for p in self.players}

    def compile_arg(self):
        opts = {p: keras.optimizers.Adam(**kw) for p, kw in self.optimizers().items()}
        return opts["model"] if list(opts) == ["model"] else opts

    def parameters(self, model):
        return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


class DCGAN(Spec):
    name, latent = "dcgan", 128
    players = {"discriminator": ["discriminator"], "generator": ["generator"]}
    adam = dict(learning_rate=2e-4, beta_1=0.5, beta_2=0.999)
    noise = (("normal", ("B", 128)), ("normal", ("B", 128)))

    def build(self):
        from zoo.gan import GAN

        return GAN((32, 32, 3), latent_dim=self.latent, filters=64, ema_momentum=None, seed=0)

    def networks(self, model):
        return {"generator": model.generator, "discriminator": model.discriminator}

    def data(self, n):
        return np.random.default_rng(0).uniform(-1, 1, (n, 32, 32, 3)).astype("float32")

    def updates(self, x, noise):
        def logits(call, images):
            return F.reshape(call("discriminator", images), (-1,))

        def d_loss(call):
            fake = F.stop(call("generator", noise[0]))
            return F.mean(F.softplus(-logits(call, x))) + F.mean(F.softplus(logits(call, fake)))

        def g_loss(call):
            return F.mean(F.softplus(-logits(call, call("generator", noise[1]))))

        return [("discriminator", d_loss), ("generator", g_loss)]


class UNetDDPM(Spec):
    name, timesteps = "ddpm", 1000
    players = {"model": ["denoiser"]}
    noise = (("randint", ("B",), 1000), ("normal", ("B", 32, 32, 3)))

    def build(self):
        from zoo.diffusion import DDPM

        self.model = DDPM((32, 32, 3), timesteps=self.timesteps, denoiser="unet", channels=64,
                          channel_multipliers=(1, 2, 2), num_res_blocks=1, ema_decay=None,
                          seed=0)
        return self.model

    def networks(self, model):
        return {"denoiser": model.denoiser}

    def data(self, n):
        return DCGAN.data(self, n)

    def updates(self, x, noise):
        table = F.const(self.model.alphas_cumprod.astype("float32"))
        t, eps = noise

        def loss(call):
            abar = F.reshape(F.take(table, t), (-1, 1, 1, 1))
            a, s = F.sqrt(abar), F.sqrt(1.0 - abar)
            pred = F.cast(call("denoiser", [a * x + s * eps, t]))
            return F.mean(F.square(pred - (a * eps - s * x)))

        return [("model", loss)]


class GPTSpec(Spec):
    name, vocab = "gpt", 4096
    players = {"model": ["gpt"]}
    adam = dict(learning_rate=3e-4, beta_1=0.9, beta_2=0.999)

    def __init__(self, layers=6, width=384, length=256, batch_size=4):
        self.layers, self.width, self.length, self.batch_size = layers, width, length, batch_size
        if (layers, width, length) != (6, 384, 256):
            self.name = f"gpt {layers}x{width}, context {length}"

    def build(self):
        from zoo.transformer import GPT

        return GPT(vocab_size=self.vocab, max_length=self.length, num_layers=self.layers,
                   num_heads=self.width // 64, hidden_dim=self.width, seed=0)

    def networks(self, model):
        return {"gpt": model}

    def data(self, n):
        return np.random.default_rng(0).integers(0, self.vocab, (n, self.length + 1)).astype("int32")

    def updates(self, x, noise):
        inputs, targets = x[:, :-1], x[:, 1:]

        def loss(call):
            return F.xent(F.cast(call("gpt", inputs)), targets)

        return [("model", loss)]


SPECS = {"dcgan": DCGAN, "ddpm": UNetDDPM, "gpt": GPTSpec}


# ---------------------------------------------------------------------------
# One setting of one model: its zoo model, its native loop.


class Clock(keras.callbacks.Callback):
    """From the end of step `skip - 1` (its logs read back, so no step is
    still running on JAX's asynchronous dispatch) to the end of the last
    step (its logs read back). The native loop's clock starts and stops the
    same way. Not `async_safe`: `fit` waits for each step's logs, which at
    these step times costs well under a millisecond a step."""

    def __init__(self, skip, steps):
        super().__init__()
        self.skip, self.last = skip, steps - 1

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.skip - 1:
            float(logs["loss"])
            self.start, self.cpu_start = time.perf_counter(), time.process_time()
        if batch == self.last:
            float(logs["loss"])
            self.end, self.cpu_end = time.perf_counter(), time.process_time()


def zoo_settings(setting):
    if setting == "fastest":
        return {"jit_compile": True}
    return {}


@contextlib.contextmanager
def long_fit_tier(setting):
    """PyTorch's "auto" picks its step by the planned length of a `fit`; the
    short timed fits here run the tier of a long training fit."""
    import zoo.core

    saved = getattr(zoo.core, "TRACE_FIT", None)
    if BACKEND == "torch" and setting == "defaults" and saved is not None:
        zoo.core.TRACE_FIT = 0
    try:
        yield
    finally:
        if saved is not None:
            zoo.core.TRACE_FIT = saved


def native_compiled(setting):
    return setting == "fastest"


class Pair:
    """A compiled zoo model and the native step on a copy of its networks."""

    def __init__(self, spec, setting):
        self.spec, self.setting = spec, setting
        self.model = spec.build()
        self.model.compile(optimizer=spec.compile_arg(), **zoo_settings(setting))
        self.seed_state = np.array(keras.ops.convert_to_numpy(self.model.seed_generator.state.value))
        self.step, self.read = _real_native.make(spec, self.model, spec.build(),
                                                 native_compiled(setting))

    def fit(self, data, callbacks=()):
        return self.model.fit(data, batch_size=self.spec.batch_size, epochs=1, verbose=0,
                              shuffle=False, callbacks=list(callbacks))

    def check_noise(self, steps):
        """The noise the zoo model draws in its first `steps` steps."""
        generator = keras.random.SeedGenerator(0)
        generator.state.assign(self.seed_state)

        def draw():
            noise = []
            for kind, shape, *rest in _real_native.noise_shapes(self.spec, self.spec.batch_size):
                if kind == "normal":
                    noise.append(keras.random.normal(shape, seed=generator))
                else:
                    noise.append(keras.random.randint(shape, 0, rest[0], seed=generator))
            return noise

        if BACKEND == "tensorflow" and zoo_settings(self.setting).get("jit_compile"):
            import tensorflow as tf

            # TensorFlow's stateless random ops pick another algorithm under
            # XLA: the noise of an XLA-compiled step is drawn under XLA too.
            draw = tf.function(draw, jit_compile=True)
        return [[np.asarray(keras.ops.convert_to_numpy(n)) for n in draw()]
                for _ in range(steps)]


def check(pair, data, steps):
    """Zoo and native mean loss over the first `steps` steps, same noise."""
    b = pair.spec.batch_size
    noise = pair.check_noise(steps)
    start = time.perf_counter()
    zoo_loss = pair.fit(data[: steps * b]).history["loss"][-1]
    zoo_first = time.perf_counter() - start
    totals = []
    start = time.perf_counter()
    for s in range(steps):
        totals.append(sum(pair.read(pair.step(data[s * b:(s + 1) * b], noise[s]))))
    native_first = time.perf_counter() - start
    native_loss = float(np.mean(totals))
    return zoo_loss, native_loss, abs(zoo_loss - native_loss) / max(abs(zoo_loss), 1e-6), \
        zoo_first, native_first


def timed(pair, data, args):
    b, n = pair.spec.batch_size, args.steps
    step, read = pair.step, pair.read
    read(step(data[:b]))  # the natively drawn step's own compilation
    zoo_t, native_t, zoo_cpu, native_cpu = [], [], [], []
    for _ in range(args.repeats):
        clock = Clock(args.skip, n)
        pair.fit(data, [clock])
        zoo_t.append((clock.end - clock.start) / (n - args.skip))
        zoo_cpu.append((clock.cpu_end - clock.cpu_start) / (n - args.skip))
        for s in range(n):
            losses = step(data[s * b:(s + 1) * b])
            if s == args.skip - 1:
                read(losses)
                start, cpu_start = time.perf_counter(), time.process_time()
        read(losses)
        native_t.append((time.perf_counter() - start) / (n - args.skip))
        native_cpu.append((time.process_time() - cpu_start) / (n - args.skip))
    zoo_ms, native_ms = 1e3 * statistics.median(zoo_t), 1e3 * statistics.median(native_t)
    return {"zoo_ms": zoo_ms, "native_ms": native_ms, "ratio": zoo_ms / native_ms,
            "cpu_ratio": statistics.median(zoo_cpu) / statistics.median(native_cpu),
            "spread": (1e3 * min(zoo_t), 1e3 * max(zoo_t), 1e3 * min(native_t),
                       1e3 * max(native_t))}


def bench(spec, setting, args):
    data = spec.data(spec.batch_size * args.steps)
    with long_fit_tier(setting):
        pair = Pair(spec, setting)
        zoo_loss, native_loss, rel, zoo_first, native_first = check(pair, data, args.check_steps)
        result = timed(pair, data, args)
    result.update(check=rel, zoo_loss=zoo_loss, native_loss=native_loss,
                  zoo_first=zoo_first, native_first=native_first,
                  params=spec.parameters(pair.model))
    return result


# ---------------------------------------------------------------------------
# Peak memory, one fresh process per run (`_peak_memory.py`).


def child(args):
    """One run in this fresh process: `--child MODEL:SETTING:zoo|native`."""
    name, setting, which = args.child.split(":")
    spec = make_spec(name, args)
    steps = args.skip + 2
    data = spec.data(spec.batch_size * steps)
    b = spec.batch_size
    with long_fit_tier(setting):
        model = spec.build()
        if which == "zoo":
            model.compile(optimizer=spec.compile_arg(), **zoo_settings(setting))
        else:
            step, read = _real_native.make(spec, model, spec.build(), native_compiled(setting))
        start = _peak_memory.reset()
        if which == "zoo":
            model.fit(data, batch_size=b, epochs=1, verbose=0, shuffle=False)
        else:
            for s in range(steps):
                read(step(data[s * b:(s + 1) * b]))
    print("CHILD " + json.dumps(_peak_memory.peak(start)), flush=True)


def memory(name, setting, which, args):
    command = [sys.executable, os.path.abspath(__file__), "--child", f"{name}:{setting}:{which}",
               "--skip", str(args.skip), "--scaling-layers", str(args.scaling_layers),
               "--scaling-length", str(args.scaling_length)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("CHILD "):
            return json.loads(line[6:])
    raise RuntimeError(f"the memory run {name}:{setting}:{which} failed:\n{done.stderr[-3000:]}")


def make_spec(name, args):
    if name.startswith("gpt_w"):
        width = int(name[5:])
        return GPTSpec(layers=args.scaling_layers, width=width, length=args.scaling_length,
                       batch_size=args.scaling_batch)
    return SPECS[name]()


def _memory_cell(mem):
    text = f"{mem['rss_mb']:.0f}"
    if "device_mb" in mem:
        text = f"{mem['device_mb']:.0f} (device), {text}"
    return text


# ---------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help='comma-separated; "" for none')
    parser.add_argument("--settings", default="defaults",
                        help='comma-separated: "defaults", "fastest" (TensorFlow and PyTorch)')
    parser.add_argument("--steps", type=int, default=4, help="steps per timed run")
    parser.add_argument("--skip", type=int, default=1,
                        help="steps before the clock starts (at least 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--check-steps", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help="largest relative difference of the zoo and native mean losses "
                        "(default 1e-3; 5e-3 on PyTorch, whose torch.optim.Adam adds its "
                        "epsilon after the bias correction and Keras's Adam before it)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--scaling", action="store_true",
                        help="also time the GPT at widths 384, 768 and 1536")
    parser.add_argument("--scaling-layers", type=int, default=1)
    parser.add_argument("--scaling-length", type=int, default=64)
    parser.add_argument("--scaling-batch", type=int, default=4)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    _markdown.add_argument(parser)
    args = parser.parse_args(argv)
    if args.skip < 1 or args.steps <= args.skip:
        parser.error("--skip must be at least 1 and below --steps")
    if args.child:
        return child(args)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    for s in settings:
        if s not in ("defaults", "fastest"):
            parser.error(f"--settings: unknown setting {s!r}")
        if s == "fastest" and BACKEND == "jax":
            parser.error('--settings: on JAX the defaults are the fastest (both jax.jit)')
    threads = ""
    if BACKEND == "torch":
        import torch

        threads = f", torch threads {torch.get_num_threads()}"
    print(f"backend {BACKEND}, keras {keras.__version__}, device {device_name()}{threads}", flush=True)
    tables, failures = [], []

    def row(line):
        tables.append(line)
        print(line, flush=True)

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if names:
        row("\n| backend | model | parameters | batch | setting | zoo ms/step | native ms/step "
            "| zoo/native | CPU time zoo/native | first steps zoo / native (s) "
            "| peak memory zoo / native (MB) | loss check |")
        row("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        for setting in settings:
            spec = make_spec(name, args)
            r = bench(spec, setting, args)
            mem = "-"
            if not args.no_memory:
                mem = (f"{_memory_cell(memory(name, setting, 'zoo', args))} / "
                       f"{_memory_cell(memory(name, setting, 'native', args))}")
            row(f"| {BACKEND} | {spec.name} | {r['params'] / 1e6:.2f} M | {spec.batch_size} "
                f"| {setting} | {r['zoo_ms']:.1f} | {r['native_ms']:.1f} | {r['ratio']:.2f} "
                f"| {r['cpu_ratio']:.2f} | {r['zoo_first']:.1f} / {r['native_first']:.1f} "
                f"| {mem} | {r['check']:.1e} |")
            print(f"  spread ms zoo {r['spread'][0]:.1f}-{r['spread'][1]:.1f}, native "
                  f"{r['spread'][2]:.1f}-{r['spread'][3]:.1f}; losses zoo {r['zoo_loss']:.6f} "
                  f"native {r['native_loss']:.6f}", flush=True)
            if not r["check"] <= args.tolerance:
                failures.append(f"{name} ({setting}): zoo loss {r['zoo_loss']:.6g}, native "
                                f"{r['native_loss']:.6g}, relative difference "
                                f"{r['check']:.2e} > --tolerance {args.tolerance:g}")
    if args.scaling:
        row("\n| backend | GPT width | parameters | batch | zoo ms/step | native ms/step "
            "| zoo/native | zoo time / 1x | native time / 1x | loss check |")
        row("|---|---|---|---|---|---|---|---|---|---|")
        base = None
        for width in (384, 768, 1536):
            spec = make_spec(f"gpt_w{width}", args)
            r = bench(spec, "defaults", args)
            base = base or r
            row(f"| {BACKEND} | {width} ({width // 384}x) | {r['params'] / 1e6:.2f} M "
                f"| {spec.batch_size} | {r['zoo_ms']:.1f} | {r['native_ms']:.1f} "
                f"| {r['ratio']:.2f} | {r['zoo_ms'] / base['zoo_ms']:.2f} "
                f"| {r['native_ms'] / base['native_ms']:.2f} | {r['check']:.1e} |")
            if not r["check"] <= args.tolerance:
                failures.append(f"GPT width {width}: relative loss difference {r['check']:.2e}")
    if failures:
        # Timings of steps that do not compute the same thing mean nothing.
        sys.exit("loss check failed:\n" + "\n".join(failures))
    _markdown.write(
        args.markdown, "Step time at real sizes", "\n".join(tables),
        notes=(f"Timed runs of {args.steps} steps, the clock from step {args.skip}, "
               f"{args.repeats} alternating repeats (medians); loss check over the first "
               f"{args.check_steps} steps (tolerance {args.tolerance:g}). Peak memory: growth "
               f"of the peak resident set of a fresh process over its first {args.skip + 2} "
               f"steps, compilation included. Scaling: GPT of {args.scaling_layers} layers, "
               f"context {args.scaling_length}, batch {args.scaling_batch}, heads of 64; "
               f"vocabulary 4096{threads}; device {device_name()}."),
    )


if __name__ == "__main__":
    main()
