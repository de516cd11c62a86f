"""The native training loops of `real_sizes.py`: the zoo model's own Keras
networks (a second copy, same initial weights), the same loss written by
hand with the backend's ops, the backend's own gradients and an Adam.

- JAX: one `jax.jit` step (donated buffers) over `stateless_call` of each
  network, `jax.value_and_grad`, and Keras's Adam update written out.
- TensorFlow: a `tf.function` step (`jit_compile` as asked) with a
  `tf.GradientTape` per player and the same hand-written Adam on
  `tf.Variable` slots.
- PyTorch: an eager step, `loss.backward()` and `torch.optim.Adam` over the
  networks' `torch.nn.Parameter`s; `torch.compile` of that step for the
  fastest setting.

`make(spec, zoo_model, native_model, compiled)` returns `(step, read)`:
`step(x, noise=None)` runs one step on a NumPy batch (noise None: drawn
natively inside the step) and returns the players' losses as backend
tensors; `read(losses)` waits for them and returns Python floats.
"""

import keras

from step_time import jax_adam, noise_shapes, tf_adam, tf_step

BACKEND = keras.backend.backend()


def native_jax(spec, nets, players, batch):
    import jax
    import jax.numpy as jnp

    shapes = noise_shapes(spec, batch)
    opts = spec.optimizers()

    adam = jax_adam

    def core(tv, ntv, opt, x, noise):
        tv, ntv, opt = dict(tv), dict(ntv), dict(opt)
        losses = []
        for player, loss_fn in spec.updates(x, noise):
            names = players[player]

            def of(own, ntv=ntv, loss_fn=loss_fn, names=names):
                params = {**tv, **dict(zip(names, own))}
                box = dict(ntv)

                def call(name, *args):
                    out, box[name] = nets[name].stateless_call(
                        params[name], box[name], *args, training=True)
                    return out

                return loss_fn(call), box

            own = [tv[n] for n in names]
            (loss, ntv), grads = jax.value_and_grad(of, has_aux=True)(own)
            flat = [p for ps in own for p in ps]
            new, opt[player] = adam(opts[player], flat, [g for gs in grads for g in gs],
                                    opt[player])
            for n in names:
                tv[n], new = new[:len(tv[n])], new[len(tv[n]):]
            losses.append(loss)
        return tv, ntv, opt, losses

    def drawn(tv, ntv, opt, x, key):
        keys = jax.random.split(key, len(shapes) + 1)
        noise = []
        for k, (kind, shape, *rest) in zip(keys[1:], shapes):
            if kind == "normal":
                noise.append(jax.random.normal(k, shape))
            else:
                noise.append(jax.random.randint(k, shape, 0, rest[0], dtype=jnp.int32))
        tv, ntv, opt, losses = core(tv, ntv, opt, x, noise)
        return tv, ntv, opt, losses, keys[0]

    jit_core = jax.jit(core, donate_argnums=(0, 1, 2))
    jit_drawn = jax.jit(drawn, donate_argnums=(0, 1, 2))
    box = {
        "tv": {n: [jnp.array(v.value) for v in net.trainable_variables] for n, net in nets.items()},
        "ntv": {n: [jnp.array(v.value) for v in net.non_trainable_variables]
                for n, net in nets.items()},
        "key": jax.random.key(0),
    }
    box["opt"] = {}
    for player, names in players.items():
        zeros = [jnp.zeros_like(p) for n in names for p in box["tv"][n]]
        box["opt"][player] = (zeros, [jnp.zeros_like(z) for z in zeros], jnp.float32(0))

    def step(x, noise=None):
        x = jnp.asarray(x)
        if noise is None:
            box["tv"], box["ntv"], box["opt"], losses, box["key"] = jit_drawn(
                box["tv"], box["ntv"], box["opt"], x, box["key"])
        else:
            box["tv"], box["ntv"], box["opt"], losses = jit_core(
                box["tv"], box["ntv"], box["opt"], x, [jnp.asarray(n) for n in noise])
        return losses

    return step, lambda losses: [float(v) for v in jax.block_until_ready(losses)]


def native_tf(spec, nets, players, batch, jit_compile):
    import tensorflow as tf

    shapes = noise_shapes(spec, batch)
    opts = spec.optimizers()
    variables = {p: [v.value for n in names for v in nets[n].trainable_variables]
                 for p, names in players.items()}
    slots = {p: ([tf.Variable(tf.zeros_like(v)) for v in vs],
                 [tf.Variable(tf.zeros_like(v)) for v in vs], tf.Variable(0.0))
             for p, vs in variables.items()}

    def call(name, *args):
        return nets[name](*args, training=True)

    def core(x, noise):
        losses = []
        for player, loss_fn in spec.updates(x, noise):
            own = variables[player]
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(own)
                loss = loss_fn(call)
            grads = tape.gradient(loss, own)
            tf_adam(opts[player], own, grads, slots[player])
            losses.append(loss)
        return losses

    return tf_step(core, shapes, jit_compile)


def native_torch(spec, nets, players, batch, compiled):
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shapes = noise_shapes(spec, batch)
    opts = spec.optimizers()
    params = {p: [v.value for n in names for v in nets[n].trainable_variables]
              for p, names in players.items()}
    optims = {p: torch.optim.Adam(ps, lr=opts[p]["learning_rate"],
                                  betas=(opts[p]["beta_1"], opts[p]["beta_2"]), eps=1e-7)
              for p, ps in params.items()}

    def call(name, *args):
        return nets[name](*args, training=True)

    def core(x, noise):
        losses = []
        for player, loss_fn in spec.updates(x, noise):
            optims[player].zero_grad(set_to_none=True)
            loss = loss_fn(call)
            loss.backward(inputs=params[player])
            optims[player].step()
            losses.append(loss.detach())
        return losses

    if compiled:
        core = torch.compile(core)

    def step(x, noise=None):
        x = torch.as_tensor(x, device=device)
        if noise is None:
            noise = []
            for kind, shape, *rest in shapes:
                if kind == "normal":
                    noise.append(torch.randn(shape, device=device))
                else:
                    noise.append(torch.randint(0, rest[0], shape, device=device,
                                               dtype=torch.int32))
        else:
            noise = [torch.as_tensor(n, device=device) for n in noise]
        return core(x, noise)

    return step, lambda losses: [float(v) for v in losses]


def make(spec, zoo_model, native_model, compiled=False):
    """The native step on `native_model`'s networks, from `zoo_model`'s
    current weights (every variable of the networks, moving statistics
    included, is copied)."""
    nets = spec.networks(native_model)
    for name, net in spec.networks(zoo_model).items():
        for mine, theirs in zip(nets[name].variables, net.variables, strict=True):
            mine.assign(theirs)
    players = spec.players
    if BACKEND == "jax":
        return native_jax(spec, nets, players, spec.batch_size)
    if BACKEND == "tensorflow":
        return native_tf(spec, nets, players, spec.batch_size, compiled)
    return native_torch(spec, nets, players, spec.batch_size, compiled)
