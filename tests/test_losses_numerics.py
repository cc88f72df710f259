"""Numerics of the losses: gradcheck of the fused gradient, ±100 logits in fp32/fp16/bf16, fast paths, no host syncs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lit_imbalance import losses
from lit_imbalance.losses import (
    AsymmetricLoss,
    ClassBalancedLoss,
    FocalLoss,
    GHMCLoss,
    OHEMLoss,
    SigmoidFocalLoss,
    build_loss,
    sigmoid_focal_loss,
)
from lit_imbalance.losses.ohem import hard_examples

COUNTS = [50, 20, 8, 3]
C = len(COUNTS)
GAMMAS = [0.0, 0.5, 1.0, 2.0, 5.0]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def extreme_batch(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """±100 logits where the target is both right and wrong, plus a few zeros."""
    logits = torch.tensor(
        [[100.0, -100.0, 0.0, -100.0], [-100.0, 100.0, 100.0, -100.0], [0.0, 0.0, 0.0, 0.0], [-100.0] * 4]
    ).repeat(2, 1)
    target = torch.tensor([0, 2, 1, 3, 1, 0, 3, 2])
    return logits.to(dtype).requires_grad_(), target


def assert_finite_loss_and_grad(loss: torch.nn.Module, dtype: torch.dtype, target_kind: str = "index") -> None:
    logits, target = extreme_batch(dtype)
    if target_kind == "float":
        target = torch.eye(C)[target]
    value = loss(logits, target)
    value.backward()
    assert value.dtype == torch.float32
    assert torch.isfinite(value), value
    assert logits.grad is not None and torch.isfinite(logits.grad.float()).all(), logits.grad


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", losses.available_losses())
def test_every_loss_is_finite_at_plus_minus_100(name: str, dtype: torch.dtype) -> None:
    kwargs = {"class_counts": COUNTS} if losses.LOSSES[name].needs_class_counts else {}
    assert_finite_loss_and_grad(build_loss(name, **kwargs), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("gamma", GAMMAS)
def test_focal_family_is_finite_at_plus_minus_100_for_every_gamma(gamma: float, dtype: torch.dtype) -> None:
    for fast_path in ("eager", "reference"):
        for alpha in (0.25, None):
            for kind in ("index", "float"):
                assert_finite_loss_and_grad(SigmoidFocalLoss(alpha, gamma, fast_path=fast_path), dtype, kind)
    assert_finite_loss_and_grad(FocalLoss(gamma=gamma), dtype)
    assert_finite_loss_and_grad(FocalLoss(gamma=gamma, alpha=0.25), dtype)
    assert_finite_loss_and_grad(AsymmetricLoss(gamma_pos=gamma, gamma_neg=gamma, clip=0.0), dtype)
    assert_finite_loss_and_grad(AsymmetricLoss(gamma_pos=gamma, gamma_neg=gamma, clip=0.05), dtype)
    for base in ("focal", "sigmoid_focal"):
        assert_finite_loss_and_grad(ClassBalancedLoss(COUNTS, base=base, gamma=gamma), dtype)


def test_focal_gradient_at_saturation_is_zero_not_nan() -> None:
    # p_t == 1 exactly: (1 - p_t)^gamma has an infinite derivative for gamma < 1; the loss's is 0.
    logits = torch.tensor([[100.0, -100.0]], requires_grad=True)
    FocalLoss(gamma=0.5)(logits, torch.tensor([0])).backward()
    assert logits.grad.abs().max() == 0
    for fast_path in ("eager", "reference"):
        x = torch.tensor([[100.0, -100.0]], requires_grad=True)
        sigmoid_focal_loss(x, torch.tensor([[1.0, 0.0]]), gamma=0.5, fast_path=fast_path).backward()
        assert x.grad.abs().max() == 0


# --- the fused sigmoid-focal gradient ----------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "positives"])
def test_gradcheck_fused_sigmoid_focal(gamma: float, reduction: str) -> None:
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(6, 3, generator=generator, dtype=torch.float64) * 2).requires_grad_()
    hard = (torch.rand(6, 3, generator=generator) < 0.4).double()
    soft = torch.rand(6, 3, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 2, -100, 1, 1, 0])
    pos_weight = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    for targets, alpha, weight in [(hard, 0.25, None), (soft, 0.7, pos_weight), (labels, None, pos_weight)]:

        def loss(z, targets=targets, alpha=alpha, weight=weight):
            return sigmoid_focal_loss(z, targets, alpha, gamma, reduction, weight, fast_path="eager")

        assert torch.autograd.gradcheck(loss, (x,))


def test_fused_and_reference_gradients_agree() -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 7, generator=generator) * 8
    t = torch.rand(64, 7, generator=generator)
    grads = {}
    for fast_path in ("eager", "reference"):
        leaf = x.clone().requires_grad_()
        value = sigmoid_focal_loss(leaf, t, 0.3, 1.5, pos_weight=[1, 2, 3, 1, 1, 1, 0.5], fast_path=fast_path)
        value.backward()
        grads[fast_path] = (value.detach(), leaf.grad)
    torch.testing.assert_close(grads["eager"], grads["reference"])


def test_targets_requiring_grad_take_the_reference_path() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    t = torch.rand(4, 3, requires_grad=True)
    sigmoid_focal_loss(x, t).backward()
    assert t.grad is not None and x.grad is not None


def test_compiled_path_gives_the_eager_values() -> None:
    # Compiled once per process (a few seconds; Inductor caches the kernel on disk for the next run).
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(300, 40, generator=generator) * 5
    t = (torch.rand(300, 40, generator=generator) < 0.1).float()
    results = {}
    for fast_path in ("eager", "compiled"):
        for reduction in ("mean", "none"):
            leaf = x.clone().requires_grad_()
            value = sigmoid_focal_loss(leaf, t, 0.25, 2.0, reduction, fast_path=fast_path)
            value.sum().backward()
            results[fast_path, reduction] = (value.detach(), leaf.grad)
    for reduction in ("mean", "none"):
        torch.testing.assert_close(results["compiled", reduction], results["eager", reduction])


# --- no host synchronisation ---------------------------------------------------------------


def test_ghm_and_ohem_never_read_tensor_values_on_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Anything that would sync a device (``.item()``, ``bool(tensor)``, ``.tolist()``) raises here."""
    x = torch.randn(16, 5, requires_grad=True)
    t = (torch.rand(16, 5) < 0.3).float()
    losses_to_check = [GHMCLoss(bins=10, momentum=0.75), OHEMLoss(top_k=5), SigmoidFocalLoss()]

    def refuse(*args, **kwargs):
        raise AssertionError("host synchronisation")

    original_item = torch.Tensor.item
    items_read: list[tuple[int, str]] = []

    def record_item(tensor: torch.Tensor):
        items_read.append((tensor.ndim, tensor.device.type))
        return original_item(tensor)

    for method in ("item", "tolist", "__bool__", "__int__", "__float__", "nonzero"):
        monkeypatch.setattr(torch.Tensor, method, refuse)
    values = [loss(x, t) for loss in losses_to_check]
    # OHEM's ratio mode reads the count on the CPU only; its accelerator path is the sort.
    hard_examples(x.detach(), t, None, 3.0, None, sync_free=True)
    # Backward: the closed-form kernels' backward reads its 0-d upstream gradient on the CPU only (to
    # skip multiplying by 1); anywhere else it multiplies.
    monkeypatch.setattr(torch.Tensor, "item", record_item)
    for value in values:
        value.backward()
    monkeypatch.undo()
    assert set(items_read) <= {(0, "cpu")}
    assert torch.isfinite(x.grad).all()


def test_ghm_compiles_to_one_graph_label_check_included() -> None:
    """fullgraph=True fails on any graph break, i.e. on any read of a tensor value by Python."""
    x = torch.randn(16, 5, requires_grad=True)
    y = torch.randint(0, 5, (16,))
    y[0] = -100
    loss = GHMCLoss(bins=10, momentum=0.5)
    compiled = torch.compile(loss, fullgraph=True)
    value = compiled(x, y)
    value.backward()
    assert value.item() == pytest.approx(GHMCLoss(bins=10)(x, y).item(), rel=1e-5)
    with pytest.raises(RuntimeError, match=r"`target` to be class indices in 0..4"):
        compiled(x, torch.full((16,), 9))


def test_ohem_selection_is_the_same_with_and_without_host_sync() -> None:
    generator = torch.Generator().manual_seed(3)
    loss = torch.rand(40, 6, generator=generator)
    t = (torch.rand(40, 6, generator=generator) < 0.1).float()
    masks = [hard_examples(loss, t, None, 3.0, None, sync_free=flag) for flag in (True, False)]
    assert torch.equal(*masks) and masks[0].sum() == t.sum() * 4
    tied = torch.zeros(40, 6)  # all losses equal: any choice of negatives has the same value
    masks = [hard_examples(tied, t, None, 2.0, None, sync_free=flag) for flag in (True, False)]
    assert masks[0].sum() == masks[1].sum() == t.sum() * 3


# --- "positives" across DDP ranks ---------------------------------------------------------------


POSITIVES_WORKER = """
import sys, torch, torch.distributed as dist
from lit_imbalance.losses import sigmoid_focal_loss
rank = int(sys.argv[1])
dist.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=rank, world_size=2)
x, t = torch.zeros(4, 2), torch.zeros(4, 2)
t.view(-1)[: 2 + 4 * rank] = 1.0  # rank 0: 2 positives, rank 1: 6
ratio = sigmoid_focal_loss(x, t, reduction="positives") / sigmoid_focal_loss(x, t, reduction="sum")
# Evaluation: ranks may see different numbers of batches, so each divides by its own count.
with torch.no_grad():
    for _ in range(2 - rank):
        local = sigmoid_focal_loss(x, t, reduction="positives") / sigmoid_focal_loss(x, t, reduction="sum")
dist.barrier()
print(ratio.item(), local.item())
dist.destroy_process_group()
"""


def test_positives_count_is_averaged_across_ranks(tmp_path) -> None:
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", POSITIVES_WORKER, str(rank), str(tmp_path / "init")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), [err[-2000:] for _, err in outputs]
    # Training: both ranks divide by the mean count (2 + 6) / 2 = 4, not by their own 2 and 6.
    # Without grad (rank 0 evaluating one batch more than rank 1): the local count, no collective.
    values = [[float(v) for v in out.split()] for out, _ in outputs]
    assert values == [[pytest.approx(0.25), pytest.approx(1 / 2)], [pytest.approx(0.25), pytest.approx(1 / 6)]]
