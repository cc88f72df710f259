"""Compiled vs eager closed-form kernels (sigmoid focal, asymmetric, GHM-C, OHEM, LDAM) over settings in ONE process.

Run by ``tests/test_compiled_focal.py`` in a subprocess with a fresh
``TORCHINDUCTOR_CACHE_DIR``, so no earlier compile (in memory or on disk) can
hide a stale graph. Prints one JSON line per setting with the largest relative
differences of the loss and of the gradient; the test asserts on them.
"""

from __future__ import annotations

import json

import torch

from lit_imbalance.losses import asymmetric_loss, ghmc_loss, ldam_loss, ldam_margins, ohem_loss, sigmoid_focal_loss

# The sequence, then alternating values, back to the first, new shapes, reductions, dtypes.
SETTINGS = [
    # (alpha, gamma, reduction, shape, dtype)
    (None, 0.0, "none", (64, 8), torch.float32),
    (None, 2.0, "none", (64, 8), torch.float32),
    (0.25, 2.0, "none", (64, 8), torch.float32),
    (0.25, 0.5, "none", (64, 8), torch.float32),
    (None, 2.0, "mean", (64, 8), torch.float32),
    (0.75, 1.0, "sum", (33, 5), torch.float32),
    (None, 0.0, "mean", (64, 8), torch.float32),
    (0.25, 2.0, "positives", (17, 3, 4), torch.float32),
    (0.5, 3.0, "mean", (64, 8), torch.float64),
    (None, 2.0, "none", (64, 8), torch.float32),
    (None, 0.0, "none", (64, 8), torch.float32),
]

# The asymmetric loss's kernel shares the compile path: (gamma_pos, gamma_neg, clip, reduction, shape).
ASL_SETTINGS = [
    (0.0, 4.0, 0.05, "mean", (64, 8)),
    (1.0, 2.0, 0.0, "none", (64, 8)),
    (0.0, 4.0, 0.05, "sum", (33, 5)),
    (0.0, 0.0, 0.2, "positives", (64, 8)),
    (0.0, 4.0, 0.05, "mean", (64, 8)),
]

# GHM-C (a kernel per bin count) and OHEM (a new threshold every call): (name, setting, reduction, shape).
REWEIGHTED_BCE_SETTINGS = [
    ("ghm", 10, "mean", (64, 8)),
    ("ghm", 3, "sum", (33, 5)),
    ("ghm", 10, "none", (17, 3, 4)),
    ("ohem", 3.0, "mean", (64, 8)),
    ("ohem", 0.5, "sum", (64, 8)),
    ("ohem", 3.0, "positives", (17, 3, 4)),
    ("ghm", 10, "mean", (64, 8)),
]

# LDAM's softmax kernel (a new scale s every call, as an s sweep does): (s, class-weighted, reduction, shape).
LDAM_SETTINGS = [
    (30.0, False, "mean", (64, 8)),
    (1.0, False, "mean", (64, 8)),
    (4.0, True, "none", (33, 5)),
    (30.0, True, "sum", (64, 8)),
    (1.0, False, "mean", (64, 8)),
]


def relative_error(got: torch.Tensor, want: torch.Tensor, normwise: bool = False) -> float:
    """The largest entry-wise relative error, or with ``normwise`` the largest error relative to the largest entry."""
    if normwise:
        return float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))
    return float(((got - want).abs() / want.abs().clamp_min(1e-12)).max())


def compare(setting: list, loss_of, x: torch.Tensor, normwise: bool = False) -> None:
    """Print the compiled path's largest relative errors against the eager one for ``loss_of(leaf, fast_path)``."""
    results = {}
    for fast_path in ("eager", "compiled"):
        leaf = x.clone().requires_grad_()
        loss = loss_of(leaf, fast_path)
        loss.sum().backward()
        results[fast_path] = (loss.detach(), leaf.grad)
    (eager_loss, eager_grad), (compiled_loss, compiled_grad) = results["eager"], results["compiled"]
    print(json.dumps({"setting": setting, "loss": relative_error(compiled_loss, eager_loss, normwise),
                      "grad": relative_error(compiled_grad, eager_grad, normwise)}), flush=True)


def main() -> None:
    generator = torch.Generator().manual_seed(0)
    for alpha, gamma, reduction, shape, dtype in SETTINGS:
        x = torch.randn(shape, generator=generator, dtype=dtype)
        t = (torch.rand(shape, generator=generator) < 0.2).to(dtype)
        compare([alpha, gamma, reduction, list(shape), str(dtype)], lambda leaf, fast_path: sigmoid_focal_loss(
            leaf, t, alpha=alpha, gamma=gamma, reduction=reduction, fast_path=fast_path), x)
    for gamma_pos, gamma_neg, clip, reduction, shape in ASL_SETTINGS:
        x = torch.randn(shape, generator=generator) * 3
        t = (torch.rand(shape, generator=generator) < 0.2).float()
        compare(["asymmetric", gamma_pos, gamma_neg, clip, reduction, list(shape)], lambda leaf, fast_path: asymmetric_loss(
            leaf, t, gamma_pos, gamma_neg, clip, reduction=reduction, fast_path=fast_path), x, normwise=True)
    for name, setting, reduction, shape in REWEIGHTED_BCE_SETTINGS:
        x = torch.randn(shape, generator=generator) * 3
        t = (torch.rand(shape, generator=generator) < 0.2).float()
        if name == "ghm":
            def loss_of(leaf, fast_path):
                return ghmc_loss(leaf, t, bins=setting, reduction=reduction, fast_path=fast_path)
        else:
            def loss_of(leaf, fast_path):
                return ohem_loss(leaf, t, neg_pos_ratio=setting, reduction=reduction, fast_path=fast_path)
        compare([name, setting, reduction, list(shape)], loss_of, x, normwise=True)
    for s, weighted, reduction, shape in LDAM_SETTINGS:
        x = torch.randn(shape, generator=generator)
        t = torch.randint(0, shape[1], shape[:1], generator=generator)
        t[::5] = -100
        counts = torch.arange(shape[1], 0, -1) ** 2
        margins, weight = ldam_margins(counts), (1.0 / counts) if weighted else None
        compare(["ldam", s, weighted, reduction, list(shape)], lambda leaf, fast_path: ldam_loss(
            leaf, t, margins, s, weight, reduction=reduction, fast_path=fast_path), x, normwise=True)


if __name__ == "__main__":
    main()
