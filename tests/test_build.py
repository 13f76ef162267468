"""The package as installed: build report, the torch-mismatch guard, and torch.compile."""
import subprocess
import sys

import torch

import alexnet_kernels as ak


def test_build_info():
    info = ak.build_info()
    assert info["torch"] == torch.__version__ == info["torch_built_against"]
    for op in ("conv2d", "lrn", "max_pool2d"):
        assert info["ops"][op]["cpu"]
        # The CUDA kernels are registered exactly when the CUDA sources were compiled.
        assert info["ops"][op]["cuda"] == info["cuda_kernels_built"]
    if info["cuda_kernels_built"]:
        assert "9.0" in info["cuda_archs"]
    else:
        assert info["cpu_only_reason"]


def test_main_prints_report():
    out = subprocess.run([sys.executable, "-m", "alexnet_kernels"], capture_output=True, text=True, check=True).stdout
    assert "torch" in out and "lrn" in out and "max_pool2d" in out


def test_torch_mismatch_is_a_clear_import_error():
    # An extension built against another torch must be refused before the shared object loads.
    code = (
        "import sys, types\n"
        "sys.modules['alexnet_kernels._build_config'] = types.SimpleNamespace(TORCH_VERSION='1.0.0')\n"
        "import alexnet_kernels\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode != 0
    assert "built against torch 1.0.0" in r.stderr
    assert "pip install --no-build-isolation --no-deps -e ." in r.stderr
    assert "Segmentation" not in r.stderr and "undefined symbol" not in r.stderr


class Block(torch.nn.Module):
    """conv -> relu -> lrn -> pool, the shape of AlexNet's first block."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=2)
        self.lrn = ak.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
        self.pool = ak.nn.MaxPool2d(3, 2)

    def forward(self, x):
        return self.pool(self.lrn(torch.relu(self.conv(x))))


def _compiled_matches_eager(backend):
    torch.manual_seed(0)
    m = Block()
    x = torch.randn(2, 3, 31, 31)
    ref = m(x)
    ref.sum().backward()
    ref_grads = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True, backend=backend)  # fullgraph: a graph break is an error
    y = compiled(x)
    y.sum().backward()
    torch.testing.assert_close(y, ref)
    for p, g in zip(m.parameters(), ref_grads):
        torch.testing.assert_close(p.grad, g)


def test_compile_aot_eager_fullgraph():
    _compiled_matches_eager("aot_eager")


def test_compile_inductor_fullgraph():
    _compiled_matches_eager("inductor")
