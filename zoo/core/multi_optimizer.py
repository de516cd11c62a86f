"""One Keras optimizer per player, presented to Keras as a single optimizer."""

import keras


@keras.saving.register_keras_serializable(package="zoo")
class MultiOptimizer(keras.optimizers.Optimizer):
    """Holds one optimizer per player of a `GenerativeModel`.

    Keras trainers know one `model.optimizer`: on JAX they thread exactly
    `model.optimizer.variables` through the compiled step, and `model.save`
    stores exactly what `model.optimizer` owns. A GAN has two optimizers, so
    this object owns both of them: `variables` lists its own step counter
    followed by every player's optimizer variables, and saving writes each
    player's optimizer as a child. Updates never go through this object; the
    core calls each player's own optimizer (`apply` or `stateless_apply`), so
    everything those optimizers do (clipping, EMA, gradient accumulation,
    loss scaling) keeps working.

    `iterations` counts training steps (batches), whatever the number of
    updates per step; each player's optimizer counts its own updates.
    `optimizers` is the list of the players' optimizers, each renamed after
    its player: Keras's `LearningRateScheduler` and `ReduceLROnPlateau`
    already walk such a list, so they adjust every player and log
    `learning_rate_<player>`.

    Example:

    ```python
    opt = MultiOptimizer({
        "generator": keras.optimizers.Adam(2e-4, beta_1=0.5),
        "discriminator": keras.optimizers.Adam(2e-4, beta_1=0.5),
    })
    opt["generator"].learning_rate  # 2e-4
    ```
    """

    def __init__(self, optimizers, name="multi_optimizer"):
        if not isinstance(optimizers, dict) or not optimizers:
            raise ValueError(
                "`optimizers` must be a non-empty dict mapping player names "
                f"to optimizers. Received: optimizers={optimizers!r}"
            )
        resolved = {}
        for player, optimizer in optimizers.items():
            if isinstance(optimizer, MultiOptimizer):
                raise ValueError(
                    f"The optimizer for player {player!r} is itself a "
                    "MultiOptimizer; give each player a plain optimizer."
                )
            optimizer = keras.optimizers.get(optimizer)
            optimizer.name = player
            resolved[player] = optimizer
        super().__init__(learning_rate=0.0, name=name)
        self.players = list(resolved)
        self.optimizers = list(resolved.values())

    def __getitem__(self, player):
        if player not in self.players:
            raise KeyError(
                f"No optimizer for player {player!r}; players: {self.players}."
            )
        return self.optimizers[self.players.index(player)]

    def items(self):
        return zip(self.players, self.optimizers)

    def build_players(self, player_variables):
        """Builds each player's optimizer on that player's variables."""
        if set(self.players) != set(player_variables):
            raise ValueError(
                f"MultiOptimizer holds optimizers for {self.players} "
                f"but the model's players are {list(player_variables)}."
            )
        all_variables = []
        for player, optimizer in self.items():
            if not optimizer.built:
                optimizer.build(list(player_variables[player]))
            all_variables.extend(player_variables[player])
        super().build(all_variables)

    def build(self, var_list):
        if self.built:
            return
        raise ValueError(
            "A MultiOptimizer is built by its GenerativeModel, which knows "
            "which variables belong to which player: call `model.compile()` "
            "after the model's networks are built."
        )

    @property
    def variables(self):
        own = self._variables[:]
        for optimizer in self.optimizers:
            own.extend(optimizer.variables)
        return own

    # Each player's optimizer is saved as a child object; only the step
    # counter belongs to this one.
    def save_own_variables(self, store):
        for i, variable in enumerate(self._variables):
            store[str(i)] = variable.numpy()

    def load_own_variables(self, store):
        if len(store.keys()) != len(self._variables):
            raise ValueError(
                f"MultiOptimizer '{self.name}' has {len(self._variables)} own "
                f"variables but the saved state has {len(store.keys())}."
            )
        for i, variable in enumerate(self._variables):
            variable.assign(store[str(i)])

    def apply(self, grads, trainable_variables=None):
        raise ValueError(
            "A MultiOptimizer does not apply gradients itself: a "
            "GenerativeModel updates each player with `self.minimize(player, "
            "loss_fn)`, which uses that player's optimizer."
        )

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        self.apply(grads)

    @property
    def learning_rate(self):
        raise AttributeError(
            "A MultiOptimizer has one learning rate per player: use "
            f"`model.optimizer[player].learning_rate` with player in "
            f"{self.players}."
        )

    @learning_rate.setter
    def learning_rate(self, value):
        self.learning_rate  # noqa: B018 -- raises the explanatory error

    def finalize_variable_values(self, var_list):
        for optimizer in self.optimizers:
            optimizer.finalize_variable_values(optimizer._trainable_variables)

    def get_config(self):
        return {
            "name": self.name,
            "optimizers": {
                player: keras.saving.serialize_keras_object(optimizer)
                for player, optimizer in self.items()
            },
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["optimizers"] = {
            player: keras.saving.deserialize_keras_object(
                optimizer, custom_objects=custom_objects
            )
            for player, optimizer in config["optimizers"].items()
        }
        return cls(**config)


def resolve_optimizer(optimizer, players, model_name):
    """The optimizer `compile` gives a model with `players`: `optimizer`
    (an optimizer or its name, or a dict or `MultiOptimizer` naming every
    player) as one Keras optimizer for one player, else a `MultiOptimizer`.
    `model_name` names the model in the errors."""
    if isinstance(optimizer, MultiOptimizer):
        optimizer = dict(optimizer.items())
    if isinstance(optimizer, dict):
        unknown = [p for p in optimizer if p not in players]
        if unknown:
            raise ValueError(
                f"Unknown player(s) {unknown} in `optimizer`; "
                f"{model_name} has players {players}."
            )
        missing = [p for p in players if p not in optimizer]
        if missing:
            raise ValueError(
                f"Missing optimizer for player(s) {missing}: `optimizer` "
                f"must name every player of {model_name}: {players}."
            )
        if len(players) == 1:
            return keras.optimizers.get(optimizer[players[0]])
        return MultiOptimizer({p: optimizer[p] for p in players})
    if len(players) > 1:
        raise ValueError(
            f"{model_name} has players {players}, each with its "
            "own optimizer: pass `optimizer` as a dict "
            f"{{{', '.join(repr(p) + ': ...' for p in players)}}} or "
            f"leave it out for the defaults. Received: {optimizer!r}"
        )
    return keras.optimizers.get(optimizer)
