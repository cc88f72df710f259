"""Loss values against formulas written here (not the library re-called), special cases, API and errors."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from lit_imbalance import losses
from lit_imbalance.losses import (
    AsymmetricLoss,
    BalancedSoftmaxLoss,
    ClassBalancedLoss,
    CostSensitiveLoss,
    CrossEntropyLoss,
    FocalLoss,
    GHMCLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    OHEMLoss,
    SigmoidFocalLoss,
    SoftTruncatedCrossEntropyLoss,
    TruncatedCrossEntropyLoss,
    WeightedCrossEntropyLoss,
    available_losses,
    build_loss,
    sigmoid_focal_loss,
    softmax_focal_loss,
)
from lit_imbalance.losses.ohem import kth_largest, partitioned_kth_largest

CONF_LOSS = Path(__file__).resolve().parents[1] / "conf" / "loss"
CATALOGUE = [
    "ce",
    "weighted_ce",
    "cost_sensitive",
    "sigmoid_focal",
    "focal",
    "class_balanced",
    "ldam",
    "balanced_softmax",
    "logit_adjusted",
    "asymmetric",
    "ghm",
    "ohem",
    "truncated_ce",
    "soft_truncated_ce",
]
COUNTS = [50, 20, 8, 3]
C = len(COUNTS)


def make_loss(name: str, **kwargs) -> torch.nn.Module:
    """Every loss of the catalogue, with class counts when it needs them."""
    cls = losses.LOSSES[name]
    if cls.needs_class_counts:
        kwargs.setdefault("class_counts", COUNTS)
    return build_loss(name, **kwargs)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(32, C, generator=generator, dtype=torch.float64) * 2
    target = torch.randint(0, C, (32,), generator=generator)
    return logits, target


# --- independent reference formulas ------------------------------------------------------


def ref_log_softmax(x: torch.Tensor) -> torch.Tensor:
    shifted = x - x.max(1, keepdim=True).values
    return shifted - shifted.exp().sum(1, keepdim=True).log()


def ref_ce(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample -log softmax(x)_y."""
    return -ref_log_softmax(x)[torch.arange(len(y)), y]


def ref_bce(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    p = 1 / (1 + torch.exp(-x))
    return -(t * torch.log(p) + (1 - t) * torch.log(1 - p))


def torchvision_sigmoid_focal(x, t, alpha=0.25, gamma=2.0, reduction="mean"):
    """torchvision.ops.sigmoid_focal_loss, verbatim."""
    p = torch.sigmoid(x)
    ce_loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * t + (1 - alpha) * (1 - t)
        loss = alpha_t * loss
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def one_hot(y: torch.Tensor, num_classes: int = C) -> torch.Tensor:
    return torch.eye(num_classes, dtype=torch.float64)[y]


def effective_weights(counts, beta):
    """Cui et al.'s code: (1 - beta) / (1 - beta^n), normalised to sum to C."""
    weights = [(1 - beta) / (1 - beta**n) for n in counts]
    return torch.tensor([w / sum(weights) * len(counts) for w in weights], dtype=torch.float64)


# --- registry, YAML, class attributes ------------------------------------------------------


def test_registry_lists_the_catalogue() -> None:
    assert available_losses() == CATALOGUE
    for name in CATALOGUE:
        loss = make_loss(name)
        assert isinstance(type(loss).needs_class_counts, bool)
        assert list(inspect.signature(type(loss).forward).parameters) == ["self", "logits", "target"]


def test_build_loss_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="Expected argument `name` to be one of 'ce'.*but got 'nope'"):
        build_loss("nope")


@pytest.mark.parametrize("name", CATALOGUE)
def test_yaml_mirrors_the_constructor(name: str) -> None:
    config = yaml.safe_load((CONF_LOSS / f"{name}.yaml").read_text())
    cls = losses.LOSSES[name]
    assert config.pop("_target_") == f"lit_imbalance.losses.{cls.__name__}"
    parameters = dict(inspect.signature(cls.__init__).parameters)
    parameters.pop("self")
    assert list(config) == list(parameters)
    assert config == {key: parameter.default for key, parameter in parameters.items()}


def test_every_yaml_is_a_catalogue_loss() -> None:
    assert sorted(path.stem for path in CONF_LOSS.glob("*.yaml")) == sorted(CATALOGUE)


# --- values ---------------------------------------------------------------------------------


def test_ce_matches_the_formula_with_label_smoothing_and_ignore_index(batch) -> None:
    x, y = batch
    y = y.clone()
    y[:5] = -100
    eps = 0.1
    q = (1 - eps) * one_hot(y[5:]) + eps / C
    expected = -(q * ref_log_softmax(x[5:])).sum(1).mean()
    assert CrossEntropyLoss(label_smoothing=eps)(x, y).item() == pytest.approx(expected.item(), rel=1e-10)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_sigmoid_focal_is_torchvision(reduction: str) -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(16, 5, generator=generator, dtype=torch.float64) * 3
    hard = (torch.rand(16, 5, generator=generator) < 0.3).double()
    soft = torch.rand(16, 5, generator=generator, dtype=torch.float64)
    for t in (hard, soft):
        for alpha, gamma in [(0.25, 2.0), (-1.0, 0.5), (0.9, 0.0), (0.5, 5.0)]:
            for fast_path in ("eager", "reference"):
                got = sigmoid_focal_loss(x, t, alpha, gamma, reduction, fast_path=fast_path)
                torch.testing.assert_close(got, torchvision_sigmoid_focal(x, t, alpha, gamma, reduction))


def test_sigmoid_focal_positional_call_like_torchvision() -> None:
    x, t = torch.randn(8, 3, dtype=torch.float64), (torch.rand(8, 3) < 0.5).double()
    expected = torchvision_sigmoid_focal(x, t, 0.5, 1.0, "sum")
    torch.testing.assert_close(sigmoid_focal_loss(x, t, 0.5, 1.0, "sum"), expected)


def test_sigmoid_focal_pos_weight_and_positives_reduction() -> None:
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(10, 3, generator=generator, dtype=torch.float64)
    t = (torch.rand(10, 3, generator=generator) < 0.4).double()
    pos_weight = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    p = torch.sigmoid(x)
    bce = -(pos_weight * t * torch.log(p) + (1 - t) * torch.log(1 - p))
    expected = bce * (p * (1 - t) + (1 - p) * t) ** 2 * (0.25 * t + 0.75 * (1 - t))
    for fast_path in ("eager", "reference"):
        got = sigmoid_focal_loss(x, t, reduction="positives", pos_weight=pos_weight, fast_path=fast_path)
        assert got.item() == pytest.approx((expected.sum() / max(1.0, t.sum().item())).item(), rel=1e-10)


def test_sigmoid_losses_one_hot_class_indices_and_mask_ignored_rows(batch) -> None:
    x, y = batch
    y = y.clone()
    y[:4] = -100
    expected = torchvision_sigmoid_focal(x[4:], one_hot(y[4:]), reduction="mean")
    assert SigmoidFocalLoss()(x, y).item() == pytest.approx(expected.item(), rel=1e-10)
    assert SigmoidFocalLoss(reduction="none")(x, y)[:4].abs().sum() == 0


def test_single_logit_binary_head_reads_class_indices_as_labels() -> None:
    x = torch.randn(6, 1, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    expected = torchvision_sigmoid_focal(x, y.double().unsqueeze(1))
    assert sigmoid_focal_loss(x, y).item() == pytest.approx(expected.item(), rel=1e-10)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_softmax_focal_matches_the_formula(batch, gamma: float) -> None:
    x, y = batch
    p_true = torch.softmax(x, 1)[torch.arange(len(y)), y]
    alpha = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    expected = (-alpha[y] * (1 - p_true) ** gamma * torch.log(p_true)).mean()
    # Per-class alphas are stored in float32, hence the tolerance.
    assert softmax_focal_loss(x, y, gamma, alpha.tolist()).item() == pytest.approx(expected.item(), rel=1e-6)
    # A scalar alpha: class 0 gets alpha, every other class 1 - alpha.
    scalar = torch.where(y == 0, 0.25, 0.75)
    expected = (-scalar * (1 - p_true) ** gamma * torch.log(p_true)).mean()
    assert FocalLoss(gamma, alpha=0.25)(x, y).item() == pytest.approx(expected.item(), rel=1e-10)


def test_weighted_ce_by_target_and_by_prediction(batch) -> None:
    x, y = batch
    inverse = torch.tensor([1 / n for n in COUNTS], dtype=torch.float64)
    weight = inverse / inverse.sum() * C
    ce = ref_ce(x, y)
    expected = (weight[y] * ce).sum() / weight[y].sum()
    assert WeightedCrossEntropyLoss(class_counts=COUNTS)(x, y).item() == pytest.approx(expected.item(), rel=1e-6)
    predicted = x.argmax(1)
    expected = (weight[predicted] * ce).sum() / weight[predicted].sum()
    got = WeightedCrossEntropyLoss(class_counts=COUNTS, weight_by="prediction")(x, y)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_cost_sensitive_is_ce_weighted_by_the_expected_cost(batch) -> None:
    x, y = batch
    cost = torch.tensor([[0, 1, 2, 3], [1, 0, 1, 2], [5, 5, 0, 5], [9, 1, 1, 0]], dtype=torch.float64)
    p = torch.softmax(x, 1)
    expected = ((p * cost[y]).sum(1) * ref_ce(x, y)).mean()
    assert CostSensitiveLoss(cost.tolist())(x, y).item() == pytest.approx(expected.item(), rel=1e-10)
    # The default 0-1 cost weights each sample by 1 - p_y.
    expected = ((1 - p[torch.arange(len(y)), y]) * ref_ce(x, y)).mean()
    assert CostSensitiveLoss()(x, y).item() == pytest.approx(expected.item(), rel=1e-10)


def test_class_balanced_follows_cui_et_al(batch) -> None:
    x, y = batch
    beta = 0.99
    weight = effective_weights(COUNTS, beta)
    labels = one_hot(y)
    row = (labels * weight).sum(1, keepdim=True)
    softmax = (weight[y] * ref_ce(x, y)).mean()
    sigmoid = (row * ref_bce(x, labels)).mean()
    gamma = 2.0
    # Cui et al.'s focal modulator, written their way: exp(-gamma t x - gamma log(1 + exp(-x))).
    modulator = torch.exp(-gamma * labels * x - gamma * torch.log1p(torch.exp(-x)))
    sigmoid_focal = (row * modulator * ref_bce(x, labels)).sum() / labels.sum()
    p_true = torch.softmax(x, 1)[torch.arange(len(y)), y]
    focal = (weight[y] * (1 - p_true) ** gamma * ref_ce(x, y)).mean()
    cases = {
        ("softmax", "mean"): softmax,
        ("sigmoid", "mean"): sigmoid,
        ("sigmoid_focal", "positives"): sigmoid_focal,
        ("focal", "mean"): focal,
    }
    for (base, reduction), expected in cases.items():
        got = ClassBalancedLoss(COUNTS, beta=beta, base=base, gamma=gamma, reduction=reduction)(x, y)
        assert got.item() == pytest.approx(expected.item(), rel=1e-6), base


def test_ldam_follows_cao_et_al(batch) -> None:
    x, y = batch
    margins = torch.tensor([n**-0.25 for n in COUNTS], dtype=torch.float64)
    margins = margins * (0.5 / margins.max())
    s = 10.0
    shifted = x - one_hot(y) * margins[y].unsqueeze(1)
    expected = ref_ce(s * shifted, y).mean()
    assert LDAMLoss(COUNTS, max_m=0.5, s=s)(x, y).item() == pytest.approx(expected.item(), rel=1e-6)
    # Re-weighted (the DRW target): weighted mean with effective-number weights.
    weight = effective_weights(COUNTS, 0.9999)
    expected = (weight[y] * ref_ce(s * shifted, y)).sum() / weight[y].sum()
    got = LDAMLoss(COUNTS, max_m=0.5, s=s, reweight="effective")(x, y)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_balanced_softmax_and_logit_adjustment(batch) -> None:
    x, y = batch
    log_pi = torch.log(torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS))
    assert BalancedSoftmaxLoss(COUNTS)(x, y).item() == pytest.approx(ref_ce(x + log_pi, y).mean().item(), rel=1e-6)
    got = LogitAdjustedLoss(COUNTS, tau=0.5)(x, y)
    assert got.item() == pytest.approx(ref_ce(x + 0.5 * log_pi, y).mean().item(), rel=1e-6)


def test_asymmetric_matches_the_reference_code() -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(12, 6, generator=generator, dtype=torch.float64) * 2
    t = (torch.rand(12, 6, generator=generator) < 0.3).double()
    gamma_pos, gamma_neg, clip, eps = 1.0, 4.0, 0.05, 1e-8
    # Ridnik et al.'s AsymmetricLoss.forward (logits moderate, so its eps clamp is inactive).
    xs_pos = torch.sigmoid(x)
    xs_neg = (1 - xs_pos + clip).clamp(max=1)
    loss = t * torch.log(xs_pos.clamp(min=eps)) + (1 - t) * torch.log(xs_neg.clamp(min=eps))
    pt = xs_pos * t + xs_neg * (1 - t)
    loss = loss * torch.pow(1 - pt, gamma_pos * t + gamma_neg * (1 - t))
    got = AsymmetricLoss(gamma_pos, gamma_neg, clip, reduction="sum")(x, t)
    assert got.item() == pytest.approx(-loss.sum().item(), rel=1e-10)


def mmdet_ghmc(x: torch.Tensor, t: torch.Tensor, bins: int) -> torch.Tensor:
    """mmdetection's GHMC.forward with momentum 0 and all label weights 1."""
    edges = [i / bins for i in range(bins + 1)]
    edges[-1] += 1e-6
    g = torch.abs(x.sigmoid() - t)
    tot = max(float(t.numel()), 1.0)
    weights = torch.zeros_like(x)
    n = 0
    for i in range(bins):
        inds = (g >= edges[i]) & (g < edges[i + 1])
        num_in_bin = inds.sum().item()
        if num_in_bin > 0:
            weights[inds] = tot / num_in_bin
            n += 1
    if n > 0:
        weights = weights / n
    return F.binary_cross_entropy_with_logits(x, t, weights, reduction="sum") / tot


@pytest.mark.parametrize("fast_path", ["reference", "eager"])
def test_ghm_matches_mmdetection(fast_path: str) -> None:
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(20, 5, generator=generator, dtype=torch.float64) * 3
    t = (torch.rand(20, 5, generator=generator) < 0.2).double()
    for bins in (10, 3):
        got = GHMCLoss(bins=bins, fast_path=fast_path)(x, t)
        assert got.item() == pytest.approx(mmdet_ghmc(x, t, bins).item(), rel=1e-10)


@pytest.mark.parametrize("fast_path", ["reference", "eager"])
def test_ghm_moving_average_updates_only_in_training(fast_path: str) -> None:
    generator = torch.Generator().manual_seed(5)
    x1, x2 = (torch.randn(30, 4, generator=generator, dtype=torch.float64) * 3 for _ in range(2))
    t = (torch.rand(30, 4, generator=generator) < 0.3).double()
    loss = GHMCLoss(bins=4, momentum=0.5, fast_path=fast_path).double()

    def fractions(x: torch.Tensor) -> torch.Tensor:
        index = ((x.sigmoid() - t).abs() * 4).long().clamp(max=3)
        return torch.bincount(index.flatten(), minlength=4).double() / t.numel()

    loss(x1, t)
    torch.testing.assert_close(loss.bin_fractions, fractions(x1))
    loss(x2, t)
    first, second = fractions(x1), fractions(x2)
    expected = torch.where(second > 0, torch.where(first > 0, 0.5 * first + 0.5 * second, second), first)
    torch.testing.assert_close(loss.bin_fractions, expected)
    loss.eval()
    loss(x1, t)
    torch.testing.assert_close(loss.bin_fractions, expected)


@pytest.mark.parametrize("fast_path", ["reference", "eager"])
def test_ohem_keeps_positives_and_the_hardest_negatives(fast_path: str) -> None:
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(8, 5, generator=generator, dtype=torch.float64) * 2
    y = torch.randint(0, 5, (8,), generator=generator)
    t = one_hot(y, 5)
    bce = ref_bce(x, t).flatten()
    positives = t.flatten() > 0
    negatives = sorted(bce[~positives].tolist(), reverse=True)[: int(3 * positives.sum())]
    kept = bce[positives].tolist() + negatives
    assert OHEMLoss(fast_path=fast_path)(x, y).item() == pytest.approx(sum(kept) / len(kept), rel=1e-10)
    top = sorted(bce.tolist(), reverse=True)[:7]
    assert OHEMLoss(top_k=7, fast_path=fast_path)(x, y).item() == pytest.approx(sum(top) / 7, rel=1e-10)
    positives_mean = OHEMLoss(reduction="positives", fast_path=fast_path)(x, y)
    assert positives_mean.item() == pytest.approx(sum(kept) / 8, rel=1e-10)


@pytest.mark.parametrize("fast_path", ["reference", "eager"])
def test_ohem_ranks_negatives_by_logit_as_by_loss_with_soft_positives_and_ignored_rows(fast_path: str) -> None:
    """The ratio mode ranks negatives by their logits: the same choice as ranking by BCE, at scale."""
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(400, 30, generator=generator, dtype=torch.float64) * 3
    t = (torch.rand(400, 30, generator=generator) < 0.05).double()
    t[t > 0] *= torch.rand(int(t.sum()), generator=generator, dtype=torch.float64) * 0.9 + 0.1  # soft positives
    bce = ref_bce(x, t).flatten()
    positives = t.flatten() > 0
    negatives = sorted(bce[~positives].tolist(), reverse=True)[: int(3 * positives.sum())]
    kept = bce[positives].tolist() + negatives
    assert OHEMLoss(fast_path=fast_path)(x, t).item() == pytest.approx(sum(kept) / len(kept), rel=1e-10)
    # Class-index targets with ignored rows: those rows are neither positives nor negatives.
    y = torch.randint(0, 30, (400,), generator=generator)
    y[::7] = -100
    counted = y != -100
    bce = ref_bce(x[counted], one_hot(y[counted], 30)).flatten()
    positives = one_hot(y[counted], 30).flatten() > 0
    negatives = sorted(bce[~positives].tolist(), reverse=True)[: int(3 * positives.sum())]
    kept = bce[positives].tolist() + negatives
    assert OHEMLoss(fast_path=fast_path)(x, y).item() == pytest.approx(sum(kept) / len(kept), rel=1e-10)


@pytest.mark.parametrize("fast_path", ["reference", "eager"])
def test_ohem_on_an_empty_batch_and_with_ignored_rows_at_a_minus_inf_threshold(fast_path: str) -> None:
    empty = torch.randn(0, 3, requires_grad=True)
    value = OHEMLoss(fast_path=fast_path)(empty, torch.zeros(0, dtype=torch.long))
    assert value.item() == 0.0
    # A negative at -inf makes the threshold -inf, where the masked-out entries are -inf too: the
    # ignored row must stay out of the tie that decides which negatives are kept.
    x = torch.tensor([[5.0, 5.0, 5.0], [1.0, 2.0, -torch.inf]], requires_grad=True)
    (grad,) = torch.autograd.grad(OHEMLoss(neg_pos_ratio=2.0, fast_path=fast_path)(x, torch.tensor([-100, 0])), x)
    assert torch.equal(grad[0], torch.zeros(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_kth_largest_matches_a_sort_with_ties(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(8)
    values = torch.randint(-50, 50, (5_000,), generator=generator).to(dtype)  # many ties
    values[:100] = -torch.inf
    descending = values.sort(descending=True).values
    for k in (1, 17, 2_500, 4_900, 5_000):
        assert kth_largest(values, k).item() == descending[k - 1].item()
        threshold, ties_past_k = partitioned_kth_largest(values, k)
        assert ties_past_k == int((descending[k:] == threshold).sum())
    with pytest.raises(ValueError, match=r"`k` to be an int in 1\.\.5000, but got 0"):
        kth_largest(values, 0)


def test_truncated_ce_drops_samples_past_the_margin(batch) -> None:
    x, y = batch
    ce = ref_ce(x, y)
    p_true = torch.exp(-ce)
    assert (p_true > 0.5).any() and (p_true <= 0.5).any()
    expected = torch.where(p_true > 0.5, 0.0, ce).mean()
    assert TruncatedCrossEntropyLoss(m=0.5)(x, y).item() == pytest.approx(expected.item(), rel=1e-10)
    soft = (torch.sigmoid(20.0 * (0.5 - p_true)) * ce).mean()
    assert SoftTruncatedCrossEntropyLoss(m=0.5, K=20.0)(x, y).item() == pytest.approx(soft.item(), rel=1e-10)
    sharp = SoftTruncatedCrossEntropyLoss(m=0.5, K=1e6)(x, y)
    assert sharp.item() == pytest.approx(expected.item(), rel=1e-6)


# --- special cases ------------------------------------------------------------------------


def test_focal_with_gamma_zero_and_no_alpha_is_ce(batch) -> None:
    x, y = batch
    assert FocalLoss(gamma=0.0)(x, y).item() == pytest.approx(F.cross_entropy(x, y).item(), rel=1e-12)
    t = one_hot(y)
    for fast_path in ("eager", "reference"):
        got = sigmoid_focal_loss(x, t, alpha=None, gamma=0.0, fast_path=fast_path)
        assert got.item() == pytest.approx(F.binary_cross_entropy_with_logits(x, t).item(), rel=1e-12)


def test_logit_adjusted_with_tau_zero_is_ce(batch) -> None:
    x, y = batch
    assert LogitAdjustedLoss(COUNTS, tau=0.0)(x, y).item() == pytest.approx(F.cross_entropy(x, y).item(), rel=1e-12)


@pytest.mark.parametrize("base", ["softmax", "sigmoid", "focal", "sigmoid_focal"])
def test_class_balanced_with_beta_zero_is_its_base(batch, base: str) -> None:
    x, y = batch
    bases = {
        "softmax": lambda: F.cross_entropy(x, y),
        "sigmoid": lambda: F.binary_cross_entropy_with_logits(x, one_hot(y)),
        "focal": lambda: softmax_focal_loss(x, y, gamma=2.0),
        "sigmoid_focal": lambda: sigmoid_focal_loss(x, y, alpha=None, gamma=2.0),
    }
    got = ClassBalancedLoss(COUNTS, beta=0.0, base=base)(x, y)
    assert got.item() == pytest.approx(bases[base]().item(), rel=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "positives"])
@pytest.mark.parametrize("shape", [(16, 4), (6, 4, 3)], ids=["NC", "NCd"])
def test_class_balanced_sigmoid_weights_each_sample_by_its_class(reduction: str, shape: tuple[int, ...]) -> None:
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(shape, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 4, shape[:1] + shape[2:], generator=generator)
    labels.view(-1)[:3] = -100  # ignored entries count nowhere
    counts, beta = [50, 20, 5, 2], 0.99
    effective = (1 - beta) / (1 - beta ** torch.tensor(counts, dtype=torch.float64))  # Cui et al.'s 1 / E_n
    weight = effective / effective.sum() * 4  # summing to C
    valid = labels != -100
    one_hot_targets = F.one_hot(labels.clamp_min(0), 4).movedim(-1, 1).double()
    per_element = F.binary_cross_entropy_with_logits(x, one_hot_targets, reduction="none")
    per_element = per_element * (weight[labels.clamp_min(0)] * valid).unsqueeze(1)  # each sample its class's weight
    expected = {"none": per_element, "sum": per_element.sum(),
                "mean": per_element.sum() / (valid.sum() * 4),
                "positives": per_element.sum() / valid.sum()}[reduction]
    got = ClassBalancedLoss(counts, beta=beta, base="sigmoid", reduction=reduction)(x, labels)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(torch.autograd.grad(got.sum(), x)[0], torch.autograd.grad(expected.sum(), x)[0])


@pytest.mark.parametrize("reduction", ["mean", "none", "positives"])
@pytest.mark.parametrize("num_samples", [16, 1 << 12], ids=["BCE's kernel", "compiled kernel, 2^20 elements"])
def test_class_balanced_sigmoid_weights_multi_hot_rows_by_their_classes(num_samples: int, reduction: str) -> None:
    """Same-shape (multi-hot) targets: a row weighs the sum of its classes' weights, on either path."""
    generator = torch.Generator().manual_seed(9)
    num_classes = 256
    x = torch.randn(num_samples, num_classes, generator=generator) * 3
    t = (torch.rand(num_samples, num_classes, generator=generator) < 0.02).float()
    counts = torch.logspace(3, 0, num_classes).round().long().tolist()
    effective = (1 - 0.999) / (1 - 0.999 ** torch.tensor(counts, dtype=torch.float64))  # Cui et al.'s 1 / E_n
    weight = effective / effective.sum() * num_classes  # summing to C
    row_weight = (t.double() * weight).sum(1, keepdim=True)
    leaf64 = x.double().requires_grad_()
    per_element = F.binary_cross_entropy_with_logits(leaf64, t.double(), reduction="none") * row_weight
    expected = {"none": per_element, "mean": per_element.mean(),
                "positives": per_element.sum() / t.sum().clamp_min(1)}[reduction]
    leaf = x.clone().requires_grad_()
    got = ClassBalancedLoss(counts, beta=0.999, base="sigmoid", reduction=reduction)(leaf, t)
    upstream = torch.rand(got.shape, generator=generator)
    (got * upstream).sum().backward()
    (expected * upstream.double()).sum().backward()
    # Relative to the largest entry: float32 BCE (torch's own too) is off by up to 1% on losses near 1e-5.
    for fp32, fp64 in ((got.detach(), expected.detach()), (leaf.grad, leaf64.grad)):
        assert (fp32.double() - fp64).abs().max() <= 1e-6 * fp64.abs().max()


# --- reductions, ignore_index, segmentation shapes -----------------------------------------


@pytest.mark.parametrize("name", CATALOGUE)
def test_reductions_agree(name: str, batch) -> None:
    x, y = batch
    none = make_loss(name, reduction="none")(x, y)
    expected_shape = x.shape if name in {"sigmoid_focal", "asymmetric", "ghm", "ohem"} else y.shape
    assert none.shape == expected_shape
    assert make_loss(name, reduction="sum")(x, y).item() == pytest.approx(none.sum().item(), rel=1e-10)


@pytest.mark.parametrize("name", CATALOGUE)
def test_segmentation_shapes_equal_the_flattened_batch(name: str) -> None:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(2, C, 3, 5, generator=generator, dtype=torch.float64)
    y = torch.randint(0, C, (2, 3, 5), generator=generator)
    y[0, 0, :2] = -100
    flat_x, flat_y = x.permute(0, 2, 3, 1).reshape(-1, C), y.reshape(-1)
    loss = make_loss(name)
    assert loss(x, y).item() == pytest.approx(loss(flat_x, flat_y).item(), rel=1e-10)
    assert make_loss(name, reduction="none")(x, y).shape[0] == 2


@pytest.mark.parametrize("name", [n for n in CATALOGUE if n != "ohem"])
def test_ignored_targets_are_as_if_absent(name: str, batch) -> None:
    x, y = batch
    y = y.clone()
    y[::3] = -100
    keep = y != -100
    loss = make_loss(name)
    assert loss(x, y).item() == pytest.approx(loss(x[keep], y[keep]).item(), rel=1e-10)


def test_all_ignored_batch_gives_zero_not_nan(batch) -> None:
    x, _ = batch
    y = torch.full((x.shape[0],), -100)
    for name in CATALOGUE:
        assert make_loss(name)(x, y).item() == 0.0, name


def test_fp32_under_autocast() -> None:
    x = torch.randn(8, C, dtype=torch.bfloat16)
    y = torch.randint(0, C, (8,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for name in CATALOGUE:
            assert make_loss(name)(x, y).dtype == torch.float32, name


# --- class counts -------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in CATALOGUE if losses.LOSSES[n].needs_class_counts])
def test_class_counts_are_buffers_that_follow_the_module(name: str, batch) -> None:
    x, y = batch
    loss = build_loss(name)
    with pytest.raises(RuntimeError, match="`class_counts` to be given to .*, but got None"):
        loss(x, y)
    loss.set_class_counts(COUNTS)
    expected = loss(x, y)
    state = loss.state_dict()
    assert state["class_counts"].tolist() == COUNTS
    fresh = build_loss(name)
    fresh.load_state_dict(state)
    assert fresh(x, y).item() == pytest.approx(expected.item(), rel=1e-6)
    loss.half()
    assert loss.class_counts.dtype == torch.int64
    loss.to("meta")
    assert all(buffer.device.type == "meta" for buffer in loss.buffers())


def test_class_counts_are_checked_against_the_logits(batch) -> None:
    x, y = batch
    with pytest.raises(ValueError, match=r"`class_counts` to be 4 counts .*, but got \[5, 5, 5\]"):
        LogitAdjustedLoss([5, 5, 5])(x, y)


def test_losses_without_statistics_have_no_set_class_counts() -> None:
    for name in CATALOGUE:
        loss = make_loss(name)
        assert hasattr(loss, "set_class_counts") == type(loss).needs_class_counts


# --- bad input ----------------------------------------------------------------------------

X, Y = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])

BAD_INPUT = [
    (lambda: sigmoid_focal_loss(X, Y, gamma=-1), "`gamma` to be a non-negative float, but got -1"),
    (lambda: FocalLoss(gamma=-0.5), "`gamma` to be a non-negative float, but got -0.5"),
    (lambda: sigmoid_focal_loss(X, Y, alpha=1.5), "`alpha` to be a float in \\[0, 1\\], but got 1.5"),
    (lambda: FocalLoss(alpha=1.2), "`alpha` to be a float in \\[0, 1\\], but got 1.2"),
    (lambda: FocalLoss(alpha=[0.5, 0.5])(X, Y), "`alpha` to be 3 values .*, but got \\[0.5, 0.5\\]"),
    (lambda: FocalLoss(alpha=[0.5, 1.5, 0.1]), "`alpha` to be per-class weights in \\[0, 1\\], but got \\[0.5, 1.5"),
    (lambda: softmax_focal_loss(X, Y, alpha=[0.1, 0.2]), "`alpha` to be 3 values"),
    (lambda: CostSensitiveLoss([[0, 1], [1, 0]])(X, Y), "`cost_matrix` to be a 3 x 3 matrix .*, but got \\[\\[0.0"),
    (lambda: CostSensitiveLoss([[0, 1, 2], [1, 0, 1]]), "`cost_matrix` to be a square C x C matrix"),
    (lambda: CostSensitiveLoss([[0, -1], [1, 0]]), "`cost_matrix` to be non-negative costs"),
    (lambda: BalancedSoftmaxLoss([5, 0, 3]), "`class_counts` to be at least one sample in every class .*0.0"),
    (lambda: LogitAdjustedLoss([5, 0, 3]), "`class_counts` to be at least one sample in every class"),
    (lambda: LDAMLoss([5, 0, 3]), "`class_counts` .*margin n\\^\\(-1/4\\) is infinite.*0.0"),
    (lambda: WeightedCrossEntropyLoss([2.5, 3]), "`class_counts` to be whole numbers .*2.5"),
    (lambda: ClassBalancedLoss([-1, 3]), "`class_counts` to be finite non-negative per-class counts"),
    (lambda: CrossEntropyLoss()(X, torch.tensor([0, 1])), "`target` to be class indices of shape \\(4,\\) .*\\(2,\\)"),
    (lambda: CrossEntropyLoss()(X, Y.float()), "`target` to be integer class indices, but got 'dtype torch.float32'"),
    (lambda: CrossEntropyLoss()(X, torch.tensor([0, 3, 1, 1])), "`target` to be class indices in 0..2 .*, but got 3"),
    (lambda: FocalLoss()(X, torch.tensor([0, -5, 1, 1])), "`target` to be class indices in 0..2 .*, but got -5"),
    (lambda: SigmoidFocalLoss()(X, torch.tensor([0, 7, 1, 1])), "`target` to be class indices in 0..2 .*, but got 7"),
    (lambda: SigmoidFocalLoss()(X, torch.zeros(4, 2)), "`target` to be a tensor of the logits' shape \\(4, 3\\)"),
    (lambda: CrossEntropyLoss()(torch.randn(4), Y), "`logits` to be a tensor of shape \\(N, C\\)"),
    (lambda: CrossEntropyLoss(reduction="avg"), "`reduction` to be one of 'mean', 'sum', 'none', but got 'avg'"),
    (lambda: CrossEntropyLoss(reduction="positives"), "`reduction` .*but got 'positives'"),
    (lambda: CrossEntropyLoss(label_smoothing=2.0), "`label_smoothing` to be a float in \\[0, 1\\], but got 2.0"),
    (lambda: SigmoidFocalLoss(fast_path="gpu"), "`fast_path` to be one of .*, but got 'gpu'"),
    (lambda: SigmoidFocalLoss(pos_weight=[1.0, -2.0]), "`pos_weight` to be positive weights, but got \\[1.0, -2.0\\]"),
    (lambda: SigmoidFocalLoss(pos_weight=[1.0, 2.0])(X, Y), "`pos_weight` to be 3 values"),
    (lambda: WeightedCrossEntropyLoss(scheme="log"), "`scheme` to be one of 'inverse', .*, but got 'log'"),
    (lambda: WeightedCrossEntropyLoss(weight_by="label"), "`weight_by` to be one of .*, but got 'label'"),
    (lambda: ClassBalancedLoss(beta=1.0), "`beta` to be a float in \\[0, 1\\), but got 1.0"),
    (lambda: ClassBalancedLoss(base="hinge"), "`base` to be one of .*, but got 'hinge'"),
    (lambda: ClassBalancedLoss(reduction="positives"), "`reduction` .*but got 'positives'"),
    (lambda: LDAMLoss(s=0), "`s` to be a positive float, but got 0"),
    (lambda: LDAMLoss(max_m=-0.5), "`max_m` to be a positive float, but got -0.5"),
    (lambda: LDAMLoss(reweight="inv"), "`reweight` to be one of None, 'inverse'.*, but got 'inv'"),
    (lambda: LogitAdjustedLoss(tau=-1), "`tau` to be a non-negative float, but got -1"),
    (lambda: AsymmetricLoss(gamma_neg=-2), "`gamma_neg` to be a non-negative float, but got -2"),
    (lambda: AsymmetricLoss(clip=1.5), "`clip` to be a float in \\[0, 1\\], but got 1.5"),
    (lambda: GHMCLoss(bins=0), "`bins` to be a positive integer, but got 0"),
    (lambda: GHMCLoss(momentum=1.0), "`momentum` to be a float in \\[0, 1\\), but got 1.0"),
    (lambda: OHEMLoss(neg_pos_ratio=0), "`neg_pos_ratio` to be a positive float, but got 0"),
    (lambda: OHEMLoss(top_k=0), "`top_k` to be a positive integer, but got 0"),
    (lambda: TruncatedCrossEntropyLoss(m=1.5), "`m` to be a float in \\[0, 1\\], but got 1.5"),
    (lambda: SoftTruncatedCrossEntropyLoss(K=0), "`K` to be a positive float, but got 0"),
]


@pytest.mark.parametrize(("call", "message"), BAD_INPUT, ids=[m.split("`")[1] for _, m in BAD_INPUT])
def test_bad_input_names_the_argument_and_value(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_effective_weights_helper_agrees_with_the_shared_weights() -> None:
    from lit_imbalance.weights import class_weights

    torch.testing.assert_close(class_weights(COUNTS, "effective", 0.99).double(), effective_weights(COUNTS, 0.99))
    assert math.isclose(float(class_weights(COUNTS, "effective", 0.99).sum()), C, rel_tol=1e-6)
