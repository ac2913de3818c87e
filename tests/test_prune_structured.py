"""Structured pruning: the dependency graph, physical channel removal on TinyCNN / ResNet-18 /
MobileNetV2 (random init, no downloads), reload without pickle, and the zero-channel identity check."""
import copy
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune
import torchvision

from minquant.prune import (apply_architecture, build_graph, channel_importance, dead_channels,
                            describe_architecture, load_pruned, model_report, prune_channels,
                            remove_zero_channels, save_pruned, select_channels)
from minquant.data.zoo import TinyCNN, load_state_npz, save_state_npz

torch.set_num_threads(1)
SMALL = (1, 3, 64, 64)  # ImageNet nets run on 64×64 too (adaptive pooling): fast structural tests


def _params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


@pytest.fixture(scope="module")
def mobilenet_v2():
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v2().eval()


def test_tinycnn_graph():
    g = build_graph(TinyCNN(), (1, 1, 28, 28))
    by_producer = {tuple(gr.producers): gr for gr in g.groups}
    conv1, conv2, fc = by_producer[("features.0",)], by_producer[("features.2",)], by_producer[("classifier",)]
    assert conv1.prunable and conv1.channels == 32 and conv1.consumers == [("features.2", 1)]
    # the flatten of 64 × 4 × 4: each channel is 16 consecutive Linear inputs
    assert conv2.prunable and conv2.channels == 64 and conv2.consumers == [("classifier", 16)]
    assert fc.frozen and "model output" in fc.frozen_reasons[0]
    assert len(g.prunable_groups()) == 2


def test_resnet_residual_and_mobilenet_depthwise_coupling(resnet18, mobilenet_v2):
    g = build_graph(resnet18, SMALL)
    stem = g.group_of("conv1")
    # stem output is added to layer1's block outputs: one group, every member slices the same channels
    assert set(stem.producers) == {"conv1", "layer1.0.conv2", "layer1.1.conv2"}
    assert {"bn1", "layer1.0.bn2", "layer1.1.bn2"} <= set(stem.channelwise)
    assert g.group_of("layer2.0.downsample.0") is g.group_of("layer2.1.conv2")
    assert ("fc", 1) in g.group_of("layer4.1.conv2").consumers
    assert g.group_of("fc").frozen
    m = build_graph(mobilenet_v2, SMALL)
    hidden = m.group_of("features.2.conv.0.0")  # 1×1 expand conv → BN → depthwise conv → BN
    assert "features.2.conv.1.0" in hidden.channelwise and hidden.consumers == [("features.2.conv.2", 1)]
    assert m.group_of("features.2.conv.2") is m.group_of("features.3.conv.2")  # residual add
    assert not m.group_of("features.1.conv.1") is m.group_of("features.2.conv.2")  # no add there


def test_tinycnn_half_channels_exact_sizes():
    torch.manual_seed(0)
    model = TinyCNN().eval()
    pruned = prune_channels(model, (1, 1, 28, 28), 0.5)
    f = pruned.features
    assert (f[0].out_channels, f[2].in_channels, f[2].out_channels) == (16, 16, 32)
    assert pruned.classifier.in_features == 32 * 16 and pruned.classifier.out_features == 10
    assert _params(pruned) == 16 * 9 + 16 + 32 * 16 * 9 + 32 + 512 * 10 + 10
    assert _params(model) == 29066  # the input model is untouched (deep copy)
    x = torch.randn(4, 1, 28, 28)
    assert pruned(x).shape == (4, 10)
    r0, r1 = model_report(model, (1, 1, 28, 28)), model_report(pruned, (1, 1, 28, 28))
    assert r1.macs == 28 * 28 * 16 * 9 + 28 * 28 * 32 * 16 * 9 + 512 * 10
    assert r1.macs < 0.3 * r0.macs
    assert isinstance(pruned, TinyCNN)


def test_tinycnn_kept_channels_are_li_et_al_l1_ranking():
    torch.manual_seed(1)
    model = TinyCNN().eval()
    pruned = prune_channels(model, (1, 1, 28, 28), 0.5)
    w1 = model.features[0].weight.detach()
    keep1 = np.sort(np.argsort(w1.abs().sum((1, 2, 3)).numpy(), kind="stable")[16:])
    np.testing.assert_array_equal(pruned.features[0].weight.detach().numpy(), w1[keep1].numpy())
    # the consumer lost the same input channels, and Linear lost blocks of 16 features
    # every group is ranked on the *unpruned* model, then all are removed at once
    w2 = model.features[2].weight.detach()
    keep2 = np.sort(np.argsort(w2.abs().sum((1, 2, 3)).numpy(), kind="stable")[32:])
    np.testing.assert_array_equal(pruned.features[2].weight.detach().numpy(), w2[keep2][:, keep1].numpy())
    feats = (keep2[:, None] * 16 + np.arange(16)).ravel()
    np.testing.assert_array_equal(pruned.classifier.weight.detach().numpy(),
                                  model.classifier.weight.detach().numpy()[:, feats])


@pytest.mark.parametrize("norm, n", [("l1", 1), ("l2", 2)])
@pytest.mark.parametrize("amount", [0.25, 0.5, 0.8])
def test_single_conv_selection_matches_torch_ln_structured(norm, n, amount):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 24, 3), nn.ReLU(), nn.Conv2d(24, 5, 3))
    g = build_graph(model, (1, 3, 9, 9))
    group = g.group_of("0")
    kept = select_channels(channel_importance(model, group, norm), amount)
    ref = copy.deepcopy(model)
    tprune.ln_structured(ref[0], "weight", amount=amount, n=n, dim=0)
    ref_kept = np.flatnonzero(ref[0].weight_mask.sum((1, 2, 3)).numpy() > 0)
    np.testing.assert_array_equal(kept, ref_kept)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_imagenet_nets_30_percent(name, request):
    model = request.getfixturevalue(name)
    pruned = prune_channels(model, SMALL, 0.3)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = pruned(x)
    assert y.shape == (2, 1000) and torch.isfinite(y).all()
    p0, p1 = _params(model), _params(pruned)
    assert 0.35 * p0 < p1 < 0.75 * p0  # ~(1 − 0.3)² of the conv weights
    r0, r1 = model_report(model, SMALL), model_report(pruned, SMALL)
    assert r1.macs < 0.75 * r0.macs
    assert type(pruned) is type(model)
    # every coupled member agrees: BN sizes equal their conv's, depthwise groups = channels
    for mod in pruned.modules():
        if isinstance(mod, nn.Conv2d) and mod.groups > 1:
            assert mod.groups == mod.in_channels == mod.out_channels


def test_round_to_keeps_multiples(mobilenet_v2):
    pruned = prune_channels(mobilenet_v2, SMALL, 0.3, round_to=8)
    g = build_graph(mobilenet_v2, SMALL)
    for gr in g.prunable_groups():
        c = pruned.get_submodule(gr.producers[0]).out_channels
        assert c % 8 == 0 or c == gr.channels


def test_published_macs_and_params():
    # torchvision's model cards: ResNet-18 1.814 G, MobileNetV2 0.301 G multiply-adds at 224×224
    from torchvision.models import MobileNet_V2_Weights, ResNet18_Weights
    for ctor, w in ((torchvision.models.resnet18, ResNet18_Weights.IMAGENET1K_V1),
                    (torchvision.models.mobilenet_v2, MobileNet_V2_Weights.IMAGENET1K_V1)):
        rep = model_report(ctor(), (1, 3, 224, 224))
        assert round(rep.macs / 1e9, 3) == w.meta["_ops"]
        assert rep.params == w.meta["num_params"]


@pytest.mark.parametrize("name", ["tinycnn", "resnet18"])
def test_save_and_reload_pruned(name, tmp_path, request):
    if name == "tinycnn":
        torch.manual_seed(3)
        model, ctor, shape = TinyCNN().eval(), TinyCNN, (1, 1, 28, 28)
    else:
        model, ctor, shape = request.getfixturevalue(name), torchvision.models.resnet18, SMALL
    pruned = prune_channels(model, shape, 0.4).eval()
    x = torch.randn(2, *shape[1:])
    # one file: npz with the architecture JSON inside (np.load allow_pickle=False)
    save_pruned(pruned, tmp_path / "p.npz")
    back = load_pruned(ctor(), tmp_path / "p.npz")
    assert torch.equal(back(x), pruned(x))
    # or two plain files: a JSON description and the minquant state npz
    (tmp_path / "arch.json").write_text(json.dumps(describe_architecture(pruned)))
    save_state_npz(pruned, tmp_path / "state.npz")
    fresh = ctor().eval()
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_state_npz(fresh, tmp_path / "state.npz")  # the plain architecture cannot take it
    apply_architecture(fresh, json.loads((tmp_path / "arch.json").read_text()))
    load_state_npz(fresh, tmp_path / "state.npz")
    assert torch.equal(fresh(x), pruned(x))


def _kill_channels(model, shape, frac, seed):
    """Make ``frac`` of every prunable group's channels exactly zero at the group's output."""
    rng = np.random.default_rng(seed)
    g = build_graph(model, shape)
    with torch.no_grad():
        for gr in g.prunable_groups():
            idx = torch.as_tensor(np.sort(rng.choice(gr.channels, int(round(frac * gr.channels)), replace=False)))
            for n in gr.producers:
                m = model.get_submodule(n)
                m.weight[idx] = 0
                if m.bias is not None:
                    m.bias[idx] = 0
            for n in gr.channelwise:
                m = model.get_submodule(n)
                if isinstance(m, nn.BatchNorm2d):
                    m.bias[idx] = 0
                    m.running_mean[idx] = 0
                elif m.bias is not None:
                    m.bias[idx] = 0
    return g


def _randomize_bn(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)


def test_zero_channel_removal_is_exact_on_tinycnn():
    """Removing channels that are already all-zero must not change a single bit of the output. Float sums
    reassociate when the channel count changes (oneDNN blocks reductions by channel count), so the check
    uses exact arithmetic: weights, biases and inputs in {−1, 0, 1} and an 8×8 input, so the 4×4 average
    pool divides by 4 (a power of two). Every partial sum is then a multiple of 1/4 bounded by the
    |W|·|x| forward, below 2²² — exactly representable in float32 (24-bit significand)."""
    model = TinyCNN().eval()
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(-1, 2, p.shape, generator=gen).float())
    shape = (1, 1, 8, 8)
    _kill_channels(model, shape, 0.25, seed=4)
    x = torch.randint(-1, 2, (8, 1, 8, 8), generator=gen).float()
    bound = copy.deepcopy(model).double()
    with torch.no_grad():
        for p in bound.parameters():
            p.abs_()
        assert bound(x.double().abs()).max() * 4 < 2 ** 22
    pruned, removed = remove_zero_channels(model, shape)
    assert sum(v.size for v in removed.values()) == 8 + 16
    assert pruned.features[0].out_channels == 24 and pruned.classifier.in_features == 48 * 16
    with torch.no_grad():
        y0 = model(x)
        assert y0.abs().max() > 10
        assert torch.equal(pruned(x), y0)
        # the L1 ranking picks exactly the dead channels (their filter norm is 0): same output
        assert torch.equal(prune_channels(model, shape, 0.25)(x), y0)
        # control: removing live channels as well does change it
        assert not torch.equal(prune_channels(model, (1, 1, 16, 16), 0.5)(x), y0)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_zero_channel_removal_float64_on_imagenet_nets(name, request):
    """Residual adds and depthwise convs: dead channels out, output equal to float64 round-off (a
    mis-sliced channel would change it at O(1))."""
    model = copy.deepcopy(request.getfixturevalue(name)).double()
    _randomize_bn(model, seed=5)
    g = _kill_channels(model, SMALL, 0.25, seed=5)
    dead = dead_channels(model, g)
    assert set(dead) == {gr.gid for gr in g.prunable_groups()}
    pruned, removed = remove_zero_channels(model, SMALL)
    assert _params(pruned) < 0.7 * _params(model)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        y0, y1 = model(x), pruned(x)
    assert y0.abs().max() > 1e-3
    assert (y0 - y1).abs().max() <= 1e-12 * y0.abs().max()


def test_unsupported_ops_raise():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            return self.head(torch.cat([self.a(x), self.b(x)], 1))

    with pytest.raises(ValueError, match="cat"):
        prune_channels(Cat(), (1, 3, 8, 8), 0.5)

    class LN(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.n = nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4)

        def forward(self, x):
            return self.n(self.c(x))

    with pytest.raises(ValueError, match="unsupported layer n"):
        prune_channels(LN(), (1, 3, 8, 8), 0.5)
    with pytest.raises(ValueError, match="not a layer"):
        prune_channels(TinyCNN(), (1, 1, 28, 28), {"conv7": 0.5})
    with pytest.raises(ValueError, match="does not run"):
        prune_channels(TinyCNN(), (1, 3, 28, 28), 0.5)


def test_ignore_and_per_layer_amounts():
    torch.manual_seed(6)
    model = TinyCNN().eval()
    p = prune_channels(model, (1, 1, 28, 28), 0.5, ignore=("features.0",))
    assert p.features[0].out_channels == 32 and p.features[2].out_channels == 32
    p = prune_channels(model, (1, 1, 28, 28), {"features.0": 0.75})
    assert p.features[0].out_channels == 8 and p.features[2].out_channels == 64


def test_hidden_linear_units_are_pruned():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(32, 20), nn.ReLU(), nn.Dropout(), nn.Linear(20, 3)).eval()
    p = prune_channels(model, (1, 1, 10, 10), 0.5)
    assert (p[0].out_channels, p[1].num_features, p[5].in_features, p[5].out_features, p[8].in_features) \
        == (4, 4, 16, 10, 10)
    assert p(torch.randn(2, 1, 10, 10)).shape == (2, 3)


def _consumers_masked(model, graph, kept):
    """The unpruned model with every removed channel cut off at its consumers (their input weights for it
    zeroed): removing the channels must compute the same function."""
    from minquant.prune.structured import _expand

    masked = copy.deepcopy(model)
    with torch.no_grad():
        for gid, k in kept.items():
            gr = graph.groups[gid]
            drop = np.setdiff1d(np.arange(gr.channels), k)
            for n, f in gr.consumers:
                masked.get_submodule(n).weight[:, torch.as_tensor(_expand(drop, f))] = 0
    return masked


class SqueezeExcite(nn.Module):
    """conv → BN → ReLU → x · sigmoid(fc2(relu(fc1(mean(x))))) → mean head → Linear: gating and a mean."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.fc1, self.fc2 = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        g = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return self.head((x * g).mean([2, 3]))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "se"])
def test_pruned_equals_consumer_masked_model(name, request):
    """On any weights (BN statistics random, no dead channels): pruning = cutting the removed channels off
    at every consumer, to float64 round-off."""
    from minquant.prune import remove_channels

    if name == "se":
        torch.manual_seed(8)
        model = SqueezeExcite().eval().double()
    else:
        model = copy.deepcopy(request.getfixturevalue(name)).double()
    _randomize_bn(model, seed=8)
    g = build_graph(model, SMALL)
    if name == "se":  # the gate's producer fc2 is coupled to the conv's channels
        assert set(g.group_of("conv").producers) == {"conv", "fc2"}
    kept = {gr.gid: select_channels(channel_importance(model, gr), 0.3) for gr in g.prunable_groups()}
    pruned = remove_channels(copy.deepcopy(model), g, kept)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        y_masked, y_pruned, y0 = _consumers_masked(model, g, kept)(x), pruned(x), model(x)
    assert (y_masked - y_pruned).abs().max() <= 1e-12 * y_masked.abs().max()
    assert (y0 - y_pruned).abs().max() > 1e-3 * y0.abs().max()  # and pruning did change the function
