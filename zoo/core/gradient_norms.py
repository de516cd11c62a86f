"""Gradient norms in a training step's logs, computed inside the compiled
step: `GenerativeModel.record_gradient_norms` turns them on (the
`GradientMonitor` callback does), `minimize` records each update's norms
here, and the step averages them into its logs."""

from keras import ops


def switch(model, enabled):
    """Turns the norms on or off; returns the previous setting. A traced
    step has the setting baked in: one step function is kept per setting
    (compiling costs seconds), rebuilt after `compile()`."""
    enabled = bool(enabled)
    previous = getattr(model, "_gradient_norms_on", False)
    if enabled == previous:
        return previous
    object.__setattr__(model, "_gradient_norms_on", enabled)
    functions = model.__dict__.setdefault("_train_function_by_norms", {})

    # A new callable for compilers that cache traces by function (`jax.jit`
    # of the same bound method would reuse the old trace).
    def train_step(*args):
        return type(model).train_step(model, *args)

    object.__setattr__(model, "train_step", train_step)
    if getattr(model, "train_function", None) is not None:
        functions[previous] = model.train_function
        model.train_function = functions.get(enabled)
        if model.train_function is None:
            model.make_train_function(force=True)
    return previous


def enabled(model):
    return getattr(model, "_gradient_norms_on", False)


def begin_step(model):
    object.__setattr__(model, "_step_gradient_norms", {})


def record(model, player, variables, grads, optimizer):
    """Notes the global and per-layer norms of one update of `player` (the
    unscaled gradient: a loss-scaling optimizer's scale divided out)."""
    names = _layer_names(model, player, variables)
    zero = ops.zeros((), "float32")
    squares = {name: zero for name in names}
    for name, grad in zip(names, grads):
        if grad is not None:  # None: a variable the loss does not reach
            squares[name] = squares[name] + ops.sum(ops.square(ops.cast(grad, "float32")))
    scale = getattr(optimizer, "dynamic_scale", None)
    scale = 1.0 if scale is None else ops.cast(scale, "float32")
    norms = {f"grad_norm/{player}": ops.sqrt(sum(squares.values(), zero)) / scale}
    for name, square in squares.items():
        norms[f"grad_norm/{player}/{name}"] = ops.sqrt(square) / scale
    model._step_gradient_norms.setdefault(player, []).append(norms)


def step_logs(model):
    """The step's norms, each averaged over its player's updates."""
    logs = {}
    for updates in getattr(model, "_step_gradient_norms", {}).values():
        for key in updates[0]:
            logs[key] = sum(u[key] for u in updates) / len(updates)
    return logs


def _layer_names(model, player, variables):
    """The name of the layer owning each of `variables` (nested layers by
    their path inside the player), cached per player."""
    cache = model.__dict__.get("_gradient_layer_names_cache")
    if cache is None:
        cache = {}
        object.__setattr__(model, "_gradient_layer_names_cache", cache)
    if player in cache and len(cache[player]) == len(variables):
        return cache[player]
    owner = {}

    def walk(layer, prefix):
        for child in layer._flatten_layers(include_self=False, recursive=False):
            walk(child, f"{prefix}{child.name}/")
        for v in layer.trainable_variables:
            owner.setdefault(id(v), prefix.rstrip("/") or layer.name)

    parts = model.players()[player]
    parts = list(parts) if isinstance(parts, (list, tuple)) else [parts]
    for part in parts:
        walk(part, "" if len(parts) == 1 else f"{part.name}/")
    names = [owner.get(id(v), v.path.rsplit("/", 1)[0]) for v in variables]
    cache[player] = names
    return names
