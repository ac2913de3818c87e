"""Graph IR, float executor and torch importer: every op and four whole models against PyTorch."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as TF
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from minquant import float_ops as F
from minquant.executor import run
from minquant.graph import BatchNormAttrs, Conv2dAttrs, Graph, Node
from minquant.interop.torch.fx_import import from_torch

torch.set_num_threads(1)
OPS_SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                        suppress_health_check=[HealthCheck.too_slow])


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _torch_out(model, x):
    with torch.no_grad():
        return model(_t(x)).numpy()


def _random_eval_model(ctor, seed=0, size=224):
    """A torchvision model with seeded random weights, non-trivial BatchNorm affine parameters and running
    statistics (three train-mode passes with a cumulative average), then put in eval mode."""
    torch.manual_seed(seed)
    model = ctor()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.momentum = None  # running stats = average over the warm-up batches
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=1 / math.sqrt(m.in_features))
                m.bias.uniform_(-0.1, 0.1)
        model.train()
        for _ in range(3):
            model(torch.randn(8, 3, size, size))
    return model.eval()


# ----------------------------------------------------------------------------------------------------------
# Whole models
# ----------------------------------------------------------------------------------------------------------

def test_tiny_cnn_digits_matches_torch():
    from minquant.data.zoo import tiny_cnn_digits

    model, (_, _, x_test, y_test) = tiny_cnn_digits()
    x = x_test[:128]
    graph = from_torch(model, (1, 1, 28, 28))
    ours, ref = run(graph, x), _torch_out(model, x)
    assert ref.std() > 1.0  # a trained model's logits, not a near-constant output
    assert np.abs(ours - ref).max() <= 1e-4
    assert (ours.argmax(1) == ref.argmax(1)).all()
    assert [n.op for n in graph] == ["conv2d", "relu", "conv2d", "relu", "adaptive_avg_pool2d", "flatten", "linear"]


def test_mobilenet_v2_imagenet_matches_torch():
    from minquant.data.datasets import photo_crops
    from minquant.data.zoo import mobilenet_v2_imagenet

    model = mobilenet_v2_imagenet()
    x = photo_crops(4, split="eval")
    graph = from_torch(model, (1, 3, 224, 224))
    ours, ref = run(graph, x), _torch_out(model, x)
    assert ref.std() > 1.0
    assert np.abs(ours - ref).max() <= 1e-4
    assert len(graph.nodes_of("add")) == 10 and {n.attrs.groups for n in graph.nodes_of("conv2d")} > {1}


def test_resnet18_matches_torch_layer_by_layer():
    import torchvision

    model = _random_eval_model(torchvision.models.resnet18, seed=1, size=128)
    x = np.random.default_rng(1).standard_normal((2, 3, 128, 128)).astype(np.float32)
    graph = from_torch(model, (1, 3, 128, 128))
    # torch's activation of every module, recorded by forward hooks, keyed like the graph's nodes
    seen: dict[str, np.ndarray] = {}
    calls: dict[str, int] = {}

    def hook(name):
        def f(mod, inp, out):
            k = calls.get(name, 0)
            calls[name] = k + 1
            seen[name if k == 0 else f"{name}@{k}"] = out.detach().numpy().copy()
        return f

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if not list(m.children())]
    ref = _torch_out(model, x)
    for h in handles:
        h.remove()
    ours, values = run(graph, x, intermediates=True)
    assert np.abs(ours - ref).max() <= 1e-4 and ref.std() > 0.3
    compared = 0
    for name, act in seen.items():
        assert name in values, name
        scale = max(1.0, float(np.abs(act).max()))
        assert np.abs(values[name] - act).max() <= 1e-5 * scale, name
        compared += 1
    assert compared >= 50 and "layer1.0.relu@1" in values


def test_mobilenet_v3_small_matches_torch():
    import torchvision

    model = _random_eval_model(torchvision.models.mobilenet_v3_small, seed=2)
    x = np.random.default_rng(2).standard_normal((2, 3, 224, 224)).astype(np.float32)
    graph = from_torch(model, (1, 3, 224, 224))
    ours, ref = run(graph, x), _torch_out(model, x)
    assert np.abs(ours - ref).max() <= 1e-4 and ref.std() > 0.05
    ops = {n.op for n in graph}
    assert {"hardswish", "hardsigmoid", "mul", "adaptive_avg_pool2d"} <= ops  # squeeze-excite imported


class _FunctionalZoo(nn.Module):
    """Functions, methods, in-place ops and shape tricks that the torchvision models do not use."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 16, 3, stride=2, padding=2, dilation=2, groups=8, bias=False)
        self.bn = nn.BatchNorm2d(16, affine=False)
        self.act = nn.Hardtanh(0.0, 6.0, inplace=True)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.drop = nn.Dropout(0.3)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(32 * 3 * 2, 5)

    def forward(self, x):
        y = self.conv(x)
        r = _relu_inplace(y)               # overwrites y: torch's y + r is 2·relu(conv(x))
        z = y + r
        z = TF.max_pool2d(z, 3, 2, 1, ceil_mode=True)
        a = self.act(self.bn(self.dw(z)))
        b = TF.hardsigmoid(a) * a
        c = torch.cat([a, b], dim=1)
        c = TF.avg_pool2d(c, 2, ceil_mode=True, count_include_pad=True)
        c = TF.adaptive_avg_pool2d(self.pool(c), (3, 2))
        d = c.view(c.size(0), -1)
        e = torch.add(d, self.drop(d)).relu_()
        return self.fc(TF.dropout(e, 0.5, training=self.training)), TF.relu6(self.flat(c) * d)


def _relu_inplace(t):
    return TF.relu(t, inplace=True)


def test_functional_ops_inplace_and_views_match_torch():
    torch.manual_seed(3)
    model = _FunctionalZoo()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = np.random.default_rng(3).standard_normal((3, 3, 21, 19)).astype(np.float32)
    graph = from_torch(model, (1, 3, 21, 19))
    ours = run(graph, x)
    with torch.no_grad():
        ref = [t.numpy() for t in model(_t(x))]
    assert isinstance(ours, tuple) and len(ours) == 2
    for o, r in zip(ours, ref):
        assert o.shape == r.shape and np.abs(o - r).max() <= 1e-5
    # the in-place relu makes the residual add read the relu's output twice
    add = graph.node("add")
    assert add.inputs == ["relu", "relu"]
    assert not graph.nodes_of("identity")  # dropout/identity skipped


# ----------------------------------------------------------------------------------------------------------
# Importer errors
# ----------------------------------------------------------------------------------------------------------

class _Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


class _Net(nn.Module):
    def __init__(self, middle):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 3, 1), middle)

    def forward(self, x):
        return self.body(x)


def test_unsupported_function_names_op_and_module():
    with pytest.raises(ValueError, match="sigmoid") as e:
        from_torch(_Net(_Gated()).eval(), (1, 3, 8, 8))
    msg = str(e.value)
    assert "sigmoid" in msg and "'body.1'" in msg and "_Gated" in msg


def test_unsupported_module_names_type_and_path():
    with pytest.raises(ValueError) as e:
        from_torch(_Net(nn.GELU()).eval(), (1, 3, 8, 8))
    assert "GELU" in str(e.value) and "'body.1'" in str(e.value)

    # a QAT Conv2d is a Conv2d subclass whose forward fake-quantizes: refused, not imported as float
    qat = torch.ao.nn.qat.Conv2d(3, 3, 1, qconfig=torch.ao.quantization.get_default_qat_qconfig("x86"))
    with pytest.raises(ValueError, match="subclass of Conv2d") as e:
        from_torch(_Net(qat).eval(), (1, 3, 8, 8))
    assert "torch.ao.nn.qat" in str(e.value) and "'body.1'" in str(e.value)


def test_importer_rejects_training_mode_constants_and_bad_shapes():
    with pytest.raises(ValueError, match="training mode"):
        from_torch(_Net(nn.ReLU()), (1, 3, 8, 8))

    class AddConst(nn.Module):
        def forward(self, x):
            return x + 1.0

    with pytest.raises(ValueError, match="constant"):
        from_torch(AddConst().eval(), (1, 3, 8, 8))

    class MergeBatch(nn.Module):
        def forward(self, x):
            return x.reshape(-1)

    with pytest.raises(ValueError, match="batch"):
        from_torch(MergeBatch().eval(), (1, 3, 8, 8))
    with pytest.raises(ValueError, match="example_input_shape"):
        from_torch(_Net(nn.ReLU()).eval(), (0, 3, 8, 8))


# ----------------------------------------------------------------------------------------------------------
# Graph helpers and executor contract
# ----------------------------------------------------------------------------------------------------------

def _small_graph():
    rng = np.random.default_rng(0)
    nodes = [
        Node("conv", "conv2d", ["x"], Conv2dAttrs(padding=1),
             {"weight": rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
              "bias": rng.standard_normal(4).astype(np.float32)}),
        Node("bn", "batch_norm", ["conv"], BatchNormAttrs(1e-5),
             {"running_mean": rng.standard_normal(4).astype(np.float32),
              "running_var": rng.uniform(0.5, 2, 4).astype(np.float32),
              "weight": rng.uniform(0.5, 1.5, 4).astype(np.float32),
              "bias": rng.standard_normal(4).astype(np.float32)}),
        Node("relu", "relu", ["bn"]),
        Node("add", "add", ["relu", "bn"]),
    ]
    return Graph(["x"], nodes, ["add"], {"x": (1, 2, 5, 5)}, name="small")


def test_graph_rewrites_fold_batchnorm_and_insert():
    g = _small_graph()
    x = np.random.default_rng(1).standard_normal((3, 2, 5, 5)).astype(np.float32)
    want = run(g, x)
    assert [n.name for n in g.consumers("bn")] == ["relu", "add"] and g.producer("x") is None

    # fold bn into conv: w' = w·α, b' = (b − μ)·α + β with α = γ/√(σ² + ε)
    folded = g.copy()
    bn, conv = folded.node("bn"), folded.node("conv")
    alpha = bn.params["weight"] / np.sqrt(bn.params["running_var"] + bn.attrs.eps)
    folded.replace_node("conv", Node("conv", "conv2d", conv.inputs, conv.attrs, {
        "weight": conv.params["weight"] * alpha[:, None, None, None],
        "bias": (conv.params["bias"] - bn.params["running_mean"]) * alpha + bn.params["bias"]}))
    folded.remove_node("bn")
    assert [n.name for n in folded.consumers("conv")] == ["relu", "add"]
    assert "bn" in g and "bn" not in folded  # copy() is deep
    np.testing.assert_allclose(run(folded, x), want, atol=1e-5)

    folded.insert_after("relu", Node("relu_id", "identity", ["relu"]))
    assert folded.node("add").inputs == ["relu_id", "conv"]
    np.testing.assert_allclose(run(folded, x), want, atol=1e-5)

    # the readable rendering names every node, op and parameter shape
    text = str(folded)
    for word in ("conv2d", "relu_id", "identity", "weight[4, 2, 3, 3]", "padding=(1, 1)"):
        assert word in text

    # rewrites may leave nodes out of order; toposort puts them back
    folded.nodes.reverse()
    folded.toposort()
    folded.validate()
    np.testing.assert_allclose(run(folded, x), want, atol=1e-5)


def test_graph_validate_rejects_malformed_graphs():
    w = np.zeros((4, 2, 3, 3), np.float32)
    bad = [
        ([Node("a", "conv2d", ["x"], Conv2dAttrs(), {"weight": w}), Node("a", "relu", ["a"])], "already used"),
        ([Node("a", "relu", ["y"])], "not a graph input"),
        ([Node("a", "sigmoid", ["x"])], "unknown op"),
        ([Node("a", "conv2d", ["x"], None, {"weight": w})], "Conv2dAttrs"),
        ([Node("a", "conv2d", ["x"], Conv2dAttrs(), {})], "missing parameter 'weight'"),
        ([Node("a", "add", ["x"])], "2 input"),
        ([Node("a", "conv2d", ["x"], Conv2dAttrs(), {"weight": w[0]})], "4 dims"),
    ]
    for nodes, msg in bad:
        with pytest.raises(ValueError, match=msg):
            Graph(["x"], nodes, ["a"])
    with pytest.raises(ValueError, match="groups"):
        Conv2dAttrs(groups=0)
    with pytest.raises(ValueError, match="half the kernel"):
        from minquant.graph import MaxPool2dAttrs
        MaxPool2dAttrs(2, 2, padding=2)


def test_executor_intermediates_hook_and_input_checks():
    g = _small_graph()
    x = np.random.default_rng(2).standard_normal((2, 2, 5, 5)).astype(np.float32)
    out, values = run(g, x, intermediates=True)
    assert list(values) == ["x", "conv", "bn", "relu", "add"]
    np.testing.assert_array_equal(out, run(g, x))
    np.testing.assert_array_equal(values["relu"], np.maximum(values["bn"], 0))
    seen = []
    run(g, x, hook=lambda name, v: seen.append((name, v.shape)))
    assert seen == [("x", (2, 2, 5, 5))] + [(n, (2, 4, 5, 5)) for n in ("conv", "bn", "relu", "add")]
    with pytest.raises(ValueError, match="float32"):
        run(g, x.astype(np.float64))
    with pytest.raises(ValueError, match="expects"):
        run(g, x[:, :1])
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        run(g, bad)


# ----------------------------------------------------------------------------------------------------------
# Every float op against its torch.nn.functional counterpart
# ----------------------------------------------------------------------------------------------------------

def _randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@OPS_SETTINGS
@given(groups=st.integers(1, 3), cin_g=st.integers(1, 3), cout_g=st.integers(1, 3), depthwise=st.booleans(),
       k=st.tuples(st.integers(1, 4), st.integers(1, 4)), stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       hw=st.tuples(st.integers(1, 11), st.integers(1, 11)), n=st.integers(1, 3), bias=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_conv2d_matches_torch(groups, cin_g, cout_g, depthwise, k, stride, padding, dilation, hw, n, bias, seed):
    if depthwise:
        cin_g = 1
    cin, cout = groups * cin_g, groups * cout_g
    for size, kk, p, d in zip(hw, k, padding, dilation):
        assume(size + 2 * p - d * (kk - 1) - 1 >= 0)
    rng = np.random.default_rng(seed)
    x, w = _randn(rng, n, cin, *hw), _randn(rng, cout, cin_g, *k)
    b = _randn(rng, cout) if bias else None
    ours = F.conv2d(x, w, b, stride, padding, dilation, groups)
    ref = TF.conv2d(_t(x), _t(w), None if b is None else _t(b), stride, padding, dilation, groups).numpy()
    assert ours.shape == ref.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_conv2d_chunks_large_batches():
    rng = np.random.default_rng(4)
    x, w, b = _randn(rng, 5, 6, 9, 9), _randn(rng, 6, 2, 3, 3), _randn(rng, 6)
    whole = F.conv2d(x, w, b, 2, 1, 1, 3)
    np.testing.assert_array_equal(np.concatenate([F.conv2d(x[i:i + 1], w, b, 2, 1, 1, 3) for i in range(5)]),
                                  whole)
    with pytest.raises(ValueError, match="groups"):
        F.conv2d(x, w, b, groups=4)
    with pytest.raises(ValueError, match="float32"):
        F.conv2d(x.astype(np.float64), w)


def _pool_case():
    return dict(k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
                stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
                pad=st.tuples(st.integers(0, 2), st.integers(0, 2)),
                hw=st.tuples(st.integers(1, 10), st.integers(1, 10)), ceil_mode=st.booleans(),
                seed=st.integers(0, 2 ** 16))


@OPS_SETTINGS
@given(dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)), **_pool_case())
def test_max_pool2d_matches_torch(k, stride, pad, hw, ceil_mode, seed, dilation):
    assume(pad[0] <= k[0] // 2 and pad[1] <= k[1] // 2)
    x = _randn(np.random.default_rng(seed), 2, 3, *hw)
    try:
        ref = TF.max_pool2d(_t(x), k, stride, pad, dilation, ceil_mode).numpy()
    except RuntimeError:  # torch refuses: output would be empty
        with pytest.raises(ValueError):
            F.max_pool2d(x, k, stride, pad, dilation, ceil_mode)
        return
    np.testing.assert_array_equal(F.max_pool2d(x, k, stride, pad, dilation, ceil_mode), ref)


@OPS_SETTINGS
@given(count_include_pad=st.booleans(), divisor=st.sampled_from([None, None, 1, 3, 7]), **_pool_case())
def test_avg_pool2d_matches_torch(k, stride, pad, hw, ceil_mode, seed, count_include_pad, divisor):
    assume(pad[0] <= k[0] // 2 and pad[1] <= k[1] // 2)
    x = _randn(np.random.default_rng(seed), 2, 3, *hw)
    args = (k, stride, pad, ceil_mode, count_include_pad, divisor)
    try:
        ref = TF.avg_pool2d(_t(x), *args).numpy()
    except RuntimeError:
        with pytest.raises(ValueError):
            F.avg_pool2d(x, *args)
        return
    ours = F.avg_pool2d(x, *args)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


@OPS_SETTINGS
@given(hw=st.tuples(st.integers(1, 13), st.integers(1, 13)), out=st.tuples(st.integers(1, 7), st.integers(1, 7)),
       seed=st.integers(0, 2 ** 16))
def test_adaptive_avg_pool2d_matches_torch(hw, out, seed):
    x = _randn(np.random.default_rng(seed), 2, 3, *hw)
    ref = TF.adaptive_avg_pool2d(_t(x), out).numpy()
    np.testing.assert_allclose(F.adaptive_avg_pool2d(x, out), ref, rtol=1e-6, atol=1e-6)
    assert F.adaptive_pool_bounds(10, 4) == [(0, 3), (2, 5), (5, 8), (7, 10)]  # overlapping windows


@OPS_SETTINGS
@given(shape=st.sampled_from([(2, 5), (2, 5, 7), (3, 4, 6, 5)]), eps=st.sampled_from([1e-5, 1e-3, 0.1]),
       seed=st.integers(0, 2 ** 16))
def test_batch_norm_and_linear_match_torch(shape, eps, seed):
    rng = np.random.default_rng(seed)
    x = _randn(rng, *shape)
    c = shape[1]
    mean, var = _randn(rng, c), rng.uniform(0.1, 3, c).astype(np.float32)
    w, b = rng.uniform(0.5, 1.5, c).astype(np.float32), _randn(rng, c)
    ref = TF.batch_norm(_t(x), _t(mean), _t(var), _t(w), _t(b), False, 0.1, eps).numpy()
    np.testing.assert_allclose(F.batch_norm(x, mean, var, w, b, eps), ref, rtol=1e-5, atol=1e-6)
    lw, lb = _randn(rng, 4, shape[-1]), _randn(rng, 4)
    np.testing.assert_allclose(F.linear(x, lw, lb), TF.linear(_t(x), _t(lw), _t(lb)).numpy(), rtol=1e-5, atol=1e-5)


def test_activations_match_torch_including_breakpoints():
    rng = np.random.default_rng(5)
    x = np.concatenate([np.array([-1e30, -6, -3, -1e-7, 0, 1e-7, 3, 6, 7, 1e30], np.float32),
                        (rng.standard_normal(2000) * 5).astype(np.float32)]).reshape(2, -1)
    for ours, ref in ((F.relu, TF.relu), (F.relu6, TF.relu6), (F.hardswish, TF.hardswish),
                      (F.hardsigmoid, TF.hardsigmoid)):
        np.testing.assert_allclose(ours(x), ref(_t(x)).numpy(), rtol=1e-6, atol=1e-7, err_msg=ours.__name__)
    assert F.dropout(x) is x and F.identity(x) is x


def test_elementwise_cat_flatten_reshape_match_torch():
    rng = np.random.default_rng(6)
    a, s = _randn(rng, 2, 4, 3, 5), _randn(rng, 2, 4, 1, 1)
    np.testing.assert_array_equal(F.mul(a, s), (_t(a) * _t(s)).numpy())  # squeeze-excite broadcasting
    np.testing.assert_array_equal(F.add(a, a[:1]), (_t(a) + _t(a[:1])).numpy())
    with pytest.raises(ValueError, match="broadcast"):
        F.add(a, _randn(rng, 2, 3, 1, 1))
    for dim in (1, 2, 3):
        b = _randn(rng, *[2 if i == dim else n for i, n in enumerate(a.shape)])
        np.testing.assert_array_equal(F.cat([a, b], dim), torch.cat([_t(a), _t(b)], dim).numpy())
    for start, end in ((1, -1), (2, 3), (1, 2), (3, 3)):
        np.testing.assert_array_equal(F.flatten(a, start, end), torch.flatten(_t(a), start, end).numpy())
    np.testing.assert_array_equal(F.reshape(a, (12, 5)), _t(a).reshape(2, 12, 5).numpy())
    with pytest.raises(ValueError, match="cannot become"):
        F.reshape(a, (7, 5))
