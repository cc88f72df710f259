"""Reference rows: what a user writes in thirty lines, without this library.

* ``plain_ce`` / ``plain_la``: a plain-PyTorch loop, an MLP with one hidden layer of 256,
  Adam (lr 1e-3), 60 epochs of batch 64 over *all* the training data (no validation
  split), the last epoch; cross-entropy, or logit-adjusted cross-entropy (Menon et al.
  2021, tau = 1): ``F.cross_entropy(logits + log_prior, y)`` in training, raw logits at test.
* ``logreg_balanced``: scikit-learn ``LogisticRegression(class_weight="balanced")``.

Each returns the test balanced accuracy (scikit-learn's ``balanced_accuracy_score``).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import QuantileTransformer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

Arrays = dict[str, np.ndarray]


def log_prior(y_train: np.ndarray, num_classes: int) -> torch.Tensor:
    """``log(n_c / N)`` per class: the logit-adjustment shift at tau = 1."""
    counts = torch.as_tensor(np.bincount(y_train, minlength=num_classes), dtype=torch.float32)
    return torch.log(counts / counts.sum())


def plain_mlp(data: Arrays, seed: int, logit_adjusted: bool, *, members: int = 1, **knobs: Any) -> float:
    """Train the plain-PyTorch MLP on all of ``x_train`` and score its last epoch on the test split.

    The references use the defaults.

    Args:
        data: ``x_train``, ``y_train``, ``x_test``, ``y_test``.
        seed: seeds torch and numpy.
        logit_adjusted: train on ``logits + log_prior`` (Menon et al. 2021) instead of plain CE.
        members: an ensemble of that many loops averaging their log-probabilities
            (member ``m`` seeded ``seed + 1000 m``).
        **knobs: those of :func:`plain_mlp_logits`, which :mod:`benchmarks.suite.search`
            varies on validation hold-outs.

    Returns:
        The test balanced accuracy (scikit-learn's ``balanced_accuracy_score``).
    """
    log_probs = sum(torch.log_softmax(plain_mlp_logits(data, seed + 1000 * member, logit_adjusted, **knobs), dim=1)
                    for member in range(members))
    predictions = log_probs.argmax(dim=1).numpy()
    return float(balanced_accuracy_score(data["y_test"], predictions))


def plain_mlp_logits(data: Arrays, seed: int, logit_adjusted: bool, epochs: int = 60, batch_size: int = 64,
                     tau: float = 1.0, weight_decay: float = 0.0, min_steps: int = 0, hidden: tuple[int, ...] = (256,),
                     mixup_alpha: float = 0.0, average_from: float = 0.0, dropout: float = 0.0, *,
                     quantile: bool = False, cosine: bool = False, label_smoothing: float = 0.0,
                     batch_norm: bool = False, residual_blocks: int = 0, mixup_until: float = 1.0,
                     lr: float = 1e-3) -> torch.Tensor:
    """One member of :func:`plain_mlp`: its test logits.

    Args:
        data, seed, logit_adjusted: see :func:`plain_mlp`.
        epochs: passes over the training rows, in batches of ``batch_size``, shuffled.
        batch_size: rows per step.
        tau: the scale of the logit-adjustment shift.
        weight_decay: AdamW's.
        min_steps: more epochs until at least that many steps.
        hidden: the hidden layer widths, ``()`` for a linear model.
        mixup_alpha: mixup's Beta(a, a), one draw per batch; 0 for none.
        average_from: test the running mean of the weights over the steps after
            that fraction of training (SWA-style); 0 tests the last weights.
        dropout: after each hidden ReLU (inside each block of the ResNet).
        quantile: features through scikit-learn's ``QuantileTransformer`` to a
            normal, fitted on the training rows.
        cosine: the learning rate decays to 0 on a half cosine over the steps.
        label_smoothing: ``F.cross_entropy``'s.
        batch_norm: batch normalisation after each hidden linear layer.
        residual_blocks: that many blocks of the tabular ResNet of Gorishniy et
            al. 2021 (``rtdl_revisiting_models.ResNet``, width ``hidden[0]``)
            instead of the MLP; 0 for the MLP.
        mixup_until: mixup for that fraction of the steps, plain batches after
            it (1: mixup to the end).
        lr: AdamW's learning rate.

    Returns:
        The ``(len(x_test), C)`` test logits (without the shift).
    """
    if not 0.0 <= average_from < 1.0:  # from 1 on nothing is averaged and the initial weights would be tested
        raise ValueError(f"Expected argument `average_from` to be in [0, 1), but got {average_from}.")
    if lr <= 0:
        raise ValueError(f"Expected argument `lr` to be positive, but got {lr}.")
    if residual_blocks < 0:
        raise ValueError(f"Expected argument `residual_blocks` to be at least 0, but got {residual_blocks}.")
    if residual_blocks and not hidden:
        raise ValueError(f"Expected argument `hidden` to give the ResNet's width, but got {hidden}.")
    if not 0.0 < mixup_until <= 1.0:
        raise ValueError(f"Expected argument `mixup_until` to be in (0, 1], but got {mixup_until}.")
    normalised = batch_norm or residual_blocks > 0
    if average_from and normalised:  # averaged weights would test batch statistics of other weights
        raise ValueError(f"Expected argument `average_from` to be 0 with batch_norm={batch_norm} and "
                         f"residual_blocks={residual_blocks}, but got {average_from}.")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    num_classes = int(data["y_train"].max()) + 1
    x_train, x_test = data["x_train"], data["x_test"]
    if quantile:
        # Every training row enters the quantiles (no subsample), so the transform draws nothing random.
        transform = QuantileTransformer(n_quantiles=min(1000, len(x_train)), output_distribution="normal",
                                        subsample=None)
        x_train, x_test = transform.fit_transform(x_train), transform.transform(x_test)
    x = torch.as_tensor(x_train, dtype=torch.float32)
    y = torch.as_tensor(data["y_train"])
    model = network(x.shape[1], num_classes, hidden, dropout, batch_norm, residual_blocks)
    averaged = torch.optim.swa_utils.AveragedModel(model) if average_from else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    shift = tau * log_prior(data["y_train"], num_classes) if logit_adjusted else torch.zeros(num_classes)
    # Batch normalisation cannot train on a batch of one sample: such nets drop a last batch of
    # one (a different row each epoch), and no other.
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                        drop_last=normalised and len(x) > batch_size and len(x) % batch_size == 1)
    num_epochs = max(epochs, -(-min_steps // len(loader)))
    total_steps = num_epochs * len(loader)
    first_averaged_step, step = int(average_from * total_steps), 0
    last_mixed_step = mixup_until * total_steps
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda done: 0.5 * (1.0 + math.cos(math.pi * done / total_steps))) if cosine else None
    loss_of = functools.partial(F.cross_entropy, label_smoothing=label_smoothing)
    for _ in range(num_epochs):
        for inputs, targets in loader:
            if mixup_alpha and step < last_mixed_step:
                lam, partner = float(rng.beta(mixup_alpha, mixup_alpha)), torch.randperm(len(targets))
                logits = model(lam * inputs + (1 - lam) * inputs[partner]) + shift
                loss = lam * loss_of(logits, targets) + (1 - lam) * loss_of(logits, targets[partner])
            else:
                loss = loss_of(model(inputs) + shift, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            step += 1
            if averaged is not None and step > first_averaged_step:
                averaged.update_parameters(model)
    tested = averaged if averaged is not None else model
    tested.eval()
    with torch.no_grad():
        return tested(torch.as_tensor(x_test, dtype=torch.float32))


def network(inputs: int, num_classes: int, hidden: tuple[int, ...], dropout: float, batch_norm: bool,
            residual_blocks: int) -> nn.Module:
    """The plain loop's model: an MLP of ``hidden`` widths, or the tabular ResNet of width ``hidden[0]``.

    Args:
        inputs: features per row.
        num_classes: outputs.
        hidden, dropout, batch_norm, residual_blocks: see :func:`plain_mlp_logits`.

    Returns:
        The untrained model, built from the current torch seed.
    """
    if residual_blocks:
        from rtdl_revisiting_models import ResNet

        return ResNet(d_in=inputs, d_out=num_classes, n_blocks=residual_blocks, d_block=hidden[0],
                      d_hidden=hidden[0], d_hidden_multiplier=None, dropout1=dropout, dropout2=0.0)
    widths = [inputs, *hidden]
    layers: list[nn.Module] = []
    for width_in, width_out in zip(widths, widths[1:]):
        layers += ([nn.Linear(width_in, width_out)] + ([nn.BatchNorm1d(width_out)] if batch_norm else [])
                   + [nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else []))
    return nn.Sequential(*layers, nn.Linear(widths[-1], num_classes))


def plain_ce(data: Arrays, seed: int) -> float:
    """The plain loop with cross-entropy."""
    return plain_mlp(data, seed, logit_adjusted=False)


def plain_la(data: Arrays, seed: int) -> float:
    """The plain loop with logit-adjusted cross-entropy."""
    return plain_mlp(data, seed, logit_adjusted=True)


def logreg_balanced(data: Arrays, seed: int) -> float:
    """Class-balanced logistic regression (deterministic: lbfgs ignores ``seed``)."""
    model = LogisticRegression(class_weight="balanced", max_iter=5000, random_state=seed)
    model.fit(data["x_train"], data["y_train"])
    return float(balanced_accuracy_score(data["y_test"], model.predict(data["x_test"])))


REFERENCES = {"plain_ce": plain_ce, "plain_la": plain_la, "logreg_balanced": logreg_balanced}


def reference_rows(name: str, data: Arrays, seeds: list[int], references: list[str] | None = None) -> list[dict]:
    """One row per reference and seed on dataset ``name``: its test balanced accuracy."""
    rows = []
    for reference in references or list(REFERENCES):
        for seed in seeds:
            rows.append({"dataset": name, "method": reference, "seed": seed,
                         "test_balanced_acc": REFERENCES[reference](data, seed), "val_balanced_acc": None})
    return rows
