"""Reference rows: what a user writes in thirty lines, without this library.

* ``plain_ce`` / ``plain_la``: a plain-PyTorch loop, an MLP with one hidden layer of 256,
  Adam (lr 1e-3), 60 epochs of batch 64 over *all* the training data (no validation
  split), the last epoch; cross-entropy, or logit-adjusted cross-entropy (Menon et al.
  2021, tau = 1): ``F.cross_entropy(logits + log_prior, y)`` in training, raw logits at test.
* ``logreg_balanced``: scikit-learn ``LogisticRegression(class_weight="balanced")``.

Each returns the test balanced accuracy (scikit-learn's ``balanced_accuracy_score``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

Arrays = dict[str, np.ndarray]


def log_prior(y_train: np.ndarray, num_classes: int) -> torch.Tensor:
    """``log(n_c / N)`` per class: the logit-adjustment shift at tau = 1."""
    counts = torch.as_tensor(np.bincount(y_train, minlength=num_classes), dtype=torch.float32)
    return torch.log(counts / counts.sum())


def plain_mlp(data: Arrays, seed: int, logit_adjusted: bool, epochs: int = 60, batch_size: int = 64,
              tau: float = 1.0, weight_decay: float = 0.0, min_steps: int = 0, hidden: tuple[int, ...] = (256,),
              mixup_alpha: float = 0.0, members: int = 1, average_from: float = 0.0, dropout: float = 0.0) -> float:
    """Train the plain-PyTorch MLP on all of ``x_train`` and score its last epoch on the test split.

    The references use the defaults; ``tau`` (the LA shift's scale), ``weight_decay``
    (AdamW's), ``min_steps`` (more epochs until that many steps), ``hidden`` (the
    layer widths, ``()`` for a linear model), ``mixup_alpha`` (mixup's Beta(a, a),
    one draw per batch; 0 for none), ``members`` (an ensemble averaging the
    members' log-probabilities), ``average_from`` (test the running mean of the
    weights over the steps after that fraction of training, SWA-style; 0 for the
    last weights) and ``dropout`` (after each hidden ReLU) are
    the knobs that :mod:`benchmarks.suite.search` varies on validation hold-outs.
    """
    log_probs = sum(torch.log_softmax(plain_mlp_logits(data, seed + 1000 * member, logit_adjusted, epochs, batch_size,
                                                       tau, weight_decay, min_steps, hidden, mixup_alpha,
                                                       average_from, dropout), dim=1)
                    for member in range(members))
    predictions = log_probs.argmax(dim=1).numpy()
    return float(balanced_accuracy_score(data["y_test"], predictions))


def plain_mlp_logits(data: Arrays, seed: int, logit_adjusted: bool, epochs: int, batch_size: int, tau: float,
                     weight_decay: float, min_steps: int, hidden: tuple[int, ...], mixup_alpha: float,
                     average_from: float = 0.0, dropout: float = 0.0) -> torch.Tensor:
    """One member of :func:`plain_mlp`: its test logits."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    num_classes = int(data["y_train"].max()) + 1
    x, y = torch.as_tensor(data["x_train"]), torch.as_tensor(data["y_train"])
    widths = [x.shape[1], *hidden]
    layers: list[nn.Module] = []
    for width_in, width_out in zip(widths, widths[1:]):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
    model = nn.Sequential(*layers, nn.Linear(widths[-1], num_classes))
    if not 0.0 <= average_from < 1.0:  # from 1 on nothing is averaged and the initial weights would be tested
        raise ValueError(f"Expected argument `average_from` to be in [0, 1), but got {average_from}.")
    averaged = torch.optim.swa_utils.AveragedModel(model) if average_from else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=weight_decay)
    shift = tau * log_prior(data["y_train"], num_classes) if logit_adjusted else torch.zeros(num_classes)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    num_epochs = max(epochs, -(-min_steps // len(loader)))
    first_averaged_step, step = int(average_from * num_epochs * len(loader)), 0
    for _ in range(num_epochs):
        for inputs, targets in loader:
            if mixup_alpha:
                lam, partner = float(rng.beta(mixup_alpha, mixup_alpha)), torch.randperm(len(targets))
                logits = model(lam * inputs + (1 - lam) * inputs[partner]) + shift
                loss = lam * F.cross_entropy(logits, targets) + (1 - lam) * F.cross_entropy(logits, targets[partner])
            else:
                loss = F.cross_entropy(model(inputs) + shift, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if averaged is not None and step > first_averaged_step:
                averaged.update_parameters(model)
    tested = averaged if averaged is not None else model
    tested.eval()
    with torch.no_grad():
        return tested(torch.as_tensor(data["x_test"]))


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
