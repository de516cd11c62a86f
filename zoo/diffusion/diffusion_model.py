"""`DiffusionModel`: what DDPM and flow matching share.

Denoiser construction (MLP, U-Net, DiT or your own), the exponential moving
average of its weights, class or text conditioning with classifier-free
guidance (text: `zoo.diffusion.text_conditioning`), label and caption checks, the compiled sampling loop (one compiled step that every
sampler and step count reuses) and likelihoods by the probability-flow ODE.
A subclass says how it trains, what its sampler steps compute, and what its
ODE is.
"""

import contextlib
import math
import numbers

import keras
import numpy as np
from keras import ops

from zoo.core import LONG_LOOP, GenerativeModel, compile_step, compiles_steps, validators
from zoo.diffusion import text_conditioning as text
from zoo.diffusion.ode_likelihood import ODELikelihood
from zoo.diffusion.text_conditioning import TextConditioning
from zoo.layers.denoisers import mlp_denoiser, unet_denoiser
from zoo.layers.networks import check_data_shape
from zoo.layers.dit import DiT

DENOISERS = ("mlp", "unet", "dit")
# Runs of more than `LONG_LOOP` steps are cut into this many compiled chunks,
# with a progress bar.
_CHUNKS = 10


def check_int(value, name, minimum=1):
    """`value` as an int >= `minimum`, or a ValueError naming `name`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (numbers.Integral, np.integer))
        or value < minimum
    ):
        raise ValueError(f"`{name}` must be an integer >= {minimum}; received {name}={value!r}.")
    return int(value)


def check_number(value, name, low=None, high=None, low_open=False):
    """`value` as a finite float in range, or a ValueError naming `name`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (numbers.Real, np.floating, np.integer))
        or not math.isfinite(value)
        or (low is not None and (value <= low if low_open else value < low))
        or (high is not None and value > high)
    ):
        bounds = " ".join(
            b for b in (f"{'>' if low_open else '>='} {low}" if low is not None else "",
                        f"<= {high}" if high is not None else "") if b
        )
        raise ValueError(
            f"`{name}` must be a finite number{' ' + bounds if bounds else ''}; "
            f"received {name}={value!r}."
        )
    return float(value)


class DiffusionModel(TextConditioning, ODELikelihood, GenerativeModel):
    """Base class of `DDPM` and `FlowMatching` (see those for the arguments).

    Subclasses implement `train_step_logic`, `sample`, and for `log_prob`
    `_ode_grid`, `_ode_drift`, `_ode_entry` and `_ode_exit`.
    """

    time_dtype = "int32"

    def __init__(
        self,
        data_shape,
        *,
        num_classes=None,
        label_dropout=0.1,
        denoiser=None,
        denoiser_options=None,
        ema_decay=0.999,
        hidden_units=256,
        num_blocks=3,
        channels=32,
        channel_multipliers=(1, 2),
        num_res_blocks=1,
        text_encoder=None,
        train_text_encoder=True,
        text_dropout=0.1,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        data_shape = check_data_shape(data_shape)
        if num_classes is not None:
            num_classes = check_int(num_classes, "num_classes")
        label_dropout = check_number(label_dropout, "label_dropout", 0.0)
        if label_dropout >= 1.0:
            raise ValueError(f"`label_dropout` must be in [0, 1); received {label_dropout}.")
        text_dropout = check_number(text_dropout, "text_dropout", 0.0)
        if text_dropout >= 1.0:
            raise ValueError(f"`text_dropout` must be in [0, 1); received {text_dropout}.")
        if isinstance(text_encoder, dict):
            text_encoder = keras.saving.deserialize_keras_object(text_encoder)
        self.text_encoder = text.check_text_encoder(text_encoder, num_classes, data_shape)
        self.train_text_encoder = bool(train_text_encoder)
        self.text_dropout = text_dropout
        if self.text_encoder is not None:
            # Frozen: its weights leave the "model" player (and the average).
            self.text_encoder.trainable = self.train_text_encoder
        if ema_decay is not None and not (
            isinstance(ema_decay, numbers.Real) and 0.0 < ema_decay < 1.0
        ):
            raise ValueError(f"`ema_decay` must be in (0, 1) or None; received {ema_decay}.")
        if denoiser_options is not None and not isinstance(denoiser_options, dict):
            raise ValueError(
                f"`denoiser_options` must be a dict or None; received {denoiser_options!r}."
            )
        self.data_shape = data_shape
        self.num_classes = num_classes
        self.label_dropout = label_dropout
        self.ema_decay = ema_decay
        self.hidden_units = hidden_units
        self.num_blocks = num_blocks
        self.channels = channels
        self.channel_multipliers = tuple(channel_multipliers)
        self.num_res_blocks = num_res_blocks
        self.denoiser_options = dict(denoiser_options or {})
        self._custom_denoiser = not (denoiser is None or isinstance(denoiser, str))
        self._denoiser_choice = None if self._custom_denoiser else denoiser
        self.denoiser = self._build_denoiser(denoiser, seed)
        if self.text_encoder is not None:
            self.null_text = self.add_weight(
                shape=(self.text_encoder.hidden_dim,), name="null_text",
                initializer=keras.initializers.RandomNormal(
                    stddev=1.0, seed=None if seed is None else seed + 7919))
        self.ema = []
        if ema_decay is not None:
            for i, v in enumerate(self._averaged_variables()):
                average = self.add_weight(shape=v.shape, initializer="zeros",
                                          trainable=False, name=f"ema_{i}")
                # A copy: sharing one buffer breaks JAX's donation of the state.
                average.assign(ops.convert_to_numpy(v))
                self.ema.append(average)
        self._samplers = {}
        self._steps = {}
        self._sampled_steps = {}  # sampler steps run per setting ("auto" traces on PyTorch)

    def _build_denoiser(self, denoiser, seed):
        if denoiser is not None and not isinstance(denoiser, str):
            if not isinstance(denoiser, keras.layers.Layer):
                raise ValueError(
                    f"`denoiser` must be one of {DENOISERS}, None or a Keras model; "
                    f"received {denoiser!r}."
                )
            return denoiser
        name = denoiser or ("mlp" if len(self.data_shape) == 1 else "unet")
        if name not in DENOISERS:
            raise ValueError(f"`denoiser` must be one of {DENOISERS}, None or a Keras model; "
                             f"received {denoiser!r}.")
        common = dict(num_classes=self.num_classes, seed=seed)
        if self.text_encoder is not None:
            if name == "mlp":
                raise ValueError('Text conditioning needs a U-Net or DiT denoiser; received '
                                 'denoiser="mlp".')
            common["context_dim"] = self.text_encoder.hidden_dim
        if name == "dit":
            if len(self.data_shape) != 3:
                raise ValueError('`denoiser="dit"` needs image data (height, width, '
                                 f"channels); data_shape={self.data_shape}.")
            return DiT(self.data_shape, **{**common, **self.denoiser_options})
        options = dict(time_dtype=self.time_dtype, **common)
        if name == "mlp":
            if len(self.data_shape) != 1:
                raise ValueError(f'`denoiser="mlp"` needs vector data (d,); '
                                 f"data_shape={self.data_shape}.")
            options.update(hidden_units=self.hidden_units, num_blocks=self.num_blocks)
            return mlp_denoiser(self.data_shape, **{**options, **self.denoiser_options})
        if len(self.data_shape) != 3:
            raise ValueError(f'`denoiser="unet"` needs image data (height, width, channels); '
                             f"data_shape={self.data_shape}.")
        options.update(channels=self.channels, channel_multipliers=self.channel_multipliers,
                       num_res_blocks=self.num_res_blocks)
        return unet_denoiser(self.data_shape, **{**options, **self.denoiser_options})

    def call(self, inputs, training=False):
        return self.denoiser(inputs, training=training)

    def _averaged_variables(self):
        """What the moving average covers: the denoiser, then (text models)
        the jointly trained text encoder and the null token."""
        variables = list(self.denoiser.trainable_variables)
        if self.text_encoder is not None:
            variables += list(self.text_encoder.trainable_variables) + [self.null_text]
        return variables

    def _predict(self, inputs, training=False):
        # float32 whatever the dtype policy: losses and sampler updates mix
        # the prediction with float32 data and coefficients.
        return ops.cast(self.denoiser(inputs, training=training), "float32")

    # ------------------------------------------------------------------
    # Labels, conditioning and EMA.

    def validate_labels(self, y):
        """`fit` and `evaluate` refuse labels that are not classes in
        `[0, num_classes)`, and captions (token ids) that do not suit the
        text encoder, before training (see `GenerativeModel`)."""
        if self.text_encoder is not None:
            text.check_captions(y, self.text_encoder.context_length, type(self).__name__)
        elif self.num_classes and y is not None:
            validators.check_labels(y, self.num_classes, name="y")

    def _training_labels(self, y, n):
        if not self.num_classes:
            return None
        if y is None:
            raise ValueError(
                f"This {type(self).__name__} is class-conditional (num_classes="
                f"{self.num_classes}): train it with fit(x, labels)."
            )
        labels = ops.reshape(ops.cast(y, "int32"), (-1,))
        if self.label_dropout:
            drop = keras.random.uniform((n,), seed=self.seed_generator) < self.label_dropout
            labels = ops.where(drop, self.num_classes, labels)
        return labels

    def _update_ema(self, iterations=None):
        """One step of the moving average; `iterations`: the count of the
        optimizer that trains the denoiser (default: this model's; a model
        wrapping this one, as `LatentDiffusion` does, passes its own)."""
        if not self.ema:
            return
        if iterations is None:
            iterations = self.optimizer.iterations
        # Warm-up (as in common EMA implementations): early averages would
        # otherwise be dominated by the random initial weights.
        updates = ops.cast(iterations, "float32")
        decay = ops.minimum(self.ema_decay, (1.0 + updates) / (10.0 + updates))
        for average, v in zip(self.ema, self._averaged_variables()):
            average.assign(decay * average + (1.0 - decay) * ops.cast(v, average.dtype))

    @contextlib.contextmanager
    def ema_weights(self):
        """Swaps the averaged weights into the denoiser inside the block."""
        if not self.ema:
            yield
            return
        variables = self._averaged_variables()
        saved = [v.numpy() for v in variables]
        for v, average in zip(variables, self.ema):
            v.assign(average)
        try:
            yield
        finally:
            for v, value in zip(variables, saved):
                v.assign(value)

    def _guided_prediction(self, x, t, labels, guidance):
        """The denoiser's prediction, guided when `guidance` is given.
        `labels`: class labels, or `(context, mask)` text tokens for a text
        model; None: the null condition."""
        if self.text_encoder is not None:
            n, length = ops.shape(x)[0], self.text_encoder.context_length
            null = text.null_context(self.null_text, n, length)
            condition = list(null if labels is None else labels)
            if guidance is None:
                return self._predict([x, t, *condition])
            pairs = [ops.concatenate([c, ops.cast(u, c.dtype)]) for c, u in zip(condition, null)]
            both = self._predict([ops.concatenate([x, x]), ops.concatenate([t, t]), *pairs])
            return both[n:] + guidance * (both[:n] - both[n:])
        if not self.num_classes:
            return self._predict([x, t])
        if guidance is None:
            return self._predict([x, t, labels])
        null = ops.full_like(labels, self.num_classes)
        both = self._predict(
            [ops.concatenate([x, x]), ops.concatenate([t, t]), ops.concatenate([labels, null])]
        )
        n = ops.shape(x)[0]
        cond, uncond = both[:n], both[n:]
        return uncond + guidance * (cond - uncond)

    def _check_labels(self, labels, guidance_scale, num_samples):
        if self.text_encoder is not None and labels is not None:
            raise ValueError(f"This {type(self).__name__} is text-conditional: it takes "
                             "prompts, not `labels`.")
        if guidance_scale is not None:
            if not self.num_classes:
                raise ValueError(
                    "`guidance_scale` needs a class-conditional model (or a text-conditional "
                    "one); this "
                    f"{type(self).__name__} is unconditional (num_classes=None)."
                )
            text.check_guidance(guidance_scale)
        if labels is None:
            if guidance_scale is not None:
                raise ValueError("`guidance_scale` needs `labels` to guide towards.")
            return None if not self.num_classes else np.full(
                num_samples, self.num_classes, np.int32
            )
        if not self.num_classes:
            raise ValueError(
                f"`labels` given, but this {type(self).__name__} is unconditional "
                "(num_classes=None)."
            )
        labels = np.asarray(labels)
        if labels.ndim == 0:
            labels = np.full(num_samples, labels)
        if labels.shape != (num_samples,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"`labels` must be an int or {num_samples} ints; received "
                f"shape {labels.shape}, dtype {labels.dtype}."
            )
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(
                f"`labels` must be in [0, {self.num_classes - 1}]; received values "
                f"from {labels.min()} to {labels.max()}."
            )
        return labels.astype(np.int32)

    # ------------------------------------------------------------------
    # The compiled sampling loop.

    def _run_sampler(self, *, name, make_step, carry, consts, num_steps, num_samples,
                     noise, seed, jit_compile, return_trajectory, verbose, use_ema):
        """Runs `num_steps` steps of `step(i, state)` from `make_step()`,
        `state = (carry, z, consts)` with fresh standard-normal `z` shaped
        like `carry[0]` when `noise`, else `(carry, consts)`; `consts[-1]`
        is the offset of the chunk (added to `i` by the step). Returns
        `carry[0]` as float32 NumPy (and the trajectory). One compiled step
        per `name` setting serves every step count: tables are padded."""
        setting = (name, num_samples)
        steps_before = self._sampled_steps.get(setting, 0)
        self._sampled_steps[setting] = steps_before + num_steps
        compile_steps = compiles_steps(
            jit_compile, num_steps, steps_before, (setting, True) in self._steps
        )
        long_run = num_steps > LONG_LOOP
        chunk = num_steps if not (long_run or return_trajectory) else math.ceil(
            num_steps / _CHUNKS
        )
        show = long_run if verbose == "auto" else bool(verbose)
        progress = keras.utils.Progbar(num_steps, unit_name="step") if show else None
        trajectory = [ops.convert_to_numpy(carry[0])]
        seed = int(np.random.randint(1, 2**31 - 1)) if seed is None else seed
        context = self.ema_weights() if use_ema else contextlib.nullcontext()
        with context:
            for start in range(0, num_steps, chunk):
                length = min(chunk, num_steps - start)
                loop = self._sampling_loop(setting, length, make_step, noise, len(carry),
                                           jit_compile, compile_steps)
                carry = loop(*carry, *consts, ops.convert_to_tensor(start, "int32"),
                             seed=seed + start)
                if return_trajectory:
                    trajectory.append(ops.convert_to_numpy(carry[0]))
                if progress is not None:
                    progress.update(start + length)
        samples = ops.convert_to_numpy(carry[0]).astype(np.float32)
        if return_trajectory:
            return samples, np.stack(trajectory).astype(np.float32)
        return samples

    def _sampling_loop(self, setting, length, make_step, noise, num_carry, jit_compile,
                       compile_steps):
        # Every shape is in the key, so no compiled function ever sees two
        # (TensorFlow would relax them to unknown ones).
        key = (setting, length, jit_compile, compile_steps)
        if key not in self._samplers:
            def run(*args):
                step_key = (setting, compile_steps)
                if step_key not in self._steps:
                    self._steps[step_key] = compile_step(self, make_step(),
                                                         jit_compile=compile_steps)
                step = self._steps[step_key]
                carry, consts = tuple(args[:num_carry]), tuple(args[num_carry:])

                def body(i, carry):
                    if not noise:
                        return step(i, (carry, consts))
                    # Drawn outside the compiled step (see `compile_step`);
                    # `fori_loop` gives each step its own.
                    z = keras.random.normal(ops.shape(carry[0]), seed=self.sampling_seed)
                    return step(i, (carry, z, consts))

                return self.fori_loop(0, length, body, carry)

            # "auto": a plain `tf.function` on TensorFlow, where XLA ran the
            # U-Net's steps slower on CPU (26 against 20 ms).
            self._samplers[key] = self.compile_function(
                run, jit_compile=None if jit_compile == "auto" else jit_compile
            )
        return self._samplers[key]

    def _initial_noise(self, num_samples, seed):
        num_samples = check_int(num_samples, "num_samples")
        if seed is not None:
            check_int(seed, "seed", minimum=0)
        seed = int(np.random.randint(1, 2**31 - 1)) if seed is None else int(seed)
        return num_samples, seed, keras.random.normal((num_samples,) + self.data_shape, seed=seed)

    # ------------------------------------------------------------------

    def get_config(self):
        return {
            **super().get_config(),
            "data_shape": self.data_shape,
            "num_classes": self.num_classes,
            "label_dropout": self.label_dropout,
            "ema_decay": self.ema_decay,
            "hidden_units": self.hidden_units,
            "num_blocks": self.num_blocks,
            "channels": self.channels,
            "channel_multipliers": self.channel_multipliers,
            "num_res_blocks": self.num_res_blocks,
            "text_encoder": (None if self.text_encoder is None
                             else keras.saving.serialize_keras_object(self.text_encoder)),
            "train_text_encoder": self.train_text_encoder,
            "text_dropout": self.text_dropout,
            "denoiser_options": self.denoiser_options or None,
            "denoiser": (
                keras.saving.serialize_keras_object(self.denoiser)
                if self._custom_denoiser else self._denoiser_choice
            ),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("denoiser"), dict):
            config["denoiser"] = keras.saving.deserialize_keras_object(config["denoiser"])
        return cls(**config)
