"""The channel dependency graph: which layers must lose the same channels together.

Removing output channel ``c`` of a convolution is only legal if everything that touches channel ``c`` of
that tensor changes with it. Following Torch-Pruning (Fang et al. 2023, "DepGraph"), the model is traced
with ``torch.fx`` and every tensor's channel dimension is given a *channel space*; spaces that must shrink
together are merged (union-find) into a :class:`ChannelGroup`:

* a conv (``groups=1``) or linear layer *consumes* its input space (its ``weight[:, c]``) and *produces*
  a new output space (its ``weight[c]``, ``bias[c]``);
* BatchNorm, a depthwise conv (``groups = in = out``), activations, pooling and dropout act channel by
  channel: their output space *is* their input space (BN's γ, β, mean, var and the depthwise filters are
  sliced with it);
* ``a + b`` (a residual add), ``a − b`` and ``a · b`` of two same-channel tensors *merge* the spaces of
  ``a`` and ``b``: a ResNet stage's shortcut, its downsample conv and every block's last conv form one group;
* ``flatten``/``view`` from (N, C, H, W) to (N, C·H·W) keeps the space but each channel now covers
  ``H·W`` consecutive features (``factor``): the next linear layer loses input features in blocks of H·W
  (TinyCNN: 64 channels × 4·4 → 1024 features).

Spaces that reach the model input or output, or that pass through an op the graph does not know, are
*frozen* (never pruned); an op that cannot be followed raises ``ValueError`` naming it. Grouped (not
depthwise) convolutions freeze both their spaces. Channel concatenation (``torch.cat``) is not supported.

Shapes come from one forward of ``example_input`` (``torch.fx.passes.shape_prop``) in eval mode, so
BatchNorm statistics are not touched.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ChannelGroup", "DependencyGraph", "build_graph"]


@dataclass
class ChannelGroup:
    """One set of channels that is pruned as a unit.

    ``producers``: names of conv/linear layers whose *output* channels are the group (their ``weight[c]``
    and ``bias[c]`` go). ``consumers``: ``(name, factor)`` of conv/linear layers whose *input* channels are
    the group; ``factor`` > 1 when the tensor was flattened in between (channel ``c`` is input features
    ``c·factor … c·factor + factor − 1``). ``channelwise``: BatchNorm layers and depthwise convs (sliced on
    dim 0, their ``groups`` shrinks too). ``ops``: the parameter-free ops the channels flow through."""
    gid: int
    channels: int
    producers: list = field(default_factory=list)
    consumers: list = field(default_factory=list)
    channelwise: list = field(default_factory=list)
    ops: list = field(default_factory=list)
    frozen_reasons: list = field(default_factory=list)

    @property
    def frozen(self) -> bool:
        return bool(self.frozen_reasons)

    @property
    def prunable(self) -> bool:
        """Not frozen and with at least one producer (whose filter norms rank the channels)."""
        return not self.frozen and bool(self.producers)

    def describe(self) -> str:
        state = "frozen: " + "; ".join(self.frozen_reasons) if self.frozen else "prunable"
        cons = [f"{n}×{f}" if f > 1 else n for n, f in self.consumers]
        return (f"group {self.gid}: {self.channels} ch, {state}; producers {self.producers}, "
                f"channelwise {self.channelwise}, consumers {cons}")


class _UnionFind:
    def __init__(self):
        self.parent = []

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
        return min(ra, rb)


@dataclass
class DependencyGraph:
    """All channel groups of a model (``groups``) and, per prunable layer, the group(s) it belongs to."""
    groups: list
    module_out: dict  # conv/linear/bn name -> gid of the channels it produces or acts on (dim 0)
    module_in: dict   # conv/linear name -> (gid, factor) of the channels it consumes (dim 1)

    def prunable_groups(self) -> list:
        return [g for g in self.groups if g.prunable]

    def group_of(self, module_name: str) -> ChannelGroup:
        """The group of a layer's output channels."""
        if module_name not in self.module_out:
            raise ValueError(f"{module_name!r} is not a conv/linear/batchnorm layer on the traced path")
        return self.groups[self.module_out[module_name]]

    def summary(self) -> str:
        return "\n".join(g.describe() for g in self.groups)


# ---- which ops are channel-wise (output channel c depends only on input channel c) ----------------------
_CHANNELWISE_MODULES = ("ReLU", "ReLU6", "LeakyReLU", "Hardtanh", "Hardswish", "Hardsigmoid", "SiLU",
                        "GELU", "Sigmoid", "Tanh", "ELU", "Mish", "Identity", "Dropout", "Dropout2d",
                        "Dropout1d", "AlphaDropout", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d",
                        "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d")
_CHANNELWISE_NAMES = {"relu", "relu_", "relu6", "hardtanh", "hardtanh_", "hardswish", "hardsigmoid", "silu",
                      "gelu", "sigmoid", "tanh", "elu", "leaky_relu", "mish", "dropout", "dropout2d",
                      "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d",
                      "max_pool1d", "avg_pool1d", "adaptive_avg_pool1d", "contiguous", "clone", "detach",
                      "float", "to"}
_BINARY_NAMES = {"add", "add_", "iadd", "sub", "sub_", "isub", "mul", "mul_", "imul", "truediv", "div"}
_SHAPE_NAMES = {"flatten", "view", "reshape"}
_REDUCE_NAMES = {"mean", "sum", "amax", "amin"}
#: ops that map 0 to 0 (a channel that is all-zero before them is all-zero after)
ZERO_PRESERVING = {"ReLU", "ReLU6", "LeakyReLU", "Hardtanh", "Hardswish", "SiLU", "GELU", "Tanh", "ELU",
                   "Mish", "Identity", "Dropout", "Dropout2d", "Dropout1d", "MaxPool1d", "MaxPool2d",
                   "AvgPool1d", "AvgPool2d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d",
                   "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "hardswish", "silu", "gelu", "tanh",
                   "elu", "leaky_relu", "mish", "dropout", "dropout2d", "max_pool2d", "avg_pool2d",
                   "adaptive_avg_pool2d", "adaptive_max_pool2d", "max_pool1d", "avg_pool1d",
                   "adaptive_avg_pool1d", "contiguous", "clone", "detach", "float", "to", "add", "add_",
                   "iadd", "sub", "sub_", "isub", "mul", "mul_", "imul", "flatten", "view", "reshape",
                   "mean", "sum", "amax", "amin"}


def _op_name(node) -> str:
    """``'relu'`` for ``F.relu``/``torch.relu``/``x.relu()``, ``'iadd'`` for ``x += y``..."""
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def build_graph(model, example_input) -> DependencyGraph:
    """Trace ``model`` with ``torch.fx`` and group its channels (see the module docstring).

    ``example_input``: a tensor (or a shape tuple, filled with zeros) the model accepts. Raises
    ``ValueError`` for models ``torch.fx`` cannot trace and for ops on the channel path it cannot follow."""
    import torch
    import torch.nn as nn
    from torch.fx import symbolic_trace
    from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

    if isinstance(example_input, (tuple, list)) and all(isinstance(d, int) for d in example_input):
        p = next(model.parameters(), None)
        example_input = torch.zeros(*example_input, dtype=p.dtype if p is not None else torch.float32)
    if not isinstance(example_input, torch.Tensor):
        raise ValueError("example_input must be a tensor or a shape tuple")
    try:
        gm = symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 — fx raises many types
        raise ValueError(f"torch.fx cannot trace {type(model).__name__}: {e}") from e
    was_training = model.training
    model.eval()
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example_input)
    except RuntimeError as e:
        raise ValueError(f"example_input of shape {tuple(example_input.shape)} does not run through "
                         f"{type(model).__name__}: {e}") from e
    finally:
        model.train(was_training)

    uf = _UnionFind()
    size = []                 # space id -> channel count
    frozen = {}               # space id -> [reasons]
    producers, consumers, channelwise, ops = {}, {}, {}, {}
    space = {}                # node -> (space id, factor)

    def new_space(c):
        sid = uf.new()
        size.append(c)
        return sid

    def freeze(sid, why):
        frozen.setdefault(sid, []).append(why)

    def shape(node):
        meta = node.meta.get("tensor_meta") if hasattr(node, "meta") else None
        return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None

    def tensor_args(node):
        out = []
        for a in _flatten((node.args, node.kwargs)):
            if isinstance(a, torch.fx.Node) and a in space:
                out.append(a)
        return out

    def same(node, src, opname):
        space[node] = space[src]
        ops.setdefault(space[src][0], []).append(opname)

    def channels_of(shp):
        if shp is None or len(shp) < 2:
            return None
        return shp[1]

    for node in gm.graph.nodes:
        shp = shape(node)
        if node.op == "placeholder":
            if shp is not None:
                sid = new_space(channels_of(shp) or 0)
                space[node] = (sid, 1)
                freeze(sid, f"model input {node.name}")
            continue
        if node.op == "output":
            for a in _flatten(node.args):
                if isinstance(a, torch.fx.Node) and a in space:
                    freeze(space[a][0], "model output")
            continue
        if node.op == "get_attr":
            if shp is not None:
                sid = new_space(channels_of(shp) or 0)
                space[node] = (sid, 1)
                freeze(sid, f"constant tensor {node.target}")
            continue
        if shp is None:  # size(), shape, ints: no channels
            continue
        targs = tensor_args(node)

        if node.op == "call_module":
            name = node.target
            mod = model.get_submodule(name)
            kind = type(mod).__name__
            if not targs:
                raise ValueError(f"{name} ({kind}) has no traced tensor input")
            if len(targs) > 1:
                raise ValueError(f"{name} ({kind}) takes several tensors; not supported")
            src = targs[0]
            sid_in, fac_in = space[src]
            if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                if fac_in != 1:
                    raise ValueError(f"{name}: convolution after a flatten is not supported")
                if mod.groups == 1:
                    consumers.setdefault(sid_in, []).append((name, 1))
                    sid = new_space(mod.out_channels)
                    producers.setdefault(sid, []).append(name)
                    space[node] = (sid, 1)
                elif mod.groups == mod.in_channels == mod.out_channels:
                    channelwise.setdefault(sid_in, []).append(name)
                    space[node] = (sid_in, 1)
                else:
                    freeze(sid_in, f"grouped conv {name} (groups={mod.groups}) input")
                    sid = new_space(mod.out_channels)
                    freeze(sid, f"grouped conv {name} (groups={mod.groups}) output")
                    space[node] = (sid, 1)
            elif isinstance(mod, nn.Linear):
                if len(shape(src)) != 2:
                    raise ValueError(f"{name}: Linear on a {len(shape(src))}-D input is not supported "
                                     "(only (N, features))")
                consumers.setdefault(sid_in, []).append((name, fac_in))
                sid = new_space(mod.out_features)
                producers.setdefault(sid, []).append(name)
                space[node] = (sid, 1)
            elif isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                if fac_in != 1:
                    raise ValueError(f"{name}: BatchNorm after a flatten is not supported")
                channelwise.setdefault(sid_in, []).append(name)
                space[node] = (sid_in, 1)
            elif isinstance(mod, nn.Flatten):
                space[node] = _flattened(space[src], shape(src), shp, name, ops)
            elif kind in _CHANNELWISE_MODULES:
                same(node, src, kind)
            else:
                raise ValueError(f"unsupported layer {name} ({kind}) on the channel path: structured pruning "
                                 "knows Conv, Linear, BatchNorm, activations, pooling, dropout, flatten")
            continue

        # call_function / call_method
        op = _op_name(node)
        if not targs:  # a tensor made from nothing traced (torch.zeros(...)): frozen constant
            sid = new_space(channels_of(shp) or 0)
            space[node] = (sid, 1)
            freeze(sid, f"tensor created by {op}")
            continue
        src = targs[0]
        if op in _CHANNELWISE_NAMES:
            same(node, src, op)
        elif op in _BINARY_NAMES:
            outs = [a for a in targs if shape(a) is not None]
            full = [a for a in outs if channels_of(shape(a)) == channels_of(shp) and len(shape(a)) == len(shp)]
            if not full:
                raise ValueError(f"{node.name} ({op}): cannot follow the channels of a broadcast")
            base = full[0]
            sid, fac = space[base]
            for a in full[1:]:
                sid2, fac2 = space[a]
                if fac2 != fac:
                    raise ValueError(f"{node.name} ({op}): adds tensors flattened differently")
                sid = uf.union(sid, sid2)
            space[node] = (sid, fac)
            ops.setdefault(sid, []).append(op)
            for a in outs:
                if a not in full and channels_of(shape(a)) not in (1, None):
                    raise ValueError(f"{node.name} ({op}): operand shapes {shape(a)} and {shp} do not match")
        elif op in _SHAPE_NAMES:
            space[node] = _flattened(space[src], shape(src), shp, node.name, ops)
        elif op in _REDUCE_NAMES:
            dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
            nd = len(shape(src))
            if not dims or any(d % nd in (0, 1) for d in dims):
                raise ValueError(f"{node.name} ({op}) reduces over the batch or channel dimension")
            same(node, src, op)
        elif op == "getitem":
            raise ValueError(f"{node.name}: indexing a tensor on the channel path is not supported")
        elif op == "cat":
            raise ValueError(f"{node.name}: torch.cat (channel concatenation) is not supported")
        else:
            raise ValueError(f"unsupported operation {node.format_node()} on the channel path")

    # ---- collect groups -------------------------------------------------------------------------------
    roots = {}
    groups = []

    def group_for(sid):
        r = uf.find(sid)
        if r not in roots:
            roots[r] = len(groups)
            groups.append(ChannelGroup(gid=len(groups), channels=size[r]))
        g = groups[roots[r]]
        if size[sid] != g.channels:
            raise ValueError(f"coupled tensors have {size[sid]} and {g.channels} channels")
        return g

    for sid in range(len(size)):
        group_for(sid)
    module_out, module_in = {}, {}
    for sid, names in producers.items():
        g = group_for(sid)
        g.producers += names
        for n in names:
            module_out[n] = g.gid
    for sid, items in consumers.items():
        g = group_for(sid)
        g.consumers += items
        for n, f in items:
            module_in[n] = (g.gid, f)
    for sid, names in channelwise.items():
        g = group_for(sid)
        g.channelwise += names
        for n in names:
            module_out[n] = g.gid
    for sid, names in ops.items():
        group_for(sid).ops += names
    for sid, reasons in frozen.items():
        group_for(sid).frozen_reasons += reasons
    # a layer called twice (shared weights) must see the same groups every time
    for g in groups:
        g.producers = list(dict.fromkeys(g.producers))
        g.channelwise = list(dict.fromkeys(g.channelwise))
        g.consumers = list(dict.fromkeys(g.consumers))
    _check_shared(groups, module_out, module_in)
    groups = [g for g in groups if g.producers or g.consumers or g.channelwise or g.frozen]
    remap = {g.gid: i for i, g in enumerate(groups)}
    for g in groups:
        g.gid = remap[g.gid]
    module_out = {k: remap[v] for k, v in module_out.items()}
    module_in = {k: (remap[v[0]], v[1]) for k, v in module_in.items()}
    return DependencyGraph(groups=groups, module_out=module_out, module_in=module_in)


def _check_shared(groups, module_out, module_in):
    seen_out, seen_in = {}, {}
    for g in groups:
        for n in g.producers + g.channelwise:
            if seen_out.setdefault(n, g.gid) != g.gid:
                raise ValueError(f"layer {n} is called on tensors of different channel groups (shared "
                                 "weights); not supported")
        for n, _ in g.consumers:
            if seen_in.setdefault(n, g.gid) != g.gid:
                raise ValueError(f"layer {n} is called on tensors of different channel groups (shared "
                                 "weights); not supported")


def _flatten(x):
    if isinstance(x, (list, tuple)):
        for a in x:
            yield from _flatten(a)
    elif isinstance(x, dict):
        for a in x.values():
            yield from _flatten(a)
    else:
        yield x


def _flattened(src_space, in_shape, out_shape, name, ops):
    """(N, C, *spatial) → (N, C·∏spatial): same space, factor × ∏spatial. Shape-preserving views pass."""
    sid, fac = src_space
    if tuple(in_shape) == tuple(out_shape):
        ops.setdefault(sid, []).append("view")
        return src_space
    if len(out_shape) == 2 and len(in_shape) >= 2 and in_shape[0] == out_shape[0]:
        spatial = 1
        for d in in_shape[2:]:
            spatial *= d
        if out_shape[1] == in_shape[1] * spatial:
            ops.setdefault(sid, []).append("flatten")
            return (sid, fac * spatial)
    raise ValueError(f"{name}: reshape {tuple(in_shape)} → {tuple(out_shape)} is not a flatten of the "
                     "channel dimension; not supported")
