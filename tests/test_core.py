"""The composable core: each part works alone, the mixin only wires them, the app keeps its own concerns."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchmetrics
from hydra.utils import instantiate
from torch import nn

from lit_imbalance.criterion import ImbalanceCriterion
from lit_imbalance.heads import find_classifier_head
from lit_imbalance.losses import LDAMLoss, LogitAdjustedLoss
from lit_imbalance.metrics import ImbalanceMetrics
from lit_imbalance.priors import init_bias_prior, prior_logits
from lit_imbalance.schedule import LossWarmup
from tests.conftest import ROOT, compose_train

PACKAGE = ROOT / "lit_imbalance"


def test_criterion_trains_a_plain_pytorch_loop() -> None:
    """No Lightning: counts once, progress per step, the DRW schedule switches at its epoch."""
    counts = torch.tensor([60, 30, 10])
    criterion = ImbalanceCriterion(LDAMLoss(), num_classes=3, warmup=LossWarmup(epochs=1, reweight="effective"))
    criterion.set_class_counts(counts)
    net = nn.Linear(4, 3)
    init_bias_prior(find_classifier_head(net, 3), criterion.initial_bias())
    assert torch.allclose(net.bias.detach(), prior_logits(counts))
    x, y = torch.randn(8, 4), torch.tensor([0, 0, 1, 2, 0, 1, 2, 2])
    criterion.set_progress(epoch=0, step=0)
    plain = LDAMLoss(class_counts=counts)(net(x).float(), y)
    assert torch.allclose(criterion(net(x), y), plain)  # epoch 0: unweighted LDAM
    criterion.set_progress(epoch=1, step=5)
    assert criterion.warmup_factor == 1.0
    assert not torch.allclose(criterion(net(x), y), plain)  # epoch 1: re-weighted
    assert criterion.state_dict()["class_counts"].tolist() == [60, 30, 10]


def test_criterion_bias_accounts_for_a_logit_adjusted_loss() -> None:
    criterion = ImbalanceCriterion(LogitAdjustedLoss(tau=0.5), num_classes=3)
    criterion.set_class_counts([12, 6, 2])
    assert torch.allclose(criterion.initial_bias(), 0.5 * prior_logits([12, 6, 2]))
    logits = torch.zeros(2, 3)
    assert torch.allclose(criterion.adjust_logits(logits, tau=1.0), -prior_logits([12, 6, 2]).expand(2, 3))


def test_criterion_rejects_unknown_counts_and_bad_values() -> None:
    criterion = ImbalanceCriterion(num_classes=3)
    with pytest.raises(ValueError, match=r"`class_counts` to be known"):
        criterion.prior_logits()
    with pytest.raises(ValueError, match=r"`class_counts` to be 3 non-negative counts.*\[1, -1, 2\]"):
        criterion.set_class_counts([1, -1, 2])
    with pytest.raises(ValueError, match=r"`task` to be one of"):
        ImbalanceCriterion(num_classes=3, task="regression")


def test_metrics_are_a_torchmetrics_metric_that_syncs_one_state() -> None:
    metrics = ImbalanceMetrics(3)
    assert isinstance(metrics, torchmetrics.Metric)
    assert set(metrics._defaults) == {"confusion"}  # one state: one sync per epoch
    assert metrics._reductions["confusion"] is torchmetrics.utilities.dim_zero_sum
    metrics.update(torch.tensor([[3.0, 0, 0], [0, 2.0, 0]]), torch.tensor([0, 2]))
    assert metrics.confusion.tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 0]]
    metrics.reset()
    assert metrics.confusion.sum() == 0 and metrics.update_count == 0


def test_binary_metrics_keep_scores_for_auroc() -> None:
    metrics = ImbalanceMetrics(2, task="binary")
    assert set(metrics._defaults) == {"confusion", "scores", "labels"}
    metrics.update(torch.tensor([-2.0, 1.0, -1.0, 3.0]), torch.tensor([0, 0, 1, 1]))
    assert metrics.compute()["auroc"].item() == pytest.approx(0.75)


def test_no_warmup_config_builds_no_object(tmp_path: Path) -> None:
    cfg = compose_train(output_dir=tmp_path)
    assert instantiate(cfg.warmup) is None
    assert isinstance(instantiate(compose_train(["warmup.epochs=3"], output_dir=tmp_path).warmup), LossWarmup)


def test_importing_the_package_changes_no_warning_filter_and_registers_no_resolver() -> None:
    # Dependencies may set filters of their own; none may come from lit_imbalance's code.
    probe = (
        "import sys, warnings\n"
        "callers = []\n"
        "def spy(real):\n"
        "    def recording(*args, **kwargs):\n"
        "        callers.append(sys._getframe(1).f_code.co_filename)\n"
        "        return real(*args, **kwargs)\n"
        "    return recording\n"
        "warnings.filterwarnings, warnings.simplefilter = spy(warnings.filterwarnings), spy(warnings.simplefilter)\n"
        "import lit_imbalance, lit_imbalance.app, lit_imbalance.sweep, lit_imbalance.mixin\n"
        "from omegaconf import OmegaConf\n"
        "ours = [c for c in callers if '/lit_imbalance/' in c]\n"
        "assert not ours, f'warning filters set at import by {ours}'\n"
        "assert not OmegaConf.has_resolver('sweep_group'), 'a resolver was registered at import'\n"
        "from lit_imbalance.resolvers import register_resolvers; register_resolvers(); register_resolvers()\n"
        "assert OmegaConf.has_resolver('sweep_group') and OmegaConf.has_resolver('sweep_job_name')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_private_lightning_attributes_only_in_compat() -> None:
    private = re.compile(r"_data_source|\._trainer\b|\.procs\b|import _[A-Z]")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in PACKAGE.rglob("*.py") if path.name != "_compat.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1) if private.search(line)
    ]
    assert not offenders, offenders


def test_task_is_defined_once() -> None:
    definitions = [
        str(path.relative_to(ROOT)) for path in PACKAGE.rglob("*.py")
        if re.search(r"^\w*Task\w* = Literal\[", path.read_text(), flags=re.MULTILINE)
    ]
    assert definitions == ["lit_imbalance/tasks.py"], definitions


def test_importing_the_library_loads_no_optional_heavy_module() -> None:
    """Beyond what Lightning itself imports: a run that needs none of these never pays for them."""
    heavy = ["matplotlib", "wandb", "sklearn", "pandas", "torchvision", "timm", "torch._inductor",
             "lit_imbalance.plots", "lit_imbalance.sweep"]
    probe = (
        "import sys, lightning\n"
        "before = set(sys.modules)\n"
        "import lit_imbalance, lit_imbalance.app, lit_imbalance.mixin, lit_imbalance.data, lit_imbalance.losses\n"
        f"print([name for name in {heavy!r} if name in sys.modules and name not in before])\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
