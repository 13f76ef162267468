"""alexnet_kernels.models.placement on its own: the devices check, the placing of towers, and the
hand-over of activations between places, on a toy two-tower network (no AlexNet). The CUDA
tests (streams on one GPU, two devices) run where a GPU is visible."""
import pytest
import torch
from helpers import rel_err, requires_cuda
from torch import nn

from alexnet_kernels.models import placement
from alexnet_kernels.models.placement import Place

CPU = torch.device("cpu")


@pytest.mark.parametrize("devices, towers, expected", [
    (None, 2, None),
    ("cpu", 2, [CPU]),
    (torch.device("cpu"), 1, [CPU]),
    (["cpu", "cpu"], 2, [CPU, CPU]),
    (("cpu",), 1, [CPU]),
])
def test_check_devices_accepts(devices, towers, expected):
    assert placement.check_devices(devices, towers, "paper") == expected


@pytest.mark.parametrize("devices, towers, message", [
    (["cpu", "cpu", "cpu"], 2, "devices: the paper variant has 2 towers, so it takes one or two devices, got 3"),
    (["cpu", "cpu"], 1, "devices: the paper variant has 1 tower, so it takes one device, got 2"),
    ([], 2, "got 0: none"),
    (3, 2, "devices must be None or a sequence of devices, got 3"),
    (["gpu0"], 2, "devices: 'gpu0' is not a device (cpu, cuda, cuda:1)"),
    (["cpu", "mps"], 2, "devices: 'mps': only cpu and cuda devices are supported"),
])
def test_check_devices_refuses(devices, towers, message):
    with pytest.raises(ValueError) as e:
        placement.check_devices(devices, towers, "paper")
    assert message in str(e.value)


def test_check_devices_names_the_flag():
    with pytest.raises(ValueError, match="^--devices: 'tpu' is not a device"):
        placement.check_devices(["tpu"], 2, "paper", name="--devices")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_check_devices_without_a_gpu():
    with pytest.raises(ValueError, match="'cuda:1' is a CUDA device, but no CUDA device is visible"):
        placement.check_devices(["cpu", "cuda:1"], 2, "paper")


def test_place_puts_towers_and_head_where_asked():
    """Tower i on devices[i], the rest on the first, the head on the first: the meta device
    stands in for a second device."""
    meta = torch.device("meta")
    towers, head = [nn.Linear(2, 2), nn.Linear(2, 2)], nn.Linear(4, 1)
    placement.place(towers, head, [meta, CPU])
    assert [t.weight.device for t in towers] == [meta, CPU] and head.weight.device == meta
    towers, head = [nn.Linear(2, 2), nn.Linear(2, 2)], nn.Linear(4, 1)
    placement.place(towers, head, [meta])
    assert {t.weight.device for t in towers} == {meta} and head.weight.device == meta


def test_places_on_the_cpu_have_no_streams_and_touch_no_cuda():
    places = placement.places([CPU, CPU], streams=True)
    assert places == [Place(CPU), Place(CPU)]
    placement.enter(places)
    with placement.on(None):
        x = torch.ones(2)
    assert placement.leave(x, places) is x
    assert not torch.cuda.is_initialized()


def test_hand_over_and_gather():
    a, b = torch.arange(6.0).view(1, 6), -torch.arange(4.0).view(1, 4)
    here, meta = Place(CPU), Place(torch.device("meta"))
    assert placement.hand_over(a, here, here) is a  # same place: nothing to do
    moved = placement.hand_over(a, here, meta)
    assert moved.device.type == "meta" and moved.shape == a.shape
    assert torch.equal(placement.gather([a, b], [here, here], 0), torch.cat([a, b], 1))  # tower 0 first
    gathered = placement.gather([a, b.to("meta")], [here, meta], 1)  # each tower's output where it was made
    assert gathered.device.type == "meta" and gathered.shape == (1, 10)


class TwoTowers(nn.Module):
    """A toy model parallel net: each tower a linear layer, an exchange, another linear layer in
    each tower, and a head on tower 0's place; the forward is the paper net's, step by step."""

    def __init__(self, devices, streams):
        super().__init__()
        self.first = nn.ModuleList(nn.Linear(8, 4) for _ in range(2))
        self.second = nn.ModuleList(nn.Linear(8, 4) for _ in range(2))
        self.head = nn.Linear(8, 3)
        placement.place([nn.ModuleList([f, s]) for f, s in zip(self.first, self.second)], self.head, devices)
        self.streams = streams

    def forward(self, x):
        places = placement.places([f.weight.device for f in self.first], self.streams)
        placement.enter(places)
        hs = [placement.hand_over(x, Place(x.device), p) for p in places]
        hs = [self._run(f, h, p) for f, h, p in zip(self.first, hs, places)]
        hs = [placement.gather(hs, places, i) for i in range(2)]  # the exchange
        hs = [self._run(s, h, p) for s, h, p in zip(self.second, hs, places)]
        out = placement.gather(hs, places, 0)
        with placement.on(places[0].stream):
            out = self.head(out)
        return placement.leave(out, places)

    @staticmethod
    def _run(layer, h, place):
        with placement.on(place.stream):
            return torch.relu(layer(h))

    def reference(self, x):
        """The same function on x's device, without placement."""
        def both(layers, h):
            return torch.cat([torch.relu(nn.functional.linear(h, m.weight.to(h.device), m.bias.to(h.device)))
                              for m in layers], 1)

        h = both(self.second, both(self.first, x))
        return nn.functional.linear(h, self.head.weight.to(x.device), self.head.bias.to(x.device))


def grads(model, x, out):
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.device)
    return torch.autograd.grad((out * w).sum(), [*model.parameters(), x])


def check_toy(devices, streams, device="cpu"):
    torch.manual_seed(0)
    model = TwoTowers([torch.device(d) for d in devices], streams).double()
    x = torch.randn(5, 8, dtype=torch.float64, device=device, requires_grad=True)
    for _ in range(2):  # the second step reuses the memory the first freed
        out = model(x)
        assert out.device == model.head.weight.device
        expected = model.reference(x)
        assert rel_err(out.to(expected.device), expected) < 1e-12
        for g, e in zip(grads(model, x, out), grads(model, x, expected)):
            assert rel_err(g.to(e.device), e) < 1e-12


def test_toy_two_towers_on_the_cpu():
    check_toy(["cpu", "cpu"], streams=True)


@requires_cuda
@pytest.mark.parametrize("streams", [True, False])
@pytest.mark.parametrize("devices", [("cuda:0",), ("cuda:0", "cpu"), ("cpu", "cuda:0")], ids=str)
def test_cuda_toy_two_towers(devices, streams):
    """Side streams on one GPU, or a GPU beside the CPU: a missing wait or record_stream shows as
    a wrong value or gradient."""
    check_toy(devices, streams, device="cuda")


@requires_cuda
def test_cuda_places_take_one_stream_per_tower():
    places = placement.places([torch.device("cuda", 0)] * 2, streams=True)
    assert all(p.stream is not None for p in places) and places[0].stream != places[1].stream
    assert placement.places([torch.device("cuda", 0)] * 2, streams=False) == [Place(torch.device("cuda", 0))] * 2
