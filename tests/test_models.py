"""alexnet_kernels.models: shapes, parameter counts, the torchvision state_dict round trip, custom
against torch backend, the two towers against the grouped single-device formulation, features_at,
DistributedDataParallel (2 gloo processes under torchrun) and bad arguments.

The paper net costs about 0.7 GFLOP per image forward, and the custom backend's ReLUs run under
the Triton interpreter on the CPU, so the CPU tests use one or two images and share the models
they can. The CUDA tests (towers on GPUs, streams) run where a GPU is visible.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import ieee_fp32, rel_err, requires_cuda

from alexnet_kernels import models
from alexnet_kernels.models import LAYERS, alexnet

PAPER_SHAPES = {"conv1": (96, 55, 55), "conv2": (256, 27, 27), "conv3": (384, 13, 13),
                "conv4": (384, 13, 13), "conv5": (256, 13, 13), "fc6": (4096,), "fc7": (4096,)}


def images(n, size=227, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, *((size, size) if isinstance(size, int) else size), generator=g).to(device)


def grads(model, x, out):
    """d(sum(out * fixed weights))/d(parameters, x)."""
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out.device)
    return torch.autograd.grad((out * w).sum(), [*model.parameters(), x])


def assert_grads_close(actual, expected, tol):
    errs = [rel_err(a.to(e.device), e) for a, e in zip(actual, expected)]
    assert max(errs) < tol, errs


@pytest.fixture(scope="module")
def paper_state():
    torch.manual_seed(0)
    return alexnet("paper", backend="torch").state_dict()


def paper(state, **kwargs):
    model = alexnet("paper", **kwargs)
    model.load_state_dict(state)
    return model


# --- shapes, sizes, initialisation --------------------------------------------------------------

def test_paper_output_shape_and_parameter_count():
    model = alexnet("paper", num_classes=10)  # backend="custom"
    assert not any(isinstance(m, (torch.nn.ReLU, torch.nn.Dropout, torch.nn.LocalResponseNorm, torch.nn.MaxPool2d))
                   for m in model.modules())
    # conv1 + ReLU is the package's fused convolution, on the CPU as on CUDA
    import alexnet_kernels.nn as ak_nn
    assert all(isinstance(t.conv1, ak_nn.Conv2d) and t.conv1.relu for t in model.towers)
    with torch.no_grad():
        assert model(images(2)).shape == (2, 10)
    # By hand: per tower conv1 48x3x11x11, conv2 128x48x5x5, conv3 192x256x3x3 (both towers'
    # 2x128 channels), conv4 192x192x3x3, conv5 128x192x3x3, fc6 2048x(2*128*6*6), fc7 2048x4096,
    # each with its biases; fc8 classes x 4096.
    tower = sum(o * i + o for o, i in [(48, 3 * 11 * 11), (128, 48 * 5 * 5), (192, 256 * 3 * 3),
                                       (192, 192 * 3 * 3), (128, 192 * 3 * 3), (2048, 9216), (2048, 4096)])
    assert tower == 28_434_112
    assert sum(p.numel() for p in model.parameters()) == 2 * tower + 10 * 4096 + 10
    assert 2 * tower + 1000 * 4096 + 1000 == 60_965_224  # the paper's "60 million parameters"


def test_paper_init(paper_state):
    for name, t in paper_state.items():
        layer, kind = name.split(".")[-2:]
        if kind == "weight":
            assert abs(t.mean().item()) < 1e-3 and abs(t.std().item() - 0.01) < 1e-3, name
        else:
            assert torch.all(t == (1.0 if layer in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0)), name
    assert sorted({k.split(".")[-2] for k in paper_state}) == sorted([*LAYERS])


def test_caffe_init():
    """init="caffe": Caffe's bvlc_alexnet, weights N(0, 0.01) but fc6 and fc7 N(0, 0.005), biases
    0.1 where the paper has 1; the same for a replaced fc8 as for the first."""
    torch.manual_seed(0)
    model = alexnet("paper", num_classes=10, backend="torch", init="caffe")
    for name, t in model.state_dict().items():
        layer, kind = name.split(".")[-2:]
        if kind == "weight":
            std = 0.005 if layer in ("fc6", "fc7") else 0.01
            assert abs(t.mean().item()) < 1e-3 and abs(t.std().item() - std) < 0.1 * std, name
        else:
            assert torch.all(t == (0.1 if layer in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0)), name
    fc8 = model.replace_fc8(5)
    assert abs(fc8.weight.std().item() - 0.01) < 1e-3 and torch.all(fc8.bias == 0)


def test_torchvision_shapes_and_parameter_count():
    model = alexnet("torchvision", backend="custom").eval()
    reference = torchvision.models.alexnet(weights=None)
    count = sum(p.numel() for p in reference.parameters())
    assert count == 61_100_840
    assert sum(p.numel() for p in model.parameters()) == count
    with torch.no_grad():
        for size in [224, 63, (63, 100), (100, 64)]:
            assert model(images(1, size)).shape == (1, 1000)


# --- torchvision: state_dict round trip, same function -----------------------------------------

@pytest.mark.parametrize("backend", ["torch", "custom"])
def test_torchvision_state_dict_round_trip(backend):
    tv = torchvision.models.alexnet(weights=None).eval()
    ours = alexnet("torchvision", backend=backend).eval()
    assert list(ours.state_dict()) == list(tv.state_dict())
    ours.load_state_dict(tv.state_dict())
    x = images(1, 224)
    with torch.no_grad():
        expected = tv(x)
        torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
        # ... and back: fresh parameters of ours, loaded into torchvision's model.
        torch.manual_seed(1)
        ours = alexnet("torchvision", backend=backend).eval()
        tv.load_state_dict(ours.state_dict())
        expected = tv(x)
        torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def test_torchvision_same_modules_at_same_indices():
    tv = torchvision.models.alexnet(weights=None)
    ours = alexnet("torchvision", backend="torch")
    assert [(n, type(m)) for n, m in ours.named_modules() if n] == [(n, type(m)) for n, m in tv.named_modules() if n]


def test_torchvision_min_size_is_torchvisions():
    tv = torchvision.models.alexnet(weights=None).eval()
    with torch.no_grad():
        tv(images(1, 63))
        with pytest.raises(RuntimeError):
            tv(images(1, 62))
    ours = alexnet("torchvision")
    with pytest.raises(ValueError, match="x: .*at least 63x63, got 62x63"):
        ours(images(1, (62, 63)))


# --- custom backend against torch backend -------------------------------------------------------

def test_backends_agree_paper(paper_state):
    """Same state_dict, training mode without dropout. In float64 the two backends compute the
    same function and gradients to rounding. In fp32 the early layers' gradients are not a matter
    of rounding alone: over random inputs their error against fp64 is either about 1e-6 or about
    1e-3, the latter where some discrete choice (a max-pool's winner between near-equal values, a
    ReLU at about zero) falls the other way under fp32 rounding; torch's own fp32 model does so on
    most inputs (conv1's bias: 5 of the 6 inputs here). So fp32 gradients are held to torch's
    typical fp32 accuracy: the median of each parameter's error over the inputs."""
    models = {(be, dt): paper(paper_state, backend=be, dropout=0.0).to(dt)
              for be, dt in [("torch", torch.float64), ("custom", torch.float64), ("torch", torch.float32),
                             ("custom", torch.float32)]}
    names = [*dict(paper_state), "x"]
    errs = {"torch": [], "custom": []}
    for seed in range(6):
        x = images(1, seed=seed)
        results = {}
        for (backend, dtype), model in models.items():
            xd = x.to(dtype).requires_grad_()
            out = model(xd)
            results[backend, dtype] = out, grads(model, xd, out)
        (out64, g64), (out_c64, g_c64), (out_t, g_t), (out_c, g_c) = results.values()
        torch.testing.assert_close(out_c64, out64, rtol=1e-10, atol=1e-12)
        assert_grads_close(g_c64, g64, 1e-10)
        torch.testing.assert_close(out_c, out_t, rtol=1e-4, atol=1e-5 * out_t.abs().max().item())
        errs["torch"].append([rel_err(t, ref) for t, ref in zip(g_t, g64)])
        errs["custom"].append([rel_err(c, ref) for c, ref in zip(g_c, g64)])
    median = {be: torch.tensor(e).median(dim=0).values for be, e in errs.items()}
    for name, c, t in zip(names, median["custom"], median["torch"]):
        assert c <= 2 * t + 1e-5, (name, c.item(), t.item())


def test_backends_agree_torchvision():
    torch.manual_seed(2)
    state = alexnet("torchvision", backend="torch").state_dict()
    x = images(2, 96).requires_grad_()
    results = {}
    for backend in ("torch", "custom"):
        model = alexnet("torchvision", backend=backend).eval()
        model.load_state_dict(state)
        out = model(x)
        results[backend] = out, grads(model, x, out)
    (out_t, g_t), (out_c, g_c) = results["torch"], results["custom"]
    torch.testing.assert_close(out_c, out_t, rtol=1e-4, atol=1e-5 * out_t.abs().max().item())
    assert_grads_close(g_c, g_t, 1e-4)


class _MaskedDropout(torch.nn.Module):
    """Dropout with a given mask: x * keep / (1 - p)."""

    def __init__(self, keep, p):
        super().__init__()
        self.keep, self.scale = keep, 1 / (1 - p)

    def forward(self, x):
        return x * self.keep * self.scale


def test_torchvision_fc6_input_dropout_is_dropout():
    """The custom backend drops fc6's input with relu_dropout (backends.py, dropout_of_relu). That
    input is nonnegative, so the forward is dropout's; where it is exactly 0, relu_dropout's
    backward stops the gradient and dropout's passes it on, but conv5's ReLU stops it there anyway.
    So the output and every parameter's gradient equal those of plain dropout with the same mask,
    whatever that mask holds at the zeros."""
    torch.manual_seed(0)
    model = alexnet("torchvision", num_classes=10, backend="custom").train()
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())  # every op ours
    with torch.no_grad():
        model.features[10].bias[:64] = -1e3  # 64 of conv5's channels dead: fc6 inputs at exactly 0
    model.classifier[2].eval()  # fc7's input dropout off: fc6's is the one under test
    seen = {}

    def watch(module, inputs, output):  # fc6's input, the dropout's output, the gradient reaching the input
        inputs[0].register_hook(lambda g: seen.update(dh=g))
        seen.update(h=inputs[0].detach(), y=output.detach())

    model.classifier[0].register_forward_hook(watch)
    x = images(3, 64).requires_grad_()
    out = model(x)
    got = grads(model, x, out)
    dh = seen["dh"]
    h, y, p = seen["h"], seen["y"], model.classifier[0].p
    assert (h >= 0).all() and (h == 0).sum() >= 3 * 64 * 36 and (h > 0).any()
    kept = y != 0
    assert (kept & (h > 0)).any() and (~kept & (h > 0)).any()
    # Where h > 0 relu_dropout's mask is y != 0; at the zeros, every other element kept.
    keep = torch.where(h > 0, kept, torch.arange(h.numel()).view(h.shape) % 2 == 0).float()
    model.classifier[0] = _MaskedDropout(keep, p)
    model.classifier[0].register_forward_hook(watch)
    out_plain = model(x)
    assert torch.equal(out_plain, out)
    for name, a, b in zip([n for n, _ in model.named_parameters()] + ["x"], got, grads(model, x, out_plain)):
        assert torch.equal(a, b), name
    # The two gradients reaching fc6's input do differ, at the zeros only.
    assert torch.equal(dh[h > 0], seen["dh"][h > 0]) and not torch.equal(dh, seen["dh"])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=requires_cuda)])
@pytest.mark.parametrize("variant", ["paper", "torchvision"])
def test_compile_whole_model_fullgraph(paper_state, variant, device):
    """The custom backend's whole network under torch.compile(fullgraph=True), training mode without
    dropout: one graph (a break is an error), forward and gradients as eager. The CPU traces with
    aot_eager (in seconds), the GPU with Inductor. float64, since Inductor fuses and reorders the
    arithmetic around the kernels and the paper init amplifies such roundings in the early
    layers' gradients (test_backends_agree_paper). The paper variant with streams=False, as
    train/run.py --compile builds it."""
    import torch._dynamo

    torch.manual_seed(3)
    if variant == "paper":
        model, size = paper(paper_state, devices=(device,), streams=False, dropout=0.0), 227
    else:
        model, size = alexnet("torchvision", devices=(device,), dropout=0.0), 96
    model = model.double()
    x = images(2, size, seed=5, device=device).double().requires_grad_()
    out = model(x)
    expected = out, grads(model, x, out)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")
    out = compiled(x)
    assert rel_err(out, expected[0]) < 1e-10
    assert_grads_close(grads(model, x, out), expected[1], 1e-7)


# --- two towers: the grouped single-device formulation, devices -------------------------------

def test_towers_equal_grouped_formulation(paper_state):
    """Towers on two devices against the grouped single-device formulation, forward and
    gradients, in float64 so that the comparison is of the functions, not of fp32 roundings
    (the early layers' gradients amplify roundings about a million times: see
    test_backends_agree_paper; a wrong connection between the towers gives errors of order 1)."""
    model = paper(paper_state, devices=("cpu", "cpu"), dropout=0.0).double()
    assert {p.device for p in model.parameters()} == {torch.device("cpu")}
    x = images(1, seed=3).double().requires_grad_()
    out = model(x)
    expected = model.grouped_forward(x)
    assert rel_err(out, expected) < 1e-10
    assert_grads_close(grads(model, x, out), grads(model, x, expected), 1e-7)


def test_grouped_formulation_needs_lrn_per_tower(paper_state):
    """LRN over all 96 channels at once would mix the towers where they meet: the formulation
    is only the same function with LRN on each tower's half."""
    model = paper(paper_state, backend="torch").eval()
    t0, t1 = model.towers
    x = images(1, seed=4)
    with torch.no_grad():
        w = torch.cat([t0.conv1.weight, t1.conv1.weight])
        b = torch.cat([t0.conv1.bias, t1.conv1.bias])
        h = F.relu(F.conv2d(x, w, b, stride=4))
        torch.testing.assert_close(model.features_at(x, "conv1"), h)
        per_tower = torch.cat([F.local_response_norm(c, 5, 1e-4, 0.75, 2.0) for c in h.chunk(2, 1)], 1)
        assert not torch.equal(F.local_response_norm(h, 5, 1e-4, 0.75, 2.0), per_tower)
        torch.testing.assert_close(torch.cat([t.lrn1(c) for t, c in zip(model.towers, h.chunk(2, 1))], 1), per_tower)


def test_torchvision_on_one_device():
    model = alexnet("torchvision", devices=("cpu",))
    assert {p.device for p in model.parameters()} == {torch.device("cpu")}


# --- features_at --------------------------------------------------------------------------------

def test_features_at_paper(paper_state):
    model = paper(paper_state, backend="torch", devices=("cpu", "cpu")).eval()
    x = images(1, seed=6)
    with torch.no_grad():
        for layer, shape in PAPER_SHAPES.items():
            h = model.features_at(x, layer)
            assert h.shape == (1, *shape) and (h >= 0).all(), layer  # after the ReLU
        out = model.features_at(x, "fc8")
        torch.testing.assert_close(out, model(x), rtol=0, atol=0)
        torch.testing.assert_close(model.fc8(h), out, rtol=0, atol=0)  # h: fc7's


@pytest.mark.parametrize("backend", ["torch", "custom"])
def test_features_at_torchvision_matches_torchvision_modules(backend):
    tv = torchvision.models.alexnet(weights=None).eval()
    ours = alexnet("torchvision", backend=backend).eval()
    ours.load_state_dict(tv.state_dict())
    x = images(2, 80)
    with torch.no_grad():
        h = torch.flatten(tv.avgpool(tv.features(x)), 1)
        expected = {"conv1": tv.features[:2](x), "conv2": tv.features[:5](x), "conv3": tv.features[:8](x),
                    "conv4": tv.features[:10](x), "conv5": tv.features[:12](x),
                    "fc6": tv.classifier[:4](h), "fc7": tv.classifier[:6](h), "fc8": tv(x)}
        for layer in LAYERS:
            e = expected[layer]
            torch.testing.assert_close(ours.features_at(x, layer), e, rtol=1e-4,
                                       atol=1e-5 * e.abs().max().item(), msg=layer)


# --- ablations: remove= ---------------------------------------------------------------------------

ALL_SUBSETS = [tuple(r for i, r in enumerate(models.REMOVABLE) if mask >> i & 1) for mask in range(16)]


def layer_keys(state, layer):
    """The state_dict keys of one layer (paper: towers.<t>.<layer>.*; torchvision: its index)."""
    index = {"conv1": "features.0.", "conv2": "features.3.", "conv3": "features.6.", "conv4": "features.8.",
             "conv5": "features.10.", "fc6": "classifier.1.", "fc7": "classifier.4.", "fc8": "classifier.6."}
    return {k for k in state if f".{layer}." in f".{k}" or k.startswith(index[layer])}


@pytest.fixture(scope="module")
def torchvision_full_state():
    torch.manual_seed(3)
    return alexnet("torchvision", num_classes=10, backend="torch").state_dict()


@pytest.mark.parametrize("remove", ALL_SUBSETS, ids=lambda r: "-".join(r) or "none")
def test_ablation_torchvision_every_subset(torchvision_full_state, remove):
    model = alexnet("torchvision", num_classes=10, backend="custom", remove=remove).eval()
    assert model.removed == remove and model.layers == tuple(name for name in LAYERS if name not in remove)
    x = images(1, 64)
    with torch.no_grad():
        assert model(x).shape == (1, 10)
        for layer in model.layers:
            assert model.features_at(x, layer).shape[0] == 1, layer
    for layer in remove:
        with pytest.raises(ValueError, match=f"features_at: layer {layer} was removed from this network"):
            model.features_at(x, layer)
    # The kept layers keep their keys; only the weights of a layer whose input changed change shape.
    full, state = torchvision_full_state, model.state_dict()
    assert set(state) == set(full) - set().union(*(layer_keys(full, name) for name in remove))
    # (torchvision's conv5 reads 256 channels from conv4, 384 from conv3, 192 from conv2)
    new_input = {"conv4": "conv3" in remove, "conv5": "conv4" in remove,
                 "fc7": "fc6" in remove, "fc8": "fc6" in remove and "fc7" in remove}
    for key in state:
        layer = next(name for name in LAYERS if key in layer_keys(full, name))
        reshaped = new_input.get(layer, False) and key.endswith("weight")
        assert (state[key].shape != full[key].shape) == reshaped, key
    # No dropout is left before a layer that was not the input of a kept fc layer.
    dropouts = [i for i, m in enumerate(model.classifier) if isinstance(m, torch.nn.Dropout)
                or type(m).__name__ == "ReLUDropout"]
    expected = {(): [0, 2], ("fc6",): [3], ("fc7",): [0], ("fc6", "fc7"): []}
    assert dropouts == expected[tuple(name for name in remove if name.startswith("fc"))]


def test_ablation_parameter_counts_by_hand():
    def count(model):
        return sum(p.numel() for p in model.parameters())

    # torchvision, 1000 classes, full: 61,100,840 (test_torchvision_shapes_and_parameter_count).
    conv3, conv4 = 384 * 192 * 9 + 384, 256 * 384 * 9 + 256                 # 663,936 and 884,992
    conv5, conv5_from_conv2 = 256 * 256 * 9 + 256, 256 * 192 * 9 + 256   # 590,080 and 442,624
    assert count(alexnet("torchvision", remove=("conv3", "conv4"))) == \
        61_100_840 - conv3 - conv4 - conv5 + conv5_from_conv2 == 59_404_456
    fc6, fc7 = 9216 * 4096 + 4096, 4096 * 4096 + 4096                     # 37,752,832 and 16,781,312
    fc8, fc8_from_pool5 = 1000 * 4096 + 1000, 1000 * 9216 + 1000          # 4,097,000 and 9,217,000
    assert count(alexnet("torchvision", remove=("fc6", "fc7"))) == \
        61_100_840 - fc6 - fc7 - fc8 + fc8_from_pool5 == 11_686_696
    assert count(alexnet("torchvision", remove=("fc7",))) == 61_100_840 - fc7
    # paper, 1000 classes, full: 60,965,224 (test_paper_output_shape_and_parameter_count); per
    # tower conv3 192x256x3x3, conv4 192x192x3x3, conv5 128x192x3x3 -> 128x128x3x3 (pool2's
    # 128 channels); fc6 2048x9216, fc7 2048x4096, and fc8 1000x4096 -> 1000x9216.
    tower_convs = (192 * 256 * 9 + 192) + (192 * 192 * 9 + 192) + (128 * 192 * 9 + 128)
    assert count(alexnet("paper", backend="torch", remove=("conv3", "conv4"))) == \
        60_965_224 - 2 * (tower_convs - (128 * 128 * 9 + 128)) == 59_268_712
    tower_fcs = (2048 * 9216 + 2048) + (2048 * 4096 + 2048)
    assert count(alexnet("paper", backend="torch", remove=("fc6", "fc7"))) == \
        60_965_224 - 2 * tower_fcs - fc8 + fc8_from_pool5 == 11_551_080


PAPER_ABLATION_SHAPES = {  # features_at shapes of the layers whose input changed
    ("conv3",): {"conv4": (384, 13, 13), "conv5": (256, 13, 13)},
    ("conv3", "conv4"): {"conv5": (256, 13, 13), "fc6": (4096,)},
    ("fc6", "fc7"): {"conv5": (256, 13, 13)},
    ("conv4", "fc6"): {"conv5": (256, 13, 13), "fc7": (4096,)},
    ("conv3", "conv4", "fc6", "fc7"): {"conv5": (256, 13, 13)},
}


@pytest.mark.parametrize("remove", list(PAPER_ABLATION_SHAPES), ids="-".join)
def test_ablation_paper_shapes_and_init(remove):
    model = alexnet("paper", num_classes=10, backend="torch", remove=remove).eval()
    names = {k.split(".")[-2] for k in model.state_dict()}
    assert names == set(LAYERS) - set(remove) and model.layers == tuple(name for name in LAYERS if name in names)
    for name, t in model.state_dict().items():  # the paper's init for what is left
        layer, kind = name.split(".")[-2:]
        if kind == "bias":
            assert torch.all(t == (1.0 if layer in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0)), name
    x = images(1, seed=11)
    with torch.no_grad():
        assert model(x).shape == (1, 10)
        for layer, shape in PAPER_ABLATION_SHAPES[remove].items():
            assert model.features_at(x, layer).shape == (1, *shape), layer
        torch.testing.assert_close(model.features_at(x, "fc8"), model(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match=f"features_at: layer {remove[0]} was removed"):
        model.features_at(x, remove[0])


@pytest.mark.parametrize("remove", [("conv3", "fc6"), ("conv4", "fc7"), ("conv3", "conv4", "fc6", "fc7")],
                         ids="-".join)
def test_ablation_towers_equal_grouped_formulation(remove):
    """As test_towers_equal_grouped_formulation, for ablated nets: without conv3, conv4 reads its
    own tower's pool2 output (a groups=2 convolution); without fc6, fc7 reads both towers'."""
    torch.manual_seed(5)
    model = alexnet("paper", num_classes=10, devices=("cpu", "cpu"), dropout=0.0, remove=remove).double()
    x = images(1, seed=12).double().requires_grad_()
    out = model(x)
    expected = model.grouped_forward(x)
    assert rel_err(out, expected) < 1e-10
    assert_grads_close(grads(model, x, out), grads(model, x, expected), 1e-7)


@pytest.mark.parametrize("variant, remove", [("torchvision", ("conv3", "fc6")), ("torchvision", ("conv4", "fc7")),
                                             ("torchvision", ("fc6", "fc7")), ("paper", ("conv3", "fc7"))],
                         ids=lambda v: "-".join(v) if isinstance(v, tuple) else v)
def test_ablation_backends_agree(variant, remove):
    torch.manual_seed(6)
    state = alexnet(variant, num_classes=10, backend="torch", remove=remove).state_dict()
    x = images(2 if variant == "torchvision" else 1, 64 if variant == "torchvision" else 227, seed=13)
    x.requires_grad_()
    results = {}
    for backend in ("torch", "custom"):
        model = alexnet(variant, num_classes=10, backend=backend, remove=remove).eval()
        model.load_state_dict(state)
        out = model(x)
        results[backend] = out, grads(model, x, out)
    (out_t, g_t), (out_c, g_c) = results["torch"], results["custom"]
    torch.testing.assert_close(out_c, out_t, rtol=1e-4, atol=1e-5 * out_t.abs().max().item())
    if variant == "torchvision":  # the paper's fp32 gradients: see test_backends_agree_paper
        assert_grads_close(g_c, g_t, 1e-4)


@pytest.mark.parametrize("variant", ["paper", "torchvision"])
def test_replace_fc8_and_layer_modules(variant):
    torch.manual_seed(7)
    model = alexnet(variant, num_classes=3, backend="torch", remove=("fc7",))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fc8 = model.replace_fc8(5)
    assert model.layer_modules("fc8") == [fc8] and (fc8.out_features, fc8.in_features) == (5, 4096)
    state = model.state_dict()
    assert set(state) == set(before)
    for key, value in state.items():
        if key in layer_keys(state, "fc8"):
            assert value.shape[0] == 5, key
        else:
            assert torch.equal(value, before[key]), key
    if variant == "paper":  # the paper's fc8 init: N(0, 0.01), biases 0
        assert abs(fc8.weight.std().item() - 0.01) < 1e-3 and torch.all(fc8.bias == 0)
        assert model.layer_modules("conv2") == [t.conv2 for t in model.towers]
    else:
        assert model.layer_modules("conv2") == [model.features[3]]
    with torch.no_grad():
        x = images(1, 227 if variant == "paper" else 64)
        assert model(x).shape == (1, 5)
    with pytest.raises(ValueError, match="layer_modules: layer fc7 was removed"):
        model.layer_modules("fc7")
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        model.replace_fc8(0)


# --- data parallel --------------------------------------------------------------------------------

def test_ddp_gradients_equal_one_process(tmp_path):
    """Two gloo processes under torchrun (a free port: --standalone), each on one image, against
    one process over both: see tests/ddp_worker.py."""
    report = tmp_path / "report.json"
    worker = Path(__file__).with_name("ddp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(worker), str(report)]
    env = dict(os.environ, TRITON_INTERPRET=os.environ.get("TRITON_INTERPRET", "1"))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True)
    try:
        log, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers: the group started here
        log, _ = proc.communicate()
        pytest.fail(f"torchrun timed out:\n{log[-5000:]}")
    assert proc.returncode == 0, log[-5000:]
    errors = json.loads(report.read_text())
    assert len(errors) == 2, errors
    assert max(errors.values()) < 1e-4, errors


# --- bad arguments --------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(variant="vgg"), "variant"),
    (dict(backend="cudnn"), "backend"),
    (dict(num_classes=0), "num_classes"),
    (dict(num_classes=10.0), "num_classes"),
    (dict(dropout=1.0), "dropout"),
    (dict(devices=("cpu", "cpu", "cpu")), "devices: the paper variant has 2 tower"),
    (dict(variant="torchvision", devices=("cpu", "cpu")), "devices: the torchvision variant has 1 tower"),
    (dict(devices=()), "devices"),
    (dict(devices=("gpu0",)), "devices: 'gpu0' is not a device"),
    (dict(devices=("cuda:7", "cpu")), "devices: 'cuda:7'"),
    (dict(devices=("cpu", "mps")), "devices: 'mps'"),
    (dict(devices=3), "devices"),
    (dict(remove=("conv3", "pool5", "fc8")), "remove: 'pool5', 'fc8' cannot be removed; the removable layers are "
                                              "conv3, conv4, fc6, fc7"),
    (dict(variant="torchvision", remove="conv1"), "remove: 'conv1' cannot be removed"),
    (dict(remove=3), "remove must be a sequence of layer names, got 3"),
    (dict(init="he"), "init must be one of 'paper', 'caffe', got 'he'"),
])
def test_bad_arguments_raise_before_building(monkeypatch, kwargs, match):
    def built(*args, **kw):
        raise AssertionError("a model was built before the arguments were checked")

    monkeypatch.setattr(models, "PaperAlexNet", built)
    monkeypatch.setattr(models, "TorchvisionAlexNet", built)
    with pytest.raises(ValueError, match=match):
        alexnet(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_cuda_without_gpu_is_a_value_error():
    with pytest.raises(ValueError, match="devices: 'cuda' is a CUDA device, but no CUDA device is visible"):
        alexnet(devices="cuda")


@pytest.fixture(scope="module")
def guarded():
    """One model per variant that fails the test if its first convolution ever runs."""
    out = {}
    for variant in ("paper", "torchvision"):
        model = out[variant] = alexnet(variant)
        first = model.towers[0].conv1 if variant == "paper" else model.features[0]
        first.register_forward_pre_hook(lambda *_: pytest.fail("the network ran"))
    return out


BAD_INPUTS = [
    ("paper", torch.zeros(1, 3, 224, 224), "x: the paper variant takes 227x227 images, got 224x224"),
    ("paper", torch.zeros(1, 1, 227, 227),
     r"x must be a batch of RGB images \(N, 3, H, W\), got shape \(1, 1, 227, 227\)"),
    ("paper", torch.zeros(3, 227, 227), r"x must be a batch of RGB images"),
    ("torchvision", torch.zeros(1, 4, 224, 224), r"x must be a batch of RGB images"),
    ("torchvision", torch.zeros(2, 3, 224, 40),
     "x: the torchvision variant takes images of at least 63x63, got 224x40"),
]


@pytest.mark.parametrize("variant, x, match, call", [
    (*case, call) for case in BAD_INPUTS
    for call in ("forward", "features_at", "grouped_forward") if case[0] == "paper" or call != "grouped_forward"
])
def test_bad_input_raises_before_any_work(guarded, variant, x, match, call):
    model = guarded[variant]
    with pytest.raises(ValueError, match=match):
        model.features_at(x, "conv1") if call == "features_at" else getattr(model, call)(x)


@pytest.mark.parametrize("variant", ["paper", "torchvision"])
def test_bad_layer_name(guarded, variant):
    with pytest.raises(ValueError, match="features_at: layer must be one of conv1, .*, fc8, got 'pool5'"):
        guarded[variant].features_at(images(1), "pool5")


# --- CUDA: towers on GPUs, streams ------------------------------------------------------------------

def _cuda_device_pairs():
    pairs = [("cuda:0",), ("cuda:0", "cpu"), ("cpu", "cuda:0")]
    if torch.cuda.device_count() >= 2:
        pairs.append(("cuda:0", "cuda:1"))
    return pairs


@requires_cuda
@pytest.mark.parametrize("streams", [True, False])
@pytest.mark.parametrize("devices", _cuda_device_pairs(), ids=str)
def test_cuda_towers_equal_grouped_formulation(paper_state, devices, streams):
    """float64 (the custom ReLU then takes its PyTorch path; LRN and pooling are the kernels):
    a missing stream or device synchronization shows as a large error, twice over so that the
    second step reuses the memory the first one freed."""
    model = paper(paper_state, devices=devices, streams=streams, dropout=0.0).double()
    x = images(4, seed=8, device="cuda:0").double().requires_grad_()
    for _ in range(2):
        out = model(x)
        assert out.device == next(model.towers[0].parameters()).device
        expected = model.grouped_forward(x)
        assert rel_err(out.to(x.device), expected) < 1e-10
        assert_grads_close(grads(model, x, out), grads(model, x, expected), 1e-7)


@requires_cuda
@pytest.mark.parametrize("remove", [("conv3", "fc6"), ("conv4", "fc6", "fc7")], ids="-".join)
def test_cuda_ablation_towers_equal_grouped_formulation(remove):
    """As above for ablated nets, towers on their own streams: the layers that moved (pool2
    into conv4, pool5 and flatten before fc8) run on the right stream."""
    torch.manual_seed(10)
    model = alexnet("paper", num_classes=10, devices=("cuda:0",), dropout=0.0, remove=remove).double()
    x = images(4, seed=8, device="cuda:0").double().requires_grad_()
    for _ in range(2):
        out = model(x)
        expected = model.grouped_forward(x)
        assert rel_err(out, expected) < 1e-10
        assert_grads_close(grads(model, x, out), grads(model, x, expected), 1e-7)


@requires_cuda
def test_cuda_streams_and_backends_agree_fp32(paper_state, monkeypatch):
    """fp32 with the Triton ReLUs: streams on and off, the custom backend against torch's.
    Deterministic cuDNN, so that streams on and off run the same arithmetic, and no TF32, whose
    10-bit inputs would turn the kernels' last-bit differences into larger ones."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    x = images(8, seed=9, device="cuda").requires_grad_()
    runs = {}
    for backend, streams in [("torch", False), ("custom", False), ("custom", True)]:
        model = paper(paper_state, backend=backend, devices=("cuda:0",), streams=streams, dropout=0.0)
        with ieee_fp32():
            out = model(x)
            runs[backend, streams] = out, grads(model, x, out)
    (out_t, _), (out_c, g_c), (out_s, g_s) = runs.values()
    torch.testing.assert_close(out_c, out_t, rtol=1e-4, atol=1e-5 * out_t.abs().max().item())
    torch.testing.assert_close(out_s, out_c, rtol=1e-5, atol=1e-6 * out_c.abs().max().item())
    assert_grads_close(g_s, g_c, 1e-3)


@requires_cuda
def test_cuda_device_that_does_not_exist():
    with pytest.raises(ValueError, match="devices: 'cuda:99' does not exist"):
        alexnet(devices=("cuda:99",))


@requires_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("variant", ["paper", "torchvision"])
def test_cuda_training_step_per_backend(variant, precision):
    """One SGD step (train/run.py's) on each backend from the same weights, without dropout so
    both compute the same function: the same loss (within the kernels' tolerance at this
    precision), a finite gradient in every parameter, and every parameter moved."""
    from train.measure import fixed_batch_step

    torch.manual_seed(11)
    size = 227 if variant == "paper" else 224
    state = alexnet(variant, num_classes=10, backend="torch", dropout=0.0).state_dict()
    losses = {}
    for backend in ("torch", "custom"):
        model = alexnet(variant, num_classes=10, backend=backend, devices=("cuda:0",), dropout=0.0)
        model.load_state_dict(state)
        torch.manual_seed(12)  # the same batch for both
        step = fixed_batch_step(model, 16, size, 10, "cuda", precision)
        losses[backend] = step().item()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert not torch.equal(p.detach().cpu(), state[name]), f"{name} did not move"
    tol = 1e-4 if precision == "fp32" else 2e-2
    assert abs(losses["custom"] - losses["torch"]) <= tol * abs(losses["torch"]), losses
