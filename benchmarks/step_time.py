"""Training-step time of zoo models against the same math as a plain native loop.

    KERAS_BACKEND=jax python benchmarks/step_time.py
    KERAS_BACKEND=tensorflow python benchmarks/step_time.py --families gan,vae
    KERAS_BACKEND=torch python benchmarks/step_time.py --compile   # + torch.compile
    KERAS_BACKEND=torch python benchmarks/step_time.py --jit-compile true  # compiled zoo step
    KERAS_BACKEND=torch python benchmarks/step_time.py --jit-compile traced  # traced, not compiled

One model per family, small enough for a 2-core CPU: GAN (MLPs, 2-D ring),
VAE (MLPs, the digits as 64-vectors, learned-scale Gaussian), RealNVP (2-D
ring, 4 affine couplings), DDPM (2-D ring, MLP denoiser, v-prediction,
cosine schedule), GPT (2 layers, 64 wide, 4 heads, batches of 16 sequences of 32 tokens).

"zoo" is `model.fit` on NumPy arrays. "native" is the same networks, loss and
Adam written by hand in the backend: a `jax.jit` step (hand-written Keras
Adam, donated buffers), a `tf.function` step (same `jit_compile` as the zoo
model) with a hand-written Adam, an eager PyTorch step with
`torch.optim.Adam` (and `torch.compile` of the step with `--compile`). Both
read the same NumPy batches; the native loop draws its noise natively.
Before timing, both start from the zoo model's initial weights with the same
noise (drawn by `keras.random` from a copy of the model's seed generator and
handed to the native step), and their mean losses over the first steps are
compared: "check" in the table is the relative difference.

Timing: runs alternate (zoo, native, zoo, native, ...) `--repeats` times, each
of `--steps` steps (one epoch of `fit`; on PyTorch "auto" picks the step
by the fit's length: the default 120 steps run the traced step, from
`zoo.core.TRACE_FIT` = 100, and fewer than that the eager one); the clock runs from the start of
step `--skip` to the end of the last step (its logs read back to the host
in `on_train_batch_end`, or a block on the native loop's last loss), so
JAX's asynchronous dispatch is paid inside the timed window. Medians;
beside the wall-clock ratio, the ratio of the process's CPU time (all its
threads), less sensitive to other jobs on a shared machine. "epoch end" is
what `fit` does once per epoch after the last step, outside the per-step
figure: on TensorFlow, Keras makes the next epoch's `tf.data` iterator
there (about 20 ms). "first" is the wall time of the first
step of a fresh model (a one-batch `fit`, tracing and compilation
included). Then sampling at `sample`'s and `generate`'s defaults, after
warm-up calls (on PyTorch "auto" traces a loop's step once its setting has
run more than `zoo.core.LONG_LOOP` steps): DDPM seconds per DDIM step (256
samples) and GPT tokens per second with the cache (batch 1 and 8).
"""

import argparse
import contextlib
import os
import platform
import statistics
import time

import keras
import numpy as np

import _markdown

BACKEND = keras.backend.backend()
FAMILIES = ("gan", "vae", "flow", "ddpm", "gpt")


# ---------------------------------------------------------------------------
# Ops the native math uses, one namespace per backend. Plain functions over
# backend tensors: no Keras anywhere in the native step.


def _jax_ops():
    import jax
    import jax.numpy as jnp

    class F:
        relu = staticmethod(jax.nn.relu)
        silu = staticmethod(jax.nn.silu)
        softplus = staticmethod(jax.nn.softplus)
        tanh, exp, log, sqrt = jnp.tanh, jnp.exp, jnp.log, jnp.sqrt
        sin, cos, square = jnp.sin, jnp.cos, jnp.square
        stop = staticmethod(jax.lax.stop_gradient)

        @staticmethod
        def leaky_relu(x):
            return jax.nn.leaky_relu(x, 0.2)

        @staticmethod
        def mean(x, axis=None):
            return jnp.mean(x, axis=axis)

        @staticmethod
        def sum(x, axis=None):
            return jnp.sum(x, axis=axis)

        @staticmethod
        def const(x, dtype="float32"):
            return jnp.asarray(x, dtype=dtype)

        @staticmethod
        def concat(xs):
            return jnp.concatenate(xs, axis=-1)

        @staticmethod
        def take(table, idx):
            return jnp.take(table, idx, axis=0)

        @staticmethod
        def cast(x):
            return x.astype(jnp.float32)

        @staticmethod
        def layer_norm(x, g, b, eps):
            mean = jnp.mean(x, -1, keepdims=True)
            var = jnp.var(x, -1, keepdims=True)
            return (x - mean) * jax.lax.rsqrt(var + eps) * g + b

        @staticmethod
        def gelu(x):
            return jax.nn.gelu(x, approximate=False)

        @staticmethod
        def attention(q, k, v):  # (batch, length, heads, dim)
            return jax.nn.dot_product_attention(q, k, v, is_causal=True)

        @staticmethod
        def reshape(x, shape):
            return jnp.reshape(x, shape)

        @staticmethod
        def xent(logits, targets):
            logp = jax.nn.log_softmax(logits, axis=-1)
            return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], -1))

    return F


def _tf_ops():
    import tensorflow as tf

    class F:
        relu = staticmethod(tf.nn.relu)
        silu = staticmethod(tf.nn.silu)
        softplus = staticmethod(tf.math.softplus)
        tanh, exp, log, sqrt = tf.tanh, tf.exp, tf.math.log, tf.sqrt
        sin, cos, square = tf.sin, tf.cos, tf.square
        stop = staticmethod(tf.stop_gradient)

        @staticmethod
        def leaky_relu(x):
            return tf.nn.leaky_relu(x, 0.2)

        @staticmethod
        def mean(x, axis=None):
            return tf.reduce_mean(x, axis=axis)

        @staticmethod
        def sum(x, axis=None):
            return tf.reduce_sum(x, axis=axis)

        @staticmethod
        def const(x, dtype="float32"):
            return tf.constant(x, dtype=dtype)

        @staticmethod
        def concat(xs):
            return tf.concat(xs, axis=-1)

        @staticmethod
        def take(table, idx):
            return tf.gather(table, idx, axis=0)

        @staticmethod
        def cast(x):
            return tf.cast(x, tf.float32)

        @staticmethod
        def layer_norm(x, g, b, eps):
            mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
            return (x - mean) * tf.math.rsqrt(var + eps) * g + b

        @staticmethod
        def gelu(x):
            return tf.nn.gelu(x, approximate=False)

        @staticmethod
        def attention(q, k, v):  # (batch, length, heads, dim)
            length, dim = tf.shape(q)[1], q.shape[-1]
            scores = tf.einsum("bqhd,bkhd->bhqk", q, k) * (1.0 / dim**0.5)
            mask = tf.linalg.band_part(tf.ones((length, length), tf.bool), -1, 0)
            scores = tf.where(mask, scores, tf.constant(-1e9, scores.dtype))
            return tf.einsum("bhqk,bkhd->bqhd", tf.nn.softmax(scores, -1), v)

        @staticmethod
        def reshape(x, shape):
            return tf.reshape(x, shape)

        @staticmethod
        def xent(logits, targets):
            return tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
            )

    return F


def _torch_ops():
    import torch
    import torch.nn.functional as tF

    class F:
        relu = staticmethod(torch.relu)
        silu = staticmethod(tF.silu)
        softplus = staticmethod(tF.softplus)
        tanh, exp, log, sqrt = torch.tanh, torch.exp, torch.log, torch.sqrt
        sin, cos, square = torch.sin, torch.cos, torch.square

        @staticmethod
        def stop(x):
            return x.detach()

        @staticmethod
        def leaky_relu(x):
            return tF.leaky_relu(x, 0.2)

        @staticmethod
        def mean(x, axis=None):
            return x.mean() if axis is None else x.mean(axis)

        @staticmethod
        def sum(x, axis=None):
            return x.sum() if axis is None else x.sum(axis)

        @staticmethod
        def const(x, dtype="float32"):
            return torch.as_tensor(np.asarray(x, dtype=dtype), device=DEVICE)

        @staticmethod
        def concat(xs):
            return torch.cat(xs, dim=-1)

        @staticmethod
        def take(table, idx):
            return table[idx]

        @staticmethod
        def cast(x):
            return x.float()

        @staticmethod
        def layer_norm(x, g, b, eps):
            return tF.layer_norm(x, (x.shape[-1],), g, b, eps)

        @staticmethod
        def gelu(x):
            return tF.gelu(x)

        @staticmethod
        def attention(q, k, v):  # (batch, length, heads, dim)
            out = tF.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
            )
            return out.transpose(1, 2)

        @staticmethod
        def reshape(x, shape):
            return x.reshape(shape)

        @staticmethod
        def xent(logits, targets):
            return tF.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long())

    return F


DEVICE = None
if BACKEND == "torch":
    import torch

    DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
F = {"jax": _jax_ops, "tensorflow": _tf_ops, "torch": _torch_ops}[BACKEND]()


def device_name():
    """Where the backend puts the arrays (zoo and native alike): the
    benchmark leaves placement to the backend, and says what it got."""
    if BACKEND == "jax":
        import jax

        return str(jax.devices()[0])
    if BACKEND == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return gpus[0].name if gpus else "CPU"
    return str(DEVICE) + (f" ({torch.cuda.get_device_name()})" if DEVICE.type == "cuda" else "")


# ---------------------------------------------------------------------------
# The families: the zoo model, its data, and its math written out.


def dense(x, p, i, act=None):
    y = x @ p[i] + p[i + 1]
    return y if act is None else act(y)


class Family:
    batch_size = 256
    noise = ()  # ("normal", shape) / ("randint", shape, high), in draw order

    def optimizers(self):
        return {"model": dict(learning_rate=1e-3, beta_1=0.9, beta_2=0.999)}

    def compile_arg(self):
        opts = {p: keras.optimizers.Adam(**kw) for p, kw in self.optimizers().items()}
        return opts["model"] if list(opts) == ["model"] else opts

    def prepare(self, model, data, settings):
        """Anything the model must do before its weights are copied."""


class GANFamily(Family):
    latent = 8
    noise = (("normal", ("B", 8)), ("normal", ("B", 8)))

    def build(self):
        from zoo.gan import GAN

        return GAN((2,), latent_dim=self.latent, hidden_units=(64, 64), ema_momentum=None, seed=0)

    def data(self, n):
        from zoo.data import Ring

        return Ring(std=0.1).sample(n, seed=0).astype("float32")

    def optimizers(self):
        kw = dict(learning_rate=2e-4, beta_1=0.5, beta_2=0.999)
        return {"generator": kw, "discriminator": kw}

    def updates(self, x, noise):
        def gen(p, z):
            h = dense(z, p, 0, F.relu)
            h = dense(h, p, 2, F.relu)
            return dense(h, p, 4)

        def disc(p, x):
            h = dense(x, p, 6, F.leaky_relu)
            h = dense(h, p, 8, F.leaky_relu)
            return F.reshape(dense(h, p, 10), (-1,))

        def d_loss(p):
            fake = F.stop(gen(p, noise[0]))
            return F.mean(F.softplus(-disc(p, x))) + F.mean(F.softplus(disc(p, fake)))

        def g_loss(p):
            return F.mean(F.softplus(-disc(p, gen(p, noise[1]))))

        return [("discriminator", d_loss), ("generator", g_loss)]


class VAEFamily(Family):
    batch_size = 64
    noise = (("normal", ("B", 8)),)

    def build(self):
        from zoo.vae import VAE

        return VAE((64,), latent_dim=8, hidden_units=(128,), seed=0)

    def data(self, n):
        from zoo.data import digits

        images, _ = digits("train")
        x = images.reshape(len(images), 64).astype("float32")
        return x[np.arange(n) % len(x)]

    def updates(self, x, noise):
        from zoo.layers.likelihoods import MIN_SCALE

        log_min = float(np.log(MIN_SCALE))

        def loss(p):
            mean, log_var = _split(dense(dense(x, p, 0, F.silu), p, 2))
            z = mean + F.exp(0.5 * log_var) * noise[0]
            loc, raw = _split(dense(dense(z, p, 4, F.silu), p, 6))
            log_scale = log_min + F.softplus(raw - log_min)
            u = (x - loc) * F.exp(-log_scale)
            log_px = F.sum(-0.5 * u * u - log_scale - 0.5 * np.log(2 * np.pi), -1)
            kl = 0.5 * F.sum(F.square(mean) + F.exp(log_var) - 1.0 - log_var, -1)
            return F.mean(-log_px) + F.mean(kl)

        return [("model", loss)]


def _split(h):
    half = h.shape[-1] // 2
    return h[..., :half], h[..., half:]


class FlowFamily(Family):
    couplings = 4

    def build(self):
        from zoo.flow import RealNVP

        return RealNVP((2,), num_couplings=self.couplings, hidden_units=(64, 64), seed=0)

    def data(self, n):
        return GANFamily.data(self, n)

    def prepare(self, model, data, settings):
        # ActNorm initializes from the first batch; do it before the copy.
        model.fit(data[: self.batch_size], batch_size=self.batch_size, verbose=0)
        model.compile(optimizer=self.compile_arg(), **settings)

    def updates(self, x, noise):
        def loss(p):
            z = (x + p[0]) * F.exp(p[1])
            log_det = F.sum(p[1])
            for i in range(self.couplings):
                keep = np.arange(2) % 2 == i % 2
                mask = F.const(keep.astype("float32")[None])
                k = 2 + 6 * i
                h = dense(dense(dense(z * mask, p, k, F.relu), p, k + 2, F.relu), p, k + 4)
                raw, shift = _split(h)
                log_scale = 2.0 * F.tanh(raw / 2.0) * (1.0 - mask)
                z = z * F.exp(log_scale) + shift * (1.0 - mask)
                log_det = log_det + F.sum(log_scale, -1)
            base = -0.5 * F.sum(F.square(z) + np.log(2 * np.pi), -1)
            return F.mean(-(base + log_det))

        return [("model", loss)]


class DDPMFamily(Family):
    timesteps = 1000
    hidden_units = 64  # also the sinusoidal time embedding's width
    noise = (("randint", ("B",), 1000), ("normal", ("B", 2)))

    def build(self):
        from zoo.diffusion import DDPM

        return DDPM((2,), hidden_units=self.hidden_units, num_blocks=2, ema_decay=None, seed=0)

    def data(self, n):
        return GANFamily.data(self, n)

    def updates(self, x, noise):
        from zoo.diffusion.schedules import alphas_cumprod

        table = F.const(alphas_cumprod("cosine", self.timesteps).astype("float32"))
        t, eps = noise
        half = self.hidden_units // 2
        freqs = F.const(np.exp(-np.log(10000.0) * np.arange(half) / half).astype("float32"))

        def loss(p):
            abar = F.reshape(F.take(table, t), (-1, 1))
            x_t = F.sqrt(abar) * x + F.sqrt(1.0 - abar) * eps
            args = F.reshape(F.cast(t), (-1, 1)) * freqs[None, :]
            cond = F.concat([F.cos(args), F.sin(args)])
            cond = F.silu(dense(dense(cond, p, 0, F.silu), p, 2))
            h = dense(x_t, p, 4)
            for b in range(2):
                k = 6 + 6 * b
                skip = h
                h = F.silu(h + dense(cond, p, k))
                h = dense(dense(h, p, k + 2, F.silu), p, k + 4)
                h = skip + h
            pred = dense(F.silu(h), p, 18)
            target = F.sqrt(abar) * eps - F.sqrt(1.0 - abar) * x
            return F.mean(F.mean(F.square(pred - target), 1))

        return [("model", loss)]


class GPTFamily(Family):
    batch_size = 16
    layers, width, heads, vocab, length = 2, 64, 4, 32, 32

    def build(self):
        from zoo.transformer import GPT

        return GPT(vocab_size=self.vocab, max_length=64, num_layers=self.layers,
                   num_heads=self.heads, hidden_dim=self.width, seed=0)

    def data(self, n):
        return np.random.default_rng(0).integers(0, self.vocab, (n, self.length + 1)).astype("int32")

    def updates(self, x, noise):
        inputs, targets = x[:, :-1], x[:, 1:]
        w, heads, length = self.width, self.heads, self.length

        def loss(p):
            h = F.take(p[0], inputs) + p[1][None, :length]
            for b in range(self.layers):
                k = 2 + 12 * b
                a = F.layer_norm(h, p[k], p[k + 1], 1e-5)
                qkv = F.reshape(a @ p[k + 8] + p[k + 9], (-1, length, 3 * heads, w // heads))
                q, kk, v = qkv[:, :, :heads], qkv[:, :, heads:2 * heads], qkv[:, :, 2 * heads:]
                att = F.reshape(F.attention(q, kk, v), (-1, length, w))
                h = h + (att @ p[k + 10] + p[k + 11])
                m = F.layer_norm(h, p[k + 2], p[k + 3], 1e-5)
                h = h + (F.gelu(m @ p[k + 4] + p[k + 5]) @ p[k + 6] + p[k + 7])
            n = 2 + 12 * self.layers
            h = F.layer_norm(h, p[n], p[n + 1], 1e-5)
            logits = h @ _t(p[0])
            return F.xent(logits, targets)

        return [("model", loss)]


def _t(m):
    return m.T if BACKEND != "tensorflow" else __import__("tensorflow").transpose(m)


SPECS = {"gan": GANFamily, "vae": VAEFamily, "flow": FlowFamily, "ddpm": DDPMFamily,
         "gpt": GPTFamily}


# ---------------------------------------------------------------------------
# Native training loops. `make_native(...)` returns `(step, loss_of)`: `step(x, noise=None)`
# runs one step on a NumPy batch (noise None: drawn natively) and returns
# the losses as backend tensors; `sync(losses)` blocks until they exist.


def noise_shapes(family, batch):
    """`family.noise` with the batch dimension "B" filled in."""
    return [(kind, tuple(batch if d == "B" else d for d in shape), *rest)
            for kind, shape, *rest in family.noise]


def adam_numbers(cfg, t, sqrt):
    """Keras's Adam at step `t`: beta_1, beta_2 and the bias-corrected rate."""
    b1, b2 = cfg["beta_1"], cfg["beta_2"]
    return b1, b2, cfg["learning_rate"] * sqrt(1 - b2**t) / (1 - b1**t)


def jax_adam(cfg, params, grads, state):
    """Keras's Adam as a pure JAX function of `(m, v, t)`."""
    import jax.numpy as jnp

    m, v, t = state
    t = t + 1
    b1, b2, alpha = adam_numbers(cfg, t, jnp.sqrt)
    m = [mi + (g - mi) * (1 - b1) for mi, g in zip(m, grads)]
    v = [vi + (g * g - vi) * (1 - b2) for vi, g in zip(v, grads)]
    params = [p - a * alpha / (jnp.sqrt(b) + 1e-7) for p, a, b in zip(params, m, v)]
    return params, (m, v, t)


def tf_adam(cfg, variables, grads, slot):
    """Keras's Adam on TensorFlow variables, `slot` = `(m, v, t)` variables."""
    import tensorflow as tf

    m, v, t = slot
    t.assign_add(1.0)
    b1, b2, alpha = adam_numbers(cfg, t, tf.sqrt)
    for var, g, mi, vi in zip(variables, grads, m, v):
        mi.assign_add((g - mi) * (1 - b1))
        vi.assign_add((g * g - vi) * (1 - b2))
        var.assign_sub(mi * alpha / (tf.sqrt(vi) + 1e-7))


def tf_step(core, shapes, jit_compile):
    """`step(x, noise=None)` around a native TensorFlow `core(x, noise)`: the
    given noise, or noise drawn by TensorFlow inside the `tf.function`."""
    import tensorflow as tf

    def drawn(x):
        noise = []
        for kind, shape, *rest in shapes:
            if kind == "normal":
                noise.append(tf.random.normal(shape))
            else:
                noise.append(tf.random.uniform(shape, 0, rest[0], dtype=tf.int32))
        return core(x, noise)

    tf_core = tf.function(core, jit_compile=jit_compile)
    tf_drawn = tf.function(drawn, jit_compile=jit_compile)

    def step(x, noise=None):
        x = tf.convert_to_tensor(x)
        if noise is None:
            return tf_drawn(x)
        return tf_core(x, [tf.convert_to_tensor(n) for n in noise])

    return step, lambda losses: [float(v) for v in losses]


def native_jax(family, weights, players, opts, batch):
    import jax
    import jax.numpy as jnp

    shapes = noise_shapes(family, batch)

    adam = jax_adam

    def core(params, state, x, noise):
        params = list(params)
        state = dict(state)
        losses = []
        for player, loss_fn in family.updates(x, noise):
            idx = players[player]

            def of(sub):
                full = list(params)
                for i, s in zip(idx, sub):
                    full[i] = s
                return loss_fn(full)

            loss, grads = jax.value_and_grad(of)([params[i] for i in idx])
            new, state[player] = adam(opts[player], [params[i] for i in idx], grads, state[player])
            for i, s in zip(idx, new):
                params[i] = s
            losses.append(loss)
        return params, state, losses

    def drawn(params, state, x, key):
        keys = jax.random.split(key, len(shapes) + 1)
        noise = []
        for k, (kind, shape, *rest) in zip(keys[1:], shapes):
            if kind == "normal":
                noise.append(jax.random.normal(k, shape))
            else:
                noise.append(jax.random.randint(k, shape, 0, rest[0]))
        params, state, losses = core(params, state, x, noise)
        return params, state, losses, keys[0]

    jit_core = jax.jit(core, donate_argnums=(0, 1))
    jit_drawn = jax.jit(drawn, donate_argnums=(0, 1))
    box = {
        "params": [jnp.asarray(w) for w in weights],
        "state": {p: ([jnp.zeros_like(jnp.asarray(weights[i])) for i in idx],
                      [jnp.zeros_like(jnp.asarray(weights[i])) for i in idx], jnp.float32(0))
                  for p, idx in players.items()},
        "key": jax.random.key(0),
    }

    def step(x, noise=None):
        x = jnp.asarray(x)
        if noise is None:
            box["params"], box["state"], losses, box["key"] = jit_drawn(
                box["params"], box["state"], x, box["key"])
        else:
            box["params"], box["state"], losses = jit_core(
                box["params"], box["state"], x, [jnp.asarray(n) for n in noise])
        return losses

    return step, lambda losses: [float(v) for v in jax.block_until_ready(losses)]


def native_tf(family, weights, players, opts, batch, jit_compile):
    import tensorflow as tf

    shapes = noise_shapes(family, batch)
    params = [tf.Variable(w) for w in weights]
    slots = {p: ([tf.Variable(tf.zeros_like(weights[i])) for i in idx],
                 [tf.Variable(tf.zeros_like(weights[i])) for i in idx],
                 tf.Variable(0.0)) for p, idx in players.items()}

    def core(x, noise):
        losses = []
        for player, loss_fn in family.updates(x, noise):
            idx = players[player]
            variables = [params[i] for i in idx]
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(variables)
                loss = loss_fn(params)
            grads = tape.gradient(loss, variables)
            tf_adam(opts[player], variables, grads, slots[player])
            losses.append(loss)
        return losses

    return tf_step(core, shapes, jit_compile)


def native_torch(family, weights, players, opts, batch, compiled=False):
    import torch

    shapes = noise_shapes(family, batch)
    params = [torch.tensor(np.asarray(w), device=DEVICE, requires_grad=True) for w in weights]
    optims = {p: torch.optim.Adam([params[i] for i in idx], lr=opts[p]["learning_rate"],
                                  betas=(opts[p]["beta_1"], opts[p]["beta_2"]), eps=1e-7)
              for p, idx in players.items()}

    def core(x, noise):
        losses = []
        for player, loss_fn in family.updates(x, noise):
            optim = optims[player]
            optim.zero_grad(set_to_none=True)
            loss = loss_fn(params)
            loss.backward(inputs=[params[i] for i in players[player]])
            optim.step()
            losses.append(loss.detach())
        return losses

    if compiled:
        core = torch.compile(core)

    def step(x, noise=None):
        x = torch.as_tensor(x, device=DEVICE)
        if noise is None:
            noise = []
            for kind, shape, *rest in shapes:
                if kind == "normal":
                    noise.append(torch.randn(shape, device=DEVICE))
                else:
                    noise.append(torch.randint(0, rest[0], shape, device=DEVICE))
        else:
            noise = [torch.as_tensor(n, device=DEVICE) for n in noise]
        return core(x, noise)

    return step, lambda losses: [float(v) for v in losses]


def make_native(family, model, torch_compile=False):
    variables = model.trainable_variables
    weights = [np.array(keras.ops.convert_to_numpy(v.value)) for v in variables]
    position = {id(v): i for i, v in enumerate(variables)}
    players = {p: [position[id(v)] for v in vs] for p, vs in model._player_variables().items()}
    opts = family.optimizers()
    if BACKEND == "jax":
        return native_jax(family, weights, players, opts, family.batch_size)
    if BACKEND == "tensorflow":
        return native_tf(family, weights, players, opts, family.batch_size,
                         bool(model.jit_compile))
    return native_torch(family, weights, players, opts, family.batch_size, torch_compile)


# ---------------------------------------------------------------------------
# Measurement.


class Clock(keras.callbacks.Callback):
    """From the start of batch `skip` to the end of the last batch (its logs
    read back, so the step has finished), then to the end of the epoch."""

    # As Keras's own History and progress bar: `fit` may then hand the batch
    # ends to a worker thread, so it does not wait for each step's logs (a
    # callback that is not async-safe makes JAX block on every step).
    async_safe = True

    def __init__(self, skip, steps):
        super().__init__()
        self.skip = skip
        self.last = steps - 1

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.skip:
            self.start = time.perf_counter()
            self.cpu_start = time.process_time()

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.last:
            float(logs["loss"])
            self.end = time.perf_counter()
            self.cpu_end = time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_end = time.perf_counter()


def build_compiled(family, data, settings):
    model = family.build()
    model.compile(optimizer=family.compile_arg(), **settings)
    family.prepare(model, data, settings)
    return model


def first_step_seconds(family, data, settings):
    model = build_compiled(family, data, settings)
    batch = data[: family.batch_size]
    start = time.perf_counter()
    model.fit(batch, batch_size=family.batch_size, epochs=1, verbose=0, shuffle=False)
    return time.perf_counter() - start


@contextlib.contextmanager
def traced_tier():
    """PyTorch's "auto" runs the traced step at any length (`TRACE_FIT` 0)."""
    import zoo.core

    saved = zoo.core.TRACE_FIT
    zoo.core.TRACE_FIT = 0
    try:
        yield
    finally:
        zoo.core.TRACE_FIT = saved


def check(family, data, settings, steps=5, torch_compile=False):
    """Relative difference of the mean loss over `steps` steps, zoo vs native."""
    model = build_compiled(family, data, settings)
    seed_state = np.array(keras.ops.convert_to_numpy(model.seed_generator.state.value))
    step, read = make_native(family, model, torch_compile)
    x = data[: steps * family.batch_size]
    history = model.fit(x, batch_size=family.batch_size, epochs=1, shuffle=False, verbose=0)
    zoo_loss = history.history["loss"][-1]
    generator = keras.random.SeedGenerator(0)
    generator.state.assign(seed_state)
    totals = []
    for s in range(steps):
        noise = []
        for kind, shape, *rest in noise_shapes(family, family.batch_size):
            if kind == "normal":
                noise.append(keras.random.normal(shape, seed=generator))
            else:
                noise.append(keras.random.randint(shape, 0, rest[0], seed=generator))
        noise = [np.asarray(keras.ops.convert_to_numpy(n)) for n in noise]
        totals.append(sum(read(step(x[s * family.batch_size:(s + 1) * family.batch_size], noise))))
    native_loss = float(np.mean(totals))
    return zoo_loss, native_loss, abs(zoo_loss - native_loss) / max(abs(zoo_loss), 1e-6)


def bench_family(name, args, settings):
    family = SPECS[name]()
    b, n = family.batch_size, args.steps
    data = family.data(b * n)
    zoo_first = first_step_seconds(family, data, settings)
    zoo_loss, native_loss, rel = check(family, data, settings, torch_compile=args.compile)

    model = build_compiled(family, data, settings)
    t0 = time.perf_counter()
    step, read = make_native(family, model, args.compile)
    read(step(data[:b]))
    native_first = time.perf_counter() - t0
    model.fit(data[: b * 10], batch_size=b, epochs=1, verbose=0, shuffle=False)  # warm-up
    for s in range(10):
        read(step(data[s * b:(s + 1) * b]))

    zoo_times, native_times, zoo_cpu, native_cpu, epoch_ends = [], [], [], [], []
    for _ in range(args.repeats):
        clock = Clock(args.skip, n)
        model.fit(data, batch_size=b, epochs=1, verbose=0, shuffle=False, callbacks=[clock])
        zoo_times.append((clock.end - clock.start) / (n - args.skip))
        zoo_cpu.append((clock.cpu_end - clock.cpu_start) / (n - args.skip))
        epoch_ends.append(clock.epoch_end - clock.end)
        start = None
        for s in range(n):
            if s == args.skip:
                start, cpu_start = time.perf_counter(), time.process_time()
            losses = step(data[s * b:(s + 1) * b])
        read(losses)
        native_times.append((time.perf_counter() - start) / (n - args.skip))
        native_cpu.append((time.process_time() - cpu_start) / (n - args.skip))
    zoo_ms = 1e3 * statistics.median(zoo_times)
    native_ms = 1e3 * statistics.median(native_times)
    return {
        "family": name, "batch": b, "zoo_ms": zoo_ms, "native_ms": native_ms,
        "ratio": zoo_ms / native_ms,
        "cpu_ratio": statistics.median(zoo_cpu) / statistics.median(native_cpu),
        "zoo_first_s": zoo_first, "native_first_s": native_first,
        "epoch_end_ms": 1e3 * statistics.median(epoch_ends),
        "check": rel, "zoo_loss": zoo_loss, "native_loss": native_loss,
        "zoo_spread": (1e3 * min(zoo_times), 1e3 * max(zoo_times)),
        "native_spread": (1e3 * min(native_times), 1e3 * max(native_times)),
    }


def sampling(args):
    from zoo.core import LONG_LOOP
    from zoo.diffusion import DDPM
    from zoo.transformer import GPT

    loops = {"auto": "auto", "true": True, "false": False}[args.sampling_jit_compile]
    rows = []
    model = DDPM((2,), hidden_units=64, num_blocks=2, ema_decay=None, seed=0)
    model.compile()
    # Warm-up calls until "auto" reaches its steady tier (on PyTorch the
    # step traced once runs of a setting pass LONG_LOOP steps).
    for _ in range(LONG_LOOP // 20 + 1):
        model.sample(256, steps=20, sampler="ddim", seed=1, verbose=False, jit_compile=loops)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        model.sample(256, steps=20, sampler="ddim", seed=1, verbose=False, jit_compile=loops)
        times.append((time.perf_counter() - start) / 20)
    rows.append(("DDPM (2-D, MLP) DDIM, 256 samples", f"{1e3 * statistics.median(times):.2f} ms/step"))
    g = GPTFamily()
    gpt = g.build()
    gpt.compile()
    for batch in (1, 8):
        prompt = np.random.default_rng(0).integers(0, g.vocab, (batch, 8)).astype("int32")
        for _ in range(LONG_LOOP // 48 + 1):
            gpt.generate(prompt, 48, seed=0, jit_compile=loops)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            gpt.generate(prompt, 48, seed=0, jit_compile=loops)
            times.append(time.perf_counter() - start)
        rows.append((f"GPT (2x64) cached generation, batch {batch}, 48 tokens",
                     f"{batch * 48 / statistics.median(times):.0f} tokens/s"))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help="comma-separated; \"\" times the sampling only")
    parser.add_argument("--steps", type=int, default=120,
                        help="steps per timed fit (PyTorch \"auto\" traces fits of TRACE_FIT = 100 or more)")
    parser.add_argument("--skip", type=int, default=10, help="steps before the clock starts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="torch: torch.compile the native step")
    parser.add_argument("--steps-per-execution", type=int, default=None)
    parser.add_argument("--jit-compile", default=None, choices=["auto", "true", "false", "traced"],
                        help="the zoo model's compile(jit_compile=...); on torch, true is "
                        "the core's Inductor-compiled training step, and traced is "
                        '"auto" with the traced step at any length (TRACE_FIT 0)')
    parser.add_argument("--no-sampling", action="store_true")
    parser.add_argument("--sampling-jit-compile", default="auto", choices=["auto", "true", "false"],
                        help="the jit_compile of `sample` and `generate`")
    _markdown.add_argument(parser)
    args = parser.parse_args(argv)
    settings = {}
    if args.steps_per_execution:
        settings["steps_per_execution"] = args.steps_per_execution
    if args.jit_compile == "traced":
        if BACKEND != "torch":
            parser.error("--jit-compile traced is PyTorch's tier of \"auto\"")
        settings["jit_compile"] = "auto"
    elif args.jit_compile:
        settings["jit_compile"] = {"auto": "auto", "true": True, "false": False}[args.jit_compile]

    threads = ""
    if BACKEND == "torch":
        threads = f", torch threads {torch.get_num_threads()}"
    print(f"backend {BACKEND}, keras {keras.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs{threads}, device {device_name()}, "
          f"settings {settings or 'defaults'}", flush=True)
    tables = []

    def row(line):
        tables.append(line)
        print(line, flush=True)

    row("\n| backend | family | batch | zoo ms/step | native ms/step | zoo/native "
        "| CPU time zoo/native | epoch end (ms) | first step zoo / native (s) | loss check |")
    row("|---|---|---|---|---|---|---|---|---|---|")
    for name in [f for f in args.families.split(",") if f.strip()]:  # "": sampling only
        with traced_tier() if args.jit_compile == "traced" else contextlib.nullcontext():
            r = bench_family(name.strip(), args, settings)
        row(f"| {BACKEND} | {r['family']} | {r['batch']} | {r['zoo_ms']:.2f} "
            f"| {r['native_ms']:.2f} | {r['ratio']:.2f} | {r['cpu_ratio']:.2f} "
            f"| {r['epoch_end_ms']:.1f} | {r['zoo_first_s']:.2f} / {r['native_first_s']:.2f} "
            f"| {r['check']:.1e} |")
        if os.environ.get("STEP_TIME_VERBOSE"):
            print(r, flush=True)
    if not args.no_sampling:
        row("\n| backend | sampling | speed |\n|---|---|---|")
        for what, speed in sampling(args):
            row(f"| {BACKEND} | {what} | {speed} |")
    if not args.families.strip():
        tables = tables[2:]  # no training rows: only the sampling table
    _markdown.write(
        args.markdown, "Step time against native loops", "\n".join(tables),
        notes=f"Settings: {settings or 'the defaults'}{threads}; device {device_name()}.",
    )


if __name__ == "__main__":
    main()
