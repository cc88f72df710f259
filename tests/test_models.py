"""ResNet-32, the cosine head, the head finder, timm models, and the optimizer/scheduler groups."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from lit_imbalance.models import MLPClassifier, NormedLinear, ResNetCIFAR, ResNetCIFARClassifier, TimmClassifier, find_classifier_head
from lit_imbalance.optim import WarmupMultiStep
from tests.conftest import compose_train


def reference_resnet32_parameters(num_classes: int, normed_head: bool) -> int:
    """Parameters of LDAM-DRW's resnet32, counted layer by layer from its definition."""
    conv = lambda cin, cout: cin * cout * 9  # 3x3, no bias  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    total = conv(3, 16) + bn(16)
    cin = 16
    for width in (16, 32, 64):
        for _ in range(5):  # option-A shortcuts have no parameters
            total += conv(cin, width) + bn(width) + conv(width, width) + bn(width)
            cin = width
    return total + 64 * num_classes + (0 if normed_head else num_classes)


@pytest.mark.parametrize(("num_classes", "normed_head"), [(10, False), (10, True), (100, False)])
def test_resnet32_has_the_reference_parameter_count(num_classes: int, normed_head: bool) -> None:
    net = ResNetCIFAR(depth=32, num_classes=num_classes, normed_head=normed_head)
    assert sum(p.numel() for p in net.parameters()) == reference_resnet32_parameters(num_classes, normed_head)
    assert reference_resnet32_parameters(10, False) == 464_154  # the "0.46M" of the reference's table
    conv_and_linear = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear, NormedLinear))]
    assert len(conv_and_linear) == 32  # 31 convolutions + the classifier: ResNet-32


def test_resnet32_shortcut_subsamples_and_zero_pads_channels() -> None:
    block = ResNetCIFAR(depth=32).layer2[0]
    x = torch.randn(2, 16, 8, 8)
    shortcut = block.shortcut(x)
    assert shortcut.shape == (2, 32, 4, 4)
    assert torch.equal(shortcut[:, 8:24], x[:, :, ::2, ::2])
    assert shortcut[:, :8].abs().sum() == 0 and shortcut[:, 24:].abs().sum() == 0


def test_normed_linear_outputs_cosine_similarity() -> None:
    torch.manual_seed(0)
    head = NormedLinear(6, 4)
    assert torch.allclose(head.weight.norm(dim=0), torch.ones(4), atol=1e-5)  # the reference's init
    x = torch.randn(5, 6) * 7
    expected = F.cosine_similarity(x[:, None, :], head.weight.T[None, :, :], dim=-1)
    assert torch.allclose(head(x), expected, atol=1e-6)
    assert torch.allclose(head(3 * x), head(x), atol=1e-6)  # scale-free in the input


@pytest.mark.parametrize(("name", "head_path"), [("resnet18", "fc"), ("convnext_atto", "head.fc"), ("vit_tiny_patch16_224", "head")])
def test_find_classifier_finds_timm_heads(name: str, head_path: str) -> None:
    model = timm.create_model(name, pretrained=False, num_classes=7)
    assert find_classifier_head(model, num_outputs=7) is model.get_submodule(head_path)


def test_find_classifier_finds_the_mlp_and_resnet_heads() -> None:
    mlp = MLPClassifier(input_dim=5, num_classes=5, hidden_sizes=[5, 5])  # every layer has 5 outputs
    assert mlp.classifier_head() is mlp.head  # given by the MLP, not guessed
    assert find_classifier_head(nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)), num_outputs=3).in_features == 8
    resnet = ResNetCIFARClassifier(num_classes=10, normed_head=True, bias_prior=False)
    assert resnet.classifier_head() is resnet.network.linear and isinstance(resnet.network.linear, NormedLinear)
    with pytest.raises(ValueError, match=r"`head` to be given \(looked for the only linear layer with 4 outputs.*but got 'none'"):
        find_classifier_head(nn.Sequential(nn.Linear(5, 3)), num_outputs=4)


def test_timm_classifier_trains_a_step_and_sets_the_bias_prior_on_its_head() -> None:
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    model = TimmClassifier("resnet18", num_classes=3)
    x, y = torch.randn(12, 3, 32, 32), torch.tensor([0] * 8 + [1] * 3 + [2])
    loader = DataLoader(TensorDataset(x, y), batch_size=6)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, loader)
    # The prior went into timm's own fc (then one step moved it a little).
    prior = torch.log(torch.tensor([8.0, 3.0, 1.0]) / 12)
    assert torch.allclose(model.network.fc.bias.detach() - model.network.fc.bias.detach().mean(),
                          prior - prior.mean(), atol=0.05)


def test_channels_last_is_a_gpu_only_path() -> None:
    model = ResNetCIFARClassifier(num_classes=10, channels_last=True)
    assert not model.uses_channels_last  # on the CPU: nothing changes
    model.on_test_start()  # one of the hooks that convert the weights on a GPU
    assert model.network.conv1.weight.is_contiguous()


def reference_lr(epoch: int, lr: float = 0.1) -> float:
    """``adjust_learning_rate`` of LDAM-DRW's cifar_train.py."""
    epoch = epoch + 1
    if epoch <= 5:
        return lr * epoch / 5
    if epoch > 180:
        return lr * 0.0001
    if epoch > 160:
        return lr * 0.01
    return lr


def test_cifar_lt_step_schedule_matches_the_reference_at_every_epoch() -> None:
    cfg = compose_train(["model=resnet32", "optimizer=sgd", "scheduler=cifar_lt_step"])
    model = instantiate(cfg.model, num_classes=10, class_names=None, loss=None)
    configured = model.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert configured["lr_scheduler"]["interval"] == "epoch"
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["weight_decay"], group["nesterov"]) == (0.9, 2e-4, False)
    seen = []
    for _ in range(200):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([reference_lr(e) for e in range(200)], rel=1e-9)
    assert [seen[e] for e in (0, 4, 5, 159, 160, 180)] == pytest.approx([0.02, 0.1, 0.1, 0.1, 0.001, 0.00001], rel=1e-9)


def test_cosine_schedule_and_default_optimizer() -> None:
    cfg = compose_train(["scheduler=cosine", "trainer.max_epochs=10", "optimizer=sgd"])
    model = instantiate(cfg.model, input_dim=4, num_classes=3, class_names=None, loss=None)
    configured = model.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)  # half-way down a cosine from 0.1
    default = compose_train([])
    # The default run's optimizer is the one it always had.
    assert dict(default.model.optimizer) == {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 0.003, "weight_decay": 0.0001}
    assert default.model.scheduler is None
    assert isinstance(instantiate(default.model, input_dim=4, num_classes=3, loss=None).configure_optimizers(), torch.optim.AdamW)


def test_warmup_multistep_validates_and_survives_a_checkpoint() -> None:
    with pytest.raises(ValueError, match=r"`milestones` to be strictly increasing integer epochs, but got \[180, 160\]"):
        WarmupMultiStep(milestones=[180, 160])
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupMultiStep(5, [160, 180], 0.01))
    state = scheduler.state_dict()
    assert state["lr_lambdas"][0] == {"warmup_epochs": 5, "milestones": [160, 180], "gamma": 0.01}


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
@pytest.mark.parametrize("method", ["ce", "ldam_drw", "balanced_softmax", "logit_adjusted"])
def test_cifar_lt_experiments_compose_the_paper_recipe(dataset: str, method: str) -> None:
    cfg = compose_train([f"experiment={dataset}_lt_{method}", "data.root=/data"])
    assert cfg.data._target_.endswith(f"{dataset.upper()}LTDataModule") and cfg.data.imbalance_ratio == 100
    assert cfg.model._target_ == "lit_imbalance.models.ResNetCIFARClassifier" and cfg.model.depth == 32
    assert cfg.model.optimizer._target_ == "torch.optim.SGD" and cfg.model.optimizer.lr == 0.1
    assert cfg.model.scheduler.lr_lambda.milestones == [160, 180] and cfg.model.scheduler.lr_lambda.warmup_epochs == 5
    assert cfg.trainer.max_epochs == 200 and cfg.data.batch_size == 128
    assert cfg.model.bias_prior is False
    losses = {"ce": "CrossEntropyLoss", "ldam_drw": "LDAMLoss", "balanced_softmax": "BalancedSoftmaxLoss",
              "logit_adjusted": "LogitAdjustedLoss"}
    assert cfg.loss._target_.endswith(losses[method])
    assert cfg.model.normed_head is (method == "ldam_drw")
    assert cfg.warmup.epochs == (160 if method == "ldam_drw" else None)
