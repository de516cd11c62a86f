"""PyTorch: the traced training step made lean, for running operation by
operation (`lean_graph`).

`zoo.core.torch_step` traces a step with `make_fx` into an aten graph;
`jit_compile="auto"` (long fits) and `jit_compile="traced"` (sampling and
generation loops) run that graph as it is, through PyTorch's Python
bindings, instead of compiling it with TorchInductor. This module rewrites
the graph for that: no `detach`es or copies that nothing needs, the
variables updated in their own storage where the graph allows, each
operation called through its Python binding, and each guarded optimizer
update behind a Python branch on its gradients being finite.
"""

import operator
import types

import torch

from zoo.core.compat import private

_OpOverload = private("torch.OpOverload")
_TensorBase = private("torch.TensorBase")

# ---------------------------------------------------------------------------
# A traced step run as it is, without TorchInductor.

_NO_OPS = (torch.ops.aten.detach.default, torch.ops.aten.alias.default)
_COPIES = (torch.ops.aten.clone.default, torch.ops.aten.lift_fresh_copy.default)


def _written(node, returned=False):
    """Whether any operation writes to `node`'s tensor, directly or through
    a view of it (by the operations' schemas; unknown ones count as
    writes), or, with `returned`, the graph returns it or a view of it."""
    for user in node.users:
        if user.op == "output":
            if returned:
                return True
            continue
        if user.target is operator.getitem:  # an element: follow it
            if _written(user, returned):
                return True
            continue
        schema = getattr(user.target, "_schema", None)
        if schema is None:
            return True
        for k, argument in enumerate(schema.arguments):
            value = user.args[k] if k < len(user.args) else user.kwargs.get(argument.name)
            values = value if isinstance(value, (list, tuple)) else (value,)
            if node not in values or argument.alias_info is None:
                continue
            if argument.alias_info.is_write or _written(user, returned):  # (a view)
                return True
    return False


def _base(node):
    """The node whose tensor `node` views (itself if none), or None where
    that is unknown."""
    while node.op == "call_function":
        schema = getattr(node.target, "_schema", None)
        if schema is None or not schema.returns or schema.returns[0].alias_info is None:
            return None if schema is None else node
        viewed = [
            node.args[k] for k, a in enumerate(schema.arguments)
            if k < len(node.args) and a.alias_info is not None
        ]
        if len(viewed) != 1 or not hasattr(viewed[0], "op"):
            return None
        node = viewed[0]
    return node


def _written_by(node):
    """The argument that `node`, an in-place or `out=` operation, writes and
    returns as its result (`where(..., out=x)`: `x`); else None."""
    schema = getattr(node.target, "_schema", None) if node.op == "call_function" else None
    if schema is None or len(schema.returns) != 1:
        return None
    alias = schema.returns[0].alias_info
    if alias is None or not alias.is_write:
        return None
    written = [
        node.args[k] if k < len(node.args) else node.kwargs.get(a.name)
        for k, a in enumerate(schema.arguments)
        if a.alias_info is not None and a.alias_info.is_write
        and set(a.alias_info.before_set) == set(alias.before_set)
    ]
    if len(written) != 1 or not hasattr(written[0], "op"):
        return None
    return written[0]


def _written_argument(node):
    """The tensor `node` is, followed back through the in-place and `out=`
    operations that wrote it (`_written_by`). (The graph's outputs name the
    written tensor, so `_in_place` sees a variable updated in place.)"""
    while (written := _written_by(node)) is not None:
        node = written
    return node


def _redundant_copy(node, data):
    """Whether `node` copies a contiguous tensor (so the copy has its
    layout) that neither the copy nor the original is written to, anywhere
    in the graph, that the graph does not return (a new value that is an
    input would be overwritten by the copy-back of that input's own new
    value), and that is not one of the `data` inputs (whose layout may
    change from call to call)."""
    if node.target not in _COPIES or node.args[0] in data:
        return False
    value = node.args[0].meta.get("val")
    if not isinstance(value, torch.Tensor) or not value.is_contiguous():
        return False
    base = _base(node.args[0])
    return base is not None and not _written(node, returned=True) and not _written(base)


_BINDING_MODULES = (torch, private("torch.nn_bindings"), private("torch.linalg_bindings"),
                    private("torch.special_bindings"), private("torch.fft_bindings"))


def _binding(node):
    """How to call the ATen operation of `node` through PyTorch's Python
    bindings, which parse the arguments in C++ (a `torch.ops` overload's
    Python call costs a third to a half more, per operation):
    `("call_function", torch.<name>)` (or `torch._C._nn.<name>`, ...), or
    `("call_method", name)` for a `Tensor` method; None where PyTorch has
    no binding of that name (backward operations; `_to_copy`, `slice` and
    `_unsafe_view` call an equivalent one, `_rebound`) or only a Python
    wrapper (`Tensor.split`). A binding takes the
    operation's own arguments, positional and keyword, and picks the same
    overload from their types."""
    target = node.target
    if not isinstance(target, _OpOverload) or target.namespace != "aten":
        return None
    name = target._opname
    for module in _BINDING_MODULES:
        fn = getattr(module, name, None)
        if type(fn) is types.BuiltinFunctionType and fn.__module__ == module.__name__:
            return "call_function", fn
    method = getattr(_TensorBase, name, None)
    arguments = target._schema.arguments
    if (
        method is not None
        and getattr(torch.Tensor, name, None) is method  # no Python wrapper
        and arguments and arguments[0].name == "self" and node.args
    ):
        return "call_method", name
    return None


def _rebound(node):
    """Rewrites `node` to call, through a Python binding, an operation that
    computes its result bit for bit and with the same aliasing, where its
    own ATen operation has no binding: `_unsafe_view` (a view that autograd
    does not track) as `Tensor.view`, a `slice` of step 1 as
    `Tensor.narrow` (the bounds clamped by the traced shapes), `_to_copy`
    as `Tensor.to(..., copy=True)`. Returns whether it did."""
    aten = torch.ops.aten
    if node.target is aten._unsafe_view.default:
        node.op, node.target = "call_method", "view"
        return True
    if node.target is aten.slice.Tensor:
        names = ("self", "dim", "start", "end", "step")
        bound = dict(zip(names, (None, 0, None, None, 1)))
        bound.update(zip(names, node.args))
        bound.update(node.kwargs)
        dim, start, end, step = (bound[name] for name in names[1:])
        if step != 1 or not all(v is None or type(v) is int for v in (dim, start, end)):
            return False
        size = bound["self"].meta["val"].shape[dim]
        length = node.meta["val"].shape[dim]
        if type(size) is not int or type(length) is not int:
            return False
        start = 0 if start is None else start + size if start < 0 else start
        node.op, node.target = "call_method", "narrow"
        node.args, node.kwargs = (bound["self"], dim, min(max(start, 0), size), length), {}
        return True
    if node.target is aten._to_copy.default:
        kwargs = dict(node.kwargs)
        if (len(node.args) != 1 or kwargs.pop("layout", None) not in (None, torch.strided)
                or kwargs.pop("pin_memory", None)):
            return False
        node.op, node.target = "call_method", "to"
        node.kwargs = {**kwargs, "copy": True}
        return True
    return False


def _views(node):
    """`node` and the nodes whose tensors view its tensor (by the
    operations' schemas; an operation without one counts as a view)."""
    found, stack = {node}, [node]
    while stack:
        current = stack.pop()
        for user in current.users:
            if user in found or user.op == "output":
                continue
            schema = getattr(user.target, "_schema", None)
            if schema is not None:
                if not any(r.alias_info is not None for r in schema.returns):
                    continue
                aliased = [
                    user.args[k] if k < len(user.args) else user.kwargs.get(a.name)
                    for k, a in enumerate(schema.arguments) if a.alias_info is not None
                ]
                if not any(v is current or (isinstance(v, (list, tuple)) and current in v)
                           for v in aliased):
                    continue
            found.add(user)
            stack.append(user)
    return found


def _in_place(graph, count, changed):
    """Lets the graph update the variables themselves: the step clones each
    variable's value (a compiled graph must not mutate its inputs), the
    optimizers update the clones in place, and `CompiledStep._run` copies
    them back. Where the graph returns a clone at most as its own
    variable's new value (and no view of it at all), the clone can be the
    input itself: the same reads and writes, in the same order, on the
    variable's storage, and nothing to copy back (`copied_back`). A clone
    returned or viewed as another variable's new value or as a log stays:
    that must not alias a variable which the copy-back or the next step
    changes; and so does the clone of a variable not in `changed` (which
    the step may write to as scratch space)."""
    placeholders = [node for node in graph.nodes if node.op == "placeholder"][:count]
    output = next(node for node in graph.nodes if node.op == "output")
    returned = list(output.args[0])
    for k, placeholder in enumerate(placeholders):
        users = list(placeholder.users)
        if k not in changed or len(users) != 1 or users[0].target not in _COPIES:
            continue
        clone = users[0]
        views = _views(clone)
        if any(value in views and not (value is clone and i < len(changed) and changed[i] == k)
               for i, value in enumerate(returned)):
            continue
        clone.replace_all_uses_with(placeholder)
        graph.erase_node(clone)


def lean_graph(graph, count, changed):
    """The traced graph, for running operation by operation: without the
    `detach`es (the graph has no autograd) and the copies of tensors that
    nothing writes to; updating the variables in place where it can
    (`_in_place`); each operation called through its Python binding
    (`_binding`) where it has one, or through that of an equivalent one
    (`_rebound`); elementwise operations on a new tensor that nothing
    reads afterwards written into it (`_reuse_temporaries`); each guarded
    optimizer update behind a Python branch on its gradients being finite
    (`_branch`). The graph's inputs are the values of the `count`
    variables, then the batch; its outputs start with the new values of
    the variables at indices `changed`."""
    from zoo.core import torch_step  # (which imports this module)

    data = [node for node in graph.graph.nodes if node.op == "placeholder"][count:]
    for node in list(graph.graph.nodes):
        if node.op == "call_function" and (
            node.target in _NO_OPS or _redundant_copy(node, data)
        ):
            node.replace_all_uses_with(node.args[0])
            graph.graph.erase_node(node)
    graph.graph.eliminate_dead_code()
    output = next(node for node in graph.graph.nodes if node.op == "output")
    output.args = (tuple(_written_argument(node) for node in output.args[0]),)
    _in_place(graph.graph, count, changed)
    _reuse_temporaries(graph.graph)
    guards = _guards(graph.graph)
    for node in graph.graph.nodes:  # (after the schema-reading clean-ups)
        if node.target is torch.ops.zoo.keras_random.default:
            node.target = torch_step._keras_random  # (the draw, not through the dispatcher)
            continue
        if node.op != "call_function" or _rebound(node):
            continue
        binding = _binding(node)
        if binding is not None:
            node.op, node.target = binding
    for finite, selects in guards:
        _branch(graph, finite, selects)
    graph.recompile()
    return graph


# Elementwise operations whose in-place form computes the same values:
# where the first operand is a new tensor that nothing reads afterwards
# (`_temporary`, `_dead_after`), with the result's shape, dtype and strides,
# the result is written into it (one new tensor fewer; Keras's PyTorch
# optimizers make several per update).
_ELEMENTWISE = {
    "add", "sub", "mul", "div", "sqrt", "rsqrt", "neg", "exp", "reciprocal", "pow",
    "_foreach_add", "_foreach_sub", "_foreach_mul", "_foreach_div", "_foreach_sqrt",
}


def _temporary(node):
    """Whether `node` is a tensor (or a list of them) that an operation
    made new, not a view, an input or a returned value, and that only its
    one user reads (through operations that wrote into it, if any)."""
    while len(node.users) == 1 and node.op == "call_function" and isinstance(
            node.target, _OpOverload):
        returns = node.target._schema.returns
        if all(r.alias_info is None for r in returns):
            return True
        node = _written_by(node)  # (one write back: each link has one reader)
        if node is None:
            return False
    return False


def _same_layout(a, b):
    a, b = a.meta.get("val"), b.meta.get("val")
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
            and a.shape == b.shape and a.dtype == b.dtype and a.stride() == b.stride())


def _made_new(node):
    """Whether `node` is the result of an operation (or one of its results)
    that returns new tensors, no views."""
    if not isinstance(node, torch.fx.Node) or node.op != "call_function":
        return False
    maker = node.args[0] if node.target is operator.getitem else node
    return isinstance(getattr(maker, "target", None), _OpOverload) and all(
        r.alias_info is None for r in maker.target._schema.returns)


def _dead_after(tensor, node, order):
    """Whether `tensor` is one an operation made new (not a view, an input
    or a returned value) whose every reader but `node` runs before `node`
    and keeps no view of it, so `node` may write its result into it (as
    `_foreach_mul(grads, grads)`, the last reader of the gradients in
    Keras's Adam)."""
    if not _made_new(tensor):
        # A view of a new tensor that nothing else reads (a bias's gradient,
        # `view(sum(...))`) is as good.
        base, link = _base(tensor), tensor
        if base is None or base is tensor or not _made_new(base):
            return False
        while link is not base:  # (views take the viewed tensor first)
            link = link.args[0] if link.args else None
            if not isinstance(link, torch.fx.Node) or len(link.users) != 1:
                return False
    for user in tensor.users:
        if user is node:
            continue
        schema = getattr(user.target, "_schema", None)
        if user.op != "call_function" or order[user] > order[node] or schema is None:
            return False
        for k, argument in enumerate(schema.arguments):
            value = user.args[k] if k < len(user.args) else user.kwargs.get(argument.name)
            values = value if isinstance(value, (list, tuple)) else (value,)
            if argument.alias_info is not None and any(v is tensor for v in values):
                return False  # (a view of it, or a write that returns one)
    return True


def _reuse_temporaries(graph):
    order = {node: k for k, node in enumerate(graph.nodes)}
    for node in list(graph.nodes):
        target = node.target
        if (node.op != "call_function" or not isinstance(target, _OpOverload)
                or target.namespace != "aten" or target._opname not in _ELEMENTWISE
                or not node.args):
            continue
        in_place = getattr(getattr(torch.ops.aten, target._opname + "_", None),
                           target._overloadname, None)
        if in_place is None:
            continue
        first = node.args[0]
        if target._opname.startswith("_foreach"):
            results = [u for u in node.users if u.target is operator.getitem]
            if (not isinstance(first, (list, tuple)) or len(results) != len(node.users)
                    or len(results) != len(first)):
                continue
            by_index = {u.args[1]: u for u in results}
            if not all(
                k in by_index and _same_layout(t, by_index[k]) and (
                    # (one of the results of a `_foreach_*` that are each read once)
                    _made_new(t) and t.target is operator.getitem and len(t.users) == 1
                    and len(t.args[0].users) == len(first) or _dead_after(t, node, order))
                for k, t in enumerate(first)
            ):
                continue
            # Each tensor written once, and read by the other operands only
            # at its own position (elementwise: `grads * grads` in place).
            if any(first.count(t) > 1 for t in first) or any(
                    t in a and not (len(a) == len(first) and a[k] is t and a.count(t) == 1)
                    for k, t in enumerate(first) for a in node.args[1:]
                    if isinstance(a, (list, tuple))) or any(
                    a in first for a in node.args[1:] if isinstance(a, torch.fx.Node)):
                continue
            node.target = in_place
            for k, t in enumerate(first):
                by_index[k].replace_all_uses_with(t)
                graph.erase_node(by_index[k])
            continue
        if (not isinstance(first, torch.fx.Node)
                or not (_temporary(first) or _dead_after(first, node, order))
                or not _same_layout(first, node)
                or first in node.args[1:] or first in node.kwargs.values()):
            continue
        node.target = in_place  # (which returns the tensor it wrote)


# ---------------------------------------------------------------------------
# The non-finite guard as a Python branch in the graph run operation by
# operation: `minimize` traces copies of the old state, the optimizer's
# update, then `where(finite, new, old, out=new)` per variable (a graph has
# no branch). Run operation by operation, the graph can branch: the update
# runs only when `finite` holds, with no copies and no selects.


def _guards(graph):
    """The non-finite guards of `minimize` in `graph`: `(finite, selects)`
    per update, `selects` its `where(finite, new, old, out=new)` nodes in
    graph order."""
    groups = {}
    for node in graph.nodes:
        if node.target is torch.ops.aten.where.self_out and "out" in node.kwargs:
            groups.setdefault(node.args[0], []).append(node)
    return list(groups.items())


def _run_if(finite, update, inputs, selected, outputs, skipped):
    """What the selects of one guard give: where `finite` holds, `update`
    run on `inputs` and, per select, its `new` tensor (`selected[k]`) or,
    where `update` returns it, `update`'s output `outputs[k]`; else, per
    select, `skipped[k] = (restore, old)`: `old` itself, or with `restore`
    (state changed before the update, such as BatchNorm statistics) `new`
    with `old` written back into it."""
    if bool(finite):
        results = update(*inputs)
        return [new if k is None else results[k] for new, k in zip(selected, outputs)]
    values = []
    for new, (restore, old) in zip(selected, skipped):
        values.append(new.copy_(old) if restore else old)
    return values


def _branch(module, finite, selects):
    """Replaces one guard's copies, update and selects by a `_run_if` call:
    the update is the nodes between the last copy and the first select,
    and must have no use outside it but as a select's `new` (or as the
    graph's output of that `new`); else the guard stays as it is."""
    graph = module.graph
    order = {node: k for k, node in enumerate(graph.nodes)}
    late = [w.args[2] for w in selects if order[w.args[2]] > order[finite]]  # (the copies)
    if (not late or any(c.target is not torch.clone or len(c.users) != 1 for c in late)
            or any(order[w] != order[selects[0]] + k for k, w in enumerate(selects))):
        return
    region = [n for n in graph.nodes if order[late[-1]] < order[n] < order[selects[0]]]
    inside = set(region)
    written = {w.kwargs["out"] for w in selects}
    escaping = {}
    for node in region:
        outside = [user for user in node.users if user not in inside]
        if outside and node not in written:
            return
        if any(user not in selects and user.op != "output" for user in outside):
            return
        if outside:
            escaping[node] = len(escaping)
    selected, outputs, skipped = [], [], []
    for w in selects:
        new, old = w.kwargs["out"], w.args[2]
        source = old.args[0] if old in late else old  # (the value before the update)
        outputs.append(escaping.get(new))
        selected.append(None if new in escaping else new)
        if new in escaping or source is new:  # replaced, or updated in place
            skipped.append((False, source))
        elif old in late:
            return
        else:  # changed before the update (BatchNorm statistics)
            skipped.append((True, old))
    inputs = []
    for node in region:
        inputs += [a for a in node.all_input_nodes if a not in inside and a not in inputs]
    # The update as its own graph: `inputs` in, the escaping values out.
    sub = torch.fx.Graph()
    env = {a: sub.placeholder(f"input_{k}") for k, a in enumerate(inputs)}
    for node in region:
        env[node] = sub.node_copy(node, lambda n: env[n])
    sub.output(tuple(env[n] for n in escaping))
    name = f"_guarded_update_{sum(n.target is _run_if for n in graph.nodes)}"
    module.add_submodule(name, torch.fx.GraphModule(module, sub))
    with graph.inserting_before(selects[0]):
        call = graph.call_function(_run_if, (
            finite, graph.get_attr(name), tuple(inputs), selected, outputs, skipped))
        values = [graph.call_function(operator.getitem, (call, k)) for k in range(len(selects))]
    for w, value in zip(selects, values):
        w.replace_all_uses_with(value)
        new = w.kwargs["out"]
        if new in escaping:  # (the graph's output names the written tensor)
            for user in list(new.users):
                if user not in inside and user not in selects:
                    user.replace_input_with(new, value)
    for node in selects + region[::-1] + late:
        graph.erase_node(node)


def copied_back(graph, count, changed):
    """The positions among the first `len(changed)` outputs of the traced
    `graph` (inputs: `count` variable values, then the batch) that `_run`
    copies into their variables: all but those the graph returns as the
    very input it updated in place (`_in_place`)."""
    placeholders = [node for node in graph.nodes if node.op == "placeholder"][:count]
    returned = next(node for node in graph.nodes if node.op == "output").args[0]
    return [i for i, k in enumerate(changed) if returned[i] is not placeholders[k]]
