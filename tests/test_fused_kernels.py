"""The fused kernels against the formulas written out here, differentiated by autograd.

Every softmax loss of the catalogue runs on ``fused_softmax_loss``; these tests
pin its values and gradients (float64, gradcheck), its half-precision
numerics, segmentation shapes, ``ignore_index`` and every reduction, and that
each loss really takes the fused path. The asymmetric loss's closed-form kernel
is pinned the same way against autograd through its formula.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lit_imbalance import losses
from lit_imbalance.losses.asymmetric import asymmetric_loss
from lit_imbalance.losses import _fused_softmax
from lit_imbalance.losses._fused_softmax import fused_softmax_loss
from lit_imbalance.weights import class_weights

C = 5
COUNTS = [60, 25, 9, 4, 2]


def reference(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    logit_shift=None,
    target_margin=None,
    scale=1.0,
    class_weight=None,
    sample_weight=None,
    cost=None,
    gamma=0.0,
    weighted_mean=False,
    reduction="mean",
    ignore_index=-100,
) -> torch.Tensor:
    """The textbook formula: one-hot margin, log-softmax by max-shift, weights multiplied in."""
    valid = y != ignore_index
    safe = torch.where(valid, y, 0)
    one_hot = torch.nn.functional.one_hot(safe, x.shape[1]).movedim(-1, 1).to(x.dtype)
    view = (1, -1) + (1,) * (x.ndim - 2)
    z = x
    if logit_shift is not None:
        z = z + logit_shift.view(view)
    if target_margin is not None:
        z = z - one_hot * target_margin[safe].unsqueeze(1)
    z = scale * z
    shifted = z - z.max(1, keepdim=True).values
    log_probs = shifted - shifted.exp().sum(1, keepdim=True).log()
    ce = -(log_probs * one_hot).sum(1)
    p_true = torch.exp(-ce)
    loss = (1 - p_true) ** gamma * ce
    weight = valid.to(x.dtype)
    if class_weight is not None:
        weight = weight * class_weight[safe]
    if sample_weight is not None:
        weight = weight * sample_weight
    probs = log_probs.detach().exp()
    if cost is not None and cost.ndim == 1:
        loss = loss * cost[safe] * (1 - probs.mul(one_hot).sum(1))
    elif cost is not None:
        loss = loss * (probs * cost[safe].movedim(-1, 1)).sum(1)
    loss = loss * weight
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / (weight.sum() if weighted_mean else valid.sum())


def options() -> dict[str, dict]:
    generator = torch.Generator().manual_seed(11)
    rand = lambda *shape: torch.rand(*shape, generator=generator, dtype=torch.float64)  # noqa: E731
    return {
        "ce": {},
        "class_weight_weighted_mean": {"class_weight": rand(C) + 0.1, "weighted_mean": True},
        "focal_gamma_0.5": {"gamma": 0.5},
        "focal_gamma_2_alpha": {"gamma": 2.0, "class_weight": rand(C)},
        "logit_adjusted": {"logit_shift": torch.log(torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS))},
        "ldam_drw": {"target_margin": rand(C) * 0.5, "scale": 4.0, "class_weight": rand(C), "weighted_mean": True},
        "cost_vector": {"cost": rand(C) * 3},
        "cost_matrix": {"cost": rand(C, C) * 3},
        "sample_weight_focal": {"sample_weight": "per-sample", "gamma": 1.0, "weighted_mean": True},
        "everything": {
            "logit_shift": rand(C),
            "target_margin": rand(C),
            "scale": 2.0,
            "class_weight": rand(C),
            "sample_weight": "per-sample",
            "gamma": 1.5,
        },
        "everything_and_cost": {
            "logit_shift": rand(C),
            "target_margin": rand(C),
            "scale": 2.0,
            "class_weight": rand(C),
            "sample_weight": "per-sample",
            "cost": rand(C, C),
            "gamma": 1.5,
            "weighted_mean": True,
        },
    }


OPTIONS = options()
SHAPES = [(12, C), (3, C, 2, 4)]


def batch(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=generator, dtype=torch.float64) * 3
    y = torch.randint(0, C, shape[:1] + shape[2:], generator=generator)
    y.view(-1)[::4] = -100
    return x, y


def resolve(kwargs: dict, y: torch.Tensor) -> dict:
    if kwargs.get("sample_weight") == "per-sample":
        generator = torch.Generator().manual_seed(5)
        kwargs = {**kwargs, "sample_weight": torch.rand(y.shape, generator=generator, dtype=torch.float64)}
    return kwargs


def values_and_grads(function, x, y, kwargs, reduction):
    leaf = x.clone().requires_grad_()
    value = function(leaf, y, reduction=reduction, **kwargs)
    # A non-uniform upstream gradient, so "none" checks every sample's own factor.
    upstream = torch.linspace(0.5, 1.5, value.numel(), dtype=value.dtype).view_as(value)
    (value * upstream).sum().backward()
    return value.detach(), leaf.grad


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", SHAPES, ids=["NC", "NCd1d2"])
@pytest.mark.parametrize("case", list(OPTIONS))
def test_values_and_gradients_equal_the_formula(case: str, shape, reduction: str) -> None:
    x, y = batch(shape)
    kwargs = resolve(OPTIONS[case], y)
    got = values_and_grads(fused_softmax_loss, x, y, kwargs, reduction)
    expected = values_and_grads(reference, x, y, kwargs, reduction)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    ignored = (y == -100).unsqueeze(1).expand_as(x)
    assert got[1][ignored].abs().max() == 0  # ignored samples get no gradient


# The expected-cost weight is stop-gradient by definition (cost_sensitive_loss), so finite
# differences of the value do not give its gradient; the formula test above covers it.
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("case", [name for name, kwargs in OPTIONS.items() if "cost" not in kwargs])
def test_gradcheck_float64(case: str, reduction: str) -> None:
    x, y = batch((6, C, 2), seed=3)
    kwargs = resolve(OPTIONS[case], y)
    assert torch.autograd.gradcheck(lambda z: fused_softmax_loss(z, y, reduction=reduction, **kwargs), (x.requires_grad_(),))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", list(OPTIONS))
def test_half_precision_at_plus_minus_100_is_finite_fp32_and_equals_the_upcast(case: str, dtype) -> None:
    x = torch.tensor([[100.0, -100.0, 0.0, -100.0, 100.0], [-100.0] * 5, [100.0, 100.0, -100.0, 0.0, 0.0]])
    x = x.repeat(3, 1).to(dtype)
    y = torch.tensor([0, 1, 2, 4, 3, 2, 1, 0, 3])
    kwargs = resolve({k: v.float() if isinstance(v, torch.Tensor) else v for k, v in OPTIONS[case].items()}, y)
    kwargs = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    leaf = x.clone().requires_grad_()
    value = fused_softmax_loss(leaf, y, **kwargs)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert leaf.grad.dtype == dtype and torch.isfinite(leaf.grad.float()).all()
    upcast = x.float().requires_grad_()
    expected = fused_softmax_loss(upcast, y, **kwargs)
    expected.backward()
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(leaf.grad.float(), upcast.grad.to(dtype).float())


def test_large_scale_floor_moves_gradients_by_less_than_the_floor() -> None:
    """LDAM's s=30 on raw logits: probabilities below sqrt(tiny) are floored for speed, nothing else moves."""
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(64, C, generator=generator) * 5
    y = torch.randint(0, C, (64,), generator=generator)
    margin = torch.rand(C, generator=generator)
    got = values_and_grads(fused_softmax_loss, x, y, {"target_margin": margin, "scale": 30.0}, "mean")
    expected = values_and_grads(reference, x.double(), y, {"target_margin": margin.double(), "scale": 30.0}, "mean")
    torch.testing.assert_close(got[0].double(), expected[0], rtol=1e-6, atol=0)
    assert (got[1].double() - expected[1]).abs().max() < 1e-6


@pytest.mark.parametrize("shape", [(6, C), (3, C, 2, 2)])
def test_large_scale_keeps_each_far_below_target_its_true_loss(shape: tuple[int, ...]) -> None:
    """The subnormal floor raises logits far below their row's maximum; a target there keeps its exact loss."""
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(shape, generator=generator)
    y = torch.randint(0, C, (shape[0], *shape[2:]), generator=generator)
    # Every target logit 10 below the rest: at s = 30 that is 300 below the row's maximum, far past the floor.
    x.scatter_(1, y.unsqueeze(1), x.gather(1, y.unsqueeze(1)) - 10.0)
    got = fused_softmax_loss(x, y, scale=30.0, reduction="none")
    expected = -torch.log_softmax(30.0 * x.double(), 1).gather(1, y.unsqueeze(1)).squeeze(1)
    assert got.shape == y.shape and float(expected.min()) > 250.0
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=0)


def test_all_ignored_gives_zero_loss_and_gradient() -> None:
    x = torch.randn(4, C, requires_grad=True)
    value = fused_softmax_loss(x, torch.full((4,), -100), gamma=2.0, class_weight=torch.ones(C), weighted_mean=True)
    value.backward()
    assert value.item() == 0.0 and x.grad.abs().max() == 0


def test_ignore_index_inside_the_class_range() -> None:
    x, y = batch((10, C), seed=8)
    y = y.clamp_min(0)
    keep = y != 2
    got = fused_softmax_loss(x, y, ignore_index=2, gamma=1.0)
    assert got.item() == pytest.approx(fused_softmax_loss(x[keep], y[keep], gamma=1.0).item(), rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"logit_shift": torch.zeros(3)}, "`logit_shift` to be 5 values"),
        ({"target_margin": torch.zeros(C, requires_grad=True)}, "`target_margin` to be a tensor without gradient"),
        ({"class_weight": torch.ones(2)}, "`class_weight` to be 5 values"),
        ({"sample_weight": torch.ones(2)}, "`sample_weight` to be a tensor without gradient of the target's shape"),
        ({"cost": torch.ones(C, 2)}, "`cost` to be a \\(5,\\) or \\(5, 5\\) tensor"),
        ({"scale": 0.0}, "`scale` to be a positive float, but got 0.0"),
        ({"gamma": -1.0}, "`gamma` to be a non-negative float, but got -1.0"),
        ({"reduction": "avg"}, "`reduction` to be one of"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fused_softmax_loss(torch.randn(3, C), torch.tensor([0, 1, 2]), **kwargs)


SOFTMAX_LOSSES = {
    "ce": {},
    "weighted_ce": {},
    "weighted_ce_by_prediction": {"weight_by": "prediction"},
    "cost_sensitive": {},
    "cost_sensitive_matrix": {"cost_matrix": (1 - torch.eye(C)).mul(torch.arange(1.0, C + 1)).tolist()},
    "focal": {"gamma": 2.0, "alpha": 0.25},
    "class_balanced": {},
    "class_balanced_focal": {"base": "focal"},
    "ldam": {"reweight": "effective"},
    "balanced_softmax": {},
    "logit_adjusted": {"tau": 0.5},
}


@pytest.mark.parametrize("name", list(SOFTMAX_LOSSES))
def test_every_softmax_loss_runs_on_the_fused_kernel(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = _fused_softmax._FusedSoftmaxFunction.apply
    monkeypatch.setattr(
        _fused_softmax._FusedSoftmaxFunction, "apply", lambda *args: calls.append(1) or original(*args)
    )
    registry_name = name.removesuffix("_by_prediction").removesuffix("_matrix").removesuffix("_focal")
    kwargs = dict(SOFTMAX_LOSSES[name])
    if losses.LOSSES[registry_name].needs_class_counts:
        kwargs["class_counts"] = COUNTS
    x = torch.randn(8, C, requires_grad=True)
    losses.build_loss(registry_name, **kwargs)(x, torch.randint(0, C, (8,))).backward()
    assert calls == [1] and torch.isfinite(x.grad).all()


def test_cost_matrix_of_true_class_costs_takes_the_vector_form() -> None:
    from lit_imbalance.losses.reweighted import error_costs

    row_costs = torch.tensor([1.0, 2.0, 3.0])
    matrix = row_costs.unsqueeze(1) * (1 - torch.eye(3))
    torch.testing.assert_close(error_costs(matrix), row_costs)
    general = matrix.clone()
    general[0, 1] = 5.0
    assert error_costs(general).shape == (3, 3)
    # Both forms give the same loss as the full expected-cost formula.
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 3, (16,))
    full = reference(x, y, cost=matrix.double())
    assert losses.cost_sensitive_loss(x, y, matrix).item() == pytest.approx(full.item(), rel=1e-6)


def test_cost_sensitive_module_rederives_its_kernel_form_on_load() -> None:
    first = losses.CostSensitiveLoss([[0, 1], [4, 0]])
    second = losses.CostSensitiveLoss([[0, 1], [1, 0]])
    second.load_state_dict(first.state_dict())
    x, y = torch.randn(8, 2), torch.randint(0, 2, (8,))
    assert second(x, y).item() == pytest.approx(first(x, y).item(), rel=1e-6)


# --- the asymmetric loss's closed-form kernel ------------------------------------------

ASL_SETTINGS = [(0.0, 4.0, 0.05), (0.0, 0.0, 0.0), (1.0, 2.0, 0.0), (0.5, 0.5, 0.2), (2.0, 1.0, 0.05)]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "positives"])
@pytest.mark.parametrize(("gamma_pos", "gamma_neg", "clip"), ASL_SETTINGS)
def test_asymmetric_kernel_equals_autograd_through_the_formula(gamma_pos: float, gamma_neg: float, clip: float,
                                                               reduction: str) -> None:
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(32, 5, 3, generator=generator, dtype=torch.float64) * 4).requires_grad_()
    t = (torch.rand(32, 5, 3, generator=generator) < 0.3).double()
    t[:4] = torch.rand(4, 5, 3, generator=generator, dtype=torch.float64)  # soft targets mix the two terms
    fused = asymmetric_loss(x, t, gamma_pos, gamma_neg, clip, reduction=reduction, fast_path="eager")
    reference = asymmetric_loss(x, t, gamma_pos, gamma_neg, clip, reduction=reduction, fast_path="reference")
    torch.testing.assert_close(fused, reference, rtol=1e-12, atol=1e-12)
    upstream = torch.rand_like(fused)  # a non-uniform upstream gradient for "none"
    torch.testing.assert_close(torch.autograd.grad((fused * upstream).sum(), x)[0],
                               torch.autograd.grad((reference * upstream).sum(), x)[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("gamma_pos", "gamma_neg", "clip"), ASL_SETTINGS)
def test_asymmetric_kernel_gradcheck_float64(gamma_pos: float, gamma_neg: float, clip: float) -> None:
    generator = torch.Generator().manual_seed(1)
    x = (torch.randn(6, 4, generator=generator, dtype=torch.float64) * 3).requires_grad_()
    t = (torch.rand(6, 4, generator=generator) < 0.4).double()
    assert torch.autograd.gradcheck(lambda z: asymmetric_loss(z, t, gamma_pos, gamma_neg, clip, fast_path="eager"), (x,))


def test_asymmetric_kernel_with_class_indices_masks_ignored_rows_and_equals_bce_without_focusing() -> None:
    x = torch.tensor([[2.0, -1.0, 0.5], [0.3, 0.2, -4.0], [1.0, 1.0, 1.0]], requires_grad=True)
    labels = torch.tensor([0, -100, 2])
    got = asymmetric_loss(x, labels, 0.0, 0.0, 0.0, fast_path="eager")
    one_hot = torch.tensor([[1.0, 0, 0], [0, 0, 1]])
    expected = F.binary_cross_entropy_with_logits(x[[0, 2]], one_hot)  # mean over the 6 elements that count
    torch.testing.assert_close(got, expected)
    got.backward()
    assert torch.equal(x.grad[1], torch.zeros(3))  # the ignored row gets no gradient


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_asymmetric_kernel_at_plus_minus_100_in_half_precision_is_finite_fp32(dtype, clip: float) -> None:
    x = torch.tensor([[100.0, -100.0, 0.5], [-100.0, 100.0, 3.0]], dtype=dtype, requires_grad=True)
    t = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]], dtype=dtype)
    loss = asymmetric_loss(x, t, 0.0, 4.0, clip, fast_path="eager")
    (grad,) = torch.autograd.grad(loss, x)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(loss, asymmetric_loss(x.float(), t.float(), 0.0, 4.0, clip, fast_path="reference"))
    # A confidently wrong positive (-100) keeps its full gradient, -1/6; so does a wrong negative (+100)
    # without a clip, where q / (1 - p_m) = 1 exactly. With one, 1 - p_m >= clip bounds that loss: it is flat.
    # (bf16 rounds 1/6 to 0.16699.)
    assert grad[0, 1].item() == pytest.approx(-1 / 6, rel=1e-2)
    assert grad[0, 0].item() == (pytest.approx(1 / 6, rel=1e-2) if clip == 0 else 0.0)


# --- GHM-C's and OHEM's closed-form kernels ---------------------------------------------

REWEIGHTED_BCE = {
    "ghm": lambda x, t, **kwargs: losses.ghmc_loss(x, t, bins=10, **kwargs),
    "ghm_3_bins": lambda x, t, **kwargs: losses.ghmc_loss(x, t, bins=3, **kwargs),
    "ohem": lambda x, t, **kwargs: losses.ohem_loss(x, t, neg_pos_ratio=3.0, **kwargs),
    "ohem_ratio_0.5": lambda x, t, **kwargs: losses.ohem_loss(x, t, neg_pos_ratio=0.5, **kwargs),
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "positives"])
@pytest.mark.parametrize("name", list(REWEIGHTED_BCE))
def test_reweighted_bce_kernels_equal_bce_weighted_by_the_same_selection(name: str, reduction: str) -> None:
    """The kernel path against BCE's own weighted kernel ("reference"), values and gradients, soft targets too."""
    generator = torch.Generator().manual_seed(2)
    x = (torch.randn(32, 5, 3, generator=generator, dtype=torch.float64) * 4).requires_grad_()
    t = (torch.rand(32, 5, 3, generator=generator) < 0.2).double()
    t[:4] *= torch.rand(4, 5, 3, generator=generator, dtype=torch.float64)  # soft positives
    fused = REWEIGHTED_BCE[name](x, t, reduction=reduction, fast_path="eager")
    reference = REWEIGHTED_BCE[name](x, t, reduction=reduction, fast_path="reference")
    torch.testing.assert_close(fused, reference, rtol=1e-12, atol=1e-12)
    upstream = torch.rand_like(fused)
    torch.testing.assert_close(torch.autograd.grad((fused * upstream).sum(), x)[0],
                               torch.autograd.grad((reference * upstream).sum(), x)[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(REWEIGHTED_BCE))
def test_reweighted_bce_kernels_gradcheck_float64_with_ignored_rows(name: str) -> None:
    generator = torch.Generator().manual_seed(3)
    x = (torch.randn(12, 4, generator=generator, dtype=torch.float64) * 3).requires_grad_()
    labels = torch.randint(0, 4, (12,), generator=generator)
    labels[::5] = -100
    assert torch.autograd.gradcheck(lambda z: REWEIGHTED_BCE[name](z, labels, fast_path="eager"), (x,))
    loss = REWEIGHTED_BCE[name](x, labels, fast_path="eager")
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.equal(grad[::5], torch.zeros_like(grad[::5]))  # ignored rows: no gradient
    torch.testing.assert_close(loss, REWEIGHTED_BCE[name](x, labels, fast_path="reference"), rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", list(REWEIGHTED_BCE))
def test_reweighted_bce_kernels_at_plus_minus_100_in_half_precision_are_finite_fp32(name: str, dtype) -> None:
    x = torch.tensor([[100.0, -100.0, 0.5, -2.0], [-100.0, 100.0, 3.0, 1.0]], dtype=dtype, requires_grad=True)
    t = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]], dtype=dtype)
    loss = REWEIGHTED_BCE[name](x, t, fast_path="eager")
    (grad,) = torch.autograd.grad(loss, x)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(loss, REWEIGHTED_BCE[name](x.float(), t.float(), fast_path="reference"))


def test_ohem_kernel_falls_back_to_the_mask_when_ties_decide() -> None:
    """Equal scores at the threshold that would keep more than the count: the first ones in index order."""
    x = torch.zeros(10, 4, dtype=torch.float64)
    x[0, 1] = 5.0  # one clear hard negative, then 39 tied at 0
    t = torch.zeros(10, 4, dtype=torch.float64)
    t[0, 0] = 1.0  # one positive: three negatives kept, two of them from the tie
    leaf = x.clone().requires_grad_()
    loss = losses.ohem_loss(leaf, t, neg_pos_ratio=3.0, reduction="sum", fast_path="eager")
    loss.backward()
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    assert loss.item() == pytest.approx(bce[0, 0].item() + bce[0, 1].item() + 2 * bce[0, 2].item(), rel=1e-12)
    assert int(torch.count_nonzero(leaf.grad)) == 4  # the positive, the hard negative, two tied ones


def test_closed_form_backward_keeps_its_gradient_across_retained_graphs() -> None:
    """The unit-upstream backward hands out the saved gradient: autograd must copy it, not write into it."""
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(16, 5, generator=generator, dtype=torch.float64)
    t = (torch.rand(16, 5, generator=generator) < 0.3).double()
    leaf = x.clone().requires_grad_()
    loss = asymmetric_loss(leaf, t, fast_path="eager")
    loss.backward(retain_graph=True)
    first = leaf.grad.clone()
    loss.backward(retain_graph=True)  # accumulates into leaf.grad
    assert torch.equal(leaf.grad, 2 * first)
    assert torch.equal(torch.autograd.grad(loss, leaf, retain_graph=True)[0], first)
    assert torch.equal(torch.autograd.grad(3 * loss, leaf, retain_graph=True)[0], 3 * first)  # a non-unit upstream
    # Changing autograd.grad's result in place, then backpropagating again: autograd's error, not a wrong gradient.
    returned = torch.autograd.grad(loss, leaf, retain_graph=True)[0]
    returned.clamp_(-0.01, 0.01)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(loss, leaf)
    shared = x.clone().requires_grad_()
    hidden = shared * 1.0  # one tensor into two losses: autograd sums the two saved gradients
    (asymmetric_loss(hidden, t, fast_path="eager") + asymmetric_loss(hidden, t, fast_path="eager")).backward()
    assert torch.equal(shared.grad, 2 * first)


# --- LDAM's closed-form kernel ------------------------------------------------------------

LDAM_SETTINGS = {  # (s, reweighted): Cao et al.'s s = 30 on raw logits reaches the subnormal floor
    "s1": (1.0, False),
    "s4_drw": (4.0, True),
    "s30": (30.0, False),
    "s30_drw": (30.0, True),
}


def ldam_kwargs(setting: str, dtype: torch.dtype = torch.float64) -> dict:
    s, reweighted = LDAM_SETTINGS[setting]
    weight = class_weights(COUNTS, "effective", 0.999).to(dtype) if reweighted else None
    return {"margins": losses.ldam_margins(COUNTS, max_m=0.5).to(dtype), "s": s, "weight": weight}


def ldam_against_reference(x: torch.Tensor, y: torch.Tensor, setting: str, reduction: str):
    """``(kernel, formula)`` values and gradients: the eager kernel against :func:`reference` above."""
    kwargs = ldam_kwargs(setting, x.dtype)
    got = values_and_grads(lambda z, t, **kw: losses.ldam_loss(z, t, fast_path="eager", **kw), x, y, kwargs, reduction)
    expected = values_and_grads(reference, x, y, {"target_margin": kwargs["margins"], "scale": kwargs["s"],
                                                  "class_weight": kwargs["weight"], "weighted_mean": True}, reduction)
    return got, expected


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("setting", list(LDAM_SETTINGS))
def test_ldam_kernel_equals_the_formula_with_ignored_rows(setting: str, reduction: str) -> None:
    x, y = batch((12, C))  # every fourth target is ignore_index
    got, expected = ldam_against_reference(x, y, setting, reduction)
    # float64's subnormal floor is 1e-154 of a row's probability mass: far below these tolerances.
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert got[1][y == -100].abs().max() == 0


@pytest.mark.parametrize("setting", ["s30", "s30_drw"])
def test_ldam_kernel_float32_at_s30_moves_nothing_but_the_floored_probabilities(setting: str) -> None:
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(64, C, generator=generator) * 5
    y = torch.randint(0, C, (64,), generator=generator)
    got, _ = ldam_against_reference(x, y, setting, "mean")
    want, _ = ldam_against_reference(x.double(), y, setting, "mean")  # float64: the floor is 1e-154
    torch.testing.assert_close(got[0].double(), want[0], rtol=1e-6, atol=0)
    assert (got[1].double() - want[1]).abs().max() < 1e-6


def test_ldam_kernel_gradcheck_float64() -> None:
    x, y = batch((10, C), seed=3)
    kwargs = ldam_kwargs("s4_drw")
    assert torch.autograd.gradcheck(lambda z: losses.ldam_loss(z, y, fast_path="eager", **kwargs),
                                    (x.requires_grad_(),))


def test_ldam_kernel_keeps_a_target_far_below_its_row_maximum_exact() -> None:
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(6, C, generator=generator)
    y = torch.randint(0, C, (6,), generator=generator)
    x.scatter_(1, y.unsqueeze(1), x.gather(1, y.unsqueeze(1)) - 10.0)  # 300 below the rest at s = 30
    margins = losses.ldam_margins(COUNTS)
    got = losses.ldam_loss(x, y, margins, 30.0, reduction="none", fast_path="eager")
    z = 30.0 * (x.double() - F.one_hot(y, C) * margins.double()[y].unsqueeze(1))
    expected = -torch.log_softmax(z, 1).gather(1, y.unsqueeze(1)).squeeze(1)
    assert float(expected.min()) > 250.0
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_ldam_kernel_at_plus_minus_100_in_half_precision_is_finite_fp32(dtype) -> None:
    x = torch.tensor([[100.0, -100.0, 0.0, -100.0, 100.0], [-100.0] * 5, [100.0, 100.0, -100.0, 0.0, 0.0]])
    x = x.repeat(3, 1).to(dtype).requires_grad_()
    y = torch.tensor([0, 1, 2, 4, 3, 2, 1, 0, 3])
    kwargs = ldam_kwargs("s30_drw", torch.float32)
    loss = losses.ldam_loss(x, y, fast_path="eager", **kwargs)
    loss.backward()
    assert loss.dtype == torch.float32 and x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()
    torch.testing.assert_close(loss, losses.ldam_loss(x.detach().float(), y, fast_path="reference", **kwargs))


def test_ldam_fast_paths_choose_their_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """``eager`` runs the closed-form kernel on (N, C); ``reference`` and segmentation shapes the fused one."""
    from lit_imbalance.losses import margin

    kernel_calls = []
    original = margin._ldam_kernel
    monkeypatch.setattr(margin, "_ldam_kernel", lambda *args: kernel_calls.append(1) or original(*args))
    margins = losses.ldam_margins(COUNTS)
    x, y = batch((12, C))
    segmentation_x, segmentation_y = batch((3, C, 2, 4))
    for fast_path, logits, target, runs_kernel in [("eager", x, y, True), ("reference", x, y, False),
                                                   ("eager", segmentation_x, segmentation_y, False)]:
        kernel_calls.clear()
        losses.ldam_loss(logits, target, margins, fast_path=fast_path)
        assert kernel_calls == ([1] if runs_kernel else []), (fast_path, tuple(logits.shape))
    with pytest.raises(ValueError, match="`fast_path` to be one of 'auto'.*but got 'fused'"):
        losses.LDAMLoss(COUNTS, fast_path="fused")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", ["all_ignored", "zero_class_weight", "non_contiguous"])
def test_ldam_kernel_equals_the_fused_kernel_at_the_edges(case: str, reduction: str) -> None:
    x, y = batch((12, C), seed=7)
    kwargs = ldam_kwargs("s4_drw")
    if case == "all_ignored":
        y = torch.full_like(y, -100)
    elif case == "zero_class_weight":
        kwargs["weight"] = kwargs["weight"].clone().index_fill_(0, torch.tensor([0, 2]), 0.0)
    else:
        x = torch.randn(C, 12, dtype=torch.float64).t()  # a transposed view
    results = {}
    for fast_path in ("eager", "reference"):
        results[fast_path] = values_and_grads(lambda z, t, **kw: losses.ldam_loss(z, t, fast_path=fast_path, **kw),
                                              x, y, kwargs, reduction)
    torch.testing.assert_close(results["eager"], results["reference"], rtol=1e-10, atol=1e-12)
    if case == "all_ignored":
        assert results["eager"][1].abs().max() == 0 and results["eager"][0].abs().max() == 0


def test_ldam_refuses_hyper_parameters_that_require_grad() -> None:
    margins = losses.ldam_margins(COUNTS).requires_grad_()
    with pytest.raises(ValueError, match="`margins` to be a tensor without gradient"):
        losses.ldam_loss(torch.randn(4, C), torch.zeros(4, dtype=torch.long), margins, fast_path="eager")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_closed_form_backward_scales_a_reduced_one_dimensional_loss(reduction: str) -> None:
    """A 0-d upstream gradient other than 1 (a blended warm-up, a scaled loss) on 1-D logits."""
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(8, generator=generator, dtype=torch.float64)
    t = (torch.rand(8, generator=generator) < 0.5).double()
    grads = {}
    for fast_path in ("eager", "reference"):
        leaf = x.clone().requires_grad_()
        (0.5 * asymmetric_loss(leaf, t, reduction=reduction, fast_path=fast_path)).backward()
        grads[fast_path] = leaf.grad
    torch.testing.assert_close(grads["eager"], grads["reference"], rtol=1e-10, atol=1e-12)
