"""relu_dropout's random mask and forward written with plain PyTorch ops: the tests' oracle, a
third implementation of the Philox stream beside the C++ and Triton kernels. Slow; not used by
the package itself."""
import torch

from . import _relu_dropout_config as cfg

_M32 = 0xFFFFFFFF
_PHILOX_KEY_A = 0x9E3779B9
_PHILOX_KEY_B = 0xBB67AE85
_PHILOX_ROUND_A = 0xD2511F53
_PHILOX_ROUND_B = 0xCD9E8D57


def _mul32_hi_lo(const: int, c: torch.Tensor):
    """(hi, lo) 32-bit words of const * c, for uint32 const and c held in int64 (no overflow)."""
    a_hi, a_lo = const >> 16, const & 0xFFFF
    lo_prod = c * a_lo  # < 2**48
    hi_prod = c * a_hi  # < 2**48
    hi = ((hi_prod + (lo_prod >> 16)) >> 16) & _M32
    lo = (((hi_prod & 0xFFFF) << 16) + lo_prod) & _M32
    return hi, lo


def philox4x32_10(key: torch.Tensor, counter: torch.Tensor, c2=None, c3=None):
    """Philox-4x32-10 as ``tl.randint4x(key, counter)`` computes it: key (int64 scalar tensor)
    split into words (k0, k1) = (lo, hi), the state (lo(counter), hi(counter), c2, c3) with c2 =
    c3 = 0 unless given. Returns four int64 tensors holding uint32 values."""
    k0 = key & _M32
    k1 = (key >> 32) & _M32
    c0 = counter & _M32
    c1 = (counter >> 32) & _M32
    c2 = torch.zeros_like(c0) if c2 is None else c2 & _M32
    c3 = torch.zeros_like(c0) if c3 is None else c3 & _M32
    for _ in range(10):
        hi_b, lo_b = _mul32_hi_lo(_PHILOX_ROUND_B, c2)
        hi_a, lo_a = _mul32_hi_lo(_PHILOX_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _PHILOX_KEY_A) & _M32
        k1 = (k1 + _PHILOX_KEY_B) & _M32
    return c0, c1, c2, c3


def keep_mask(seed: torch.Tensor, n: int, p: float, device, start: int = 0) -> torch.Tensor:
    """Boolean keep mask of row-major elements ``start .. start + n - 1`` (``start % 4 == 0``)."""
    assert start % 4 == 0
    seed = seed.to(device=device, dtype=torch.int64)
    groups = (n + 3) // 4
    counter = seed[1] + (start // 4) + torch.arange(groups, dtype=torch.int64, device=device)
    r = torch.stack(philox4x32_10(seed[0], counter), dim=1).reshape(-1)[:n]
    return r >= cfg.threshold(p)


def relu_dropout(x: torch.Tensor, seed: torch.Tensor, p: float) -> torch.Tensor:
    """The forward: fp32(x) * fp32(1 / (1 - p)) rounded once to x's dtype where kept and not
    x < 0, else 0; contiguous."""
    x = x.contiguous()
    keep = keep_mask(seed, x.numel(), p, x.device).view(x.shape)
    scaled = (x.float() * torch.tensor(cfg.scale(p), dtype=torch.float32, device=x.device)).to(x.dtype)
    return torch.where(keep & ~(x < 0), scaled, torch.zeros((), dtype=x.dtype, device=x.device))
