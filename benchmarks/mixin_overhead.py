"""What ``ImbalanceMixin`` adds to a training step: an MLP through ``Trainer.fit``, with and without it.

Both sides train the same MLP (64 features, hidden 128 and 64, 100 classes,
batches of 256) with AdamW through real ``Trainer.fit`` runs (``logger=False``,
no checkpointing, no progress bar, no sanity check), in one process:

- **mixin**: :class:`~lit_imbalance.models.MLPClassifier`, cross-entropy through
  ``imbalance_step`` (``train/loss`` per step and per epoch), the per-class
  validation metrics logged every epoch;
- **plain**: a ``LightningModule`` with the same layers, ``F.cross_entropy`` and
  ``self.log("train/loss", loss)``.

Time per training step = the median, over a fit, of the wall time from a
step's ``on_train_batch_start`` to the next step's. That window holds
everything Lightning does per step, including the logger connector's work
after ``on_train_batch_end`` (where ``self.log``'s per-step results are
processed), which an ``on_train_batch_start`` -> ``on_train_batch_end`` window
would miss; validation (after an epoch's last step) is outside it. The median
is robust to other processes' bursts on a shared machine. Also printed: each
training epoch's wall time less the validation inside it, over its steps (a
mean, so it also carries garbage collection and those bursts). Batches are
index slices of in-memory tensors (no per-sample collation), so the step, not
the data loader, is what is timed.

``--warmups`` fits of each side first, then ``--repeats`` interleaved pairs
(the side that runs first alternates). The ratio is the median of the
per-pair ratios (load from other processes hits both fits of a pair); the
ratio of the two medians is shown beside it. Target (issue 15): <= 1.05x.

    python benchmarks/mixin_overhead.py                      # 9 pairs after 2 warm-ups, 2 x 100 steps a fit
    python benchmarks/mixin_overhead.py --steps 3 --repeats 1    # a smoke run (not a measurement)
    python benchmarks/mixin_overhead.py --warmup-epochs 5    # the mixin with a loss warm-up (DRW's schedule)
    python benchmarks/mixin_overhead.py --device cuda        # on a GPU
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import statistics
import time
import warnings
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from lit_imbalance.models import MLPClassifier
from lit_imbalance.schedule import LossWarmup

TARGET = 1.05
HIDDEN_SIZES = (128, 64)
DROPOUT = 0.1


class LabeledTensors(TensorDataset):
    """Features and labels in memory; ``targets`` is where the mixin finds the class counts."""

    @property
    def targets(self) -> Tensor:
        return self.tensors[1]


class PlainClassifier(L.LightningModule):
    """The baseline: the same layers as ``MLPClassifier``, cross-entropy, ``train/loss`` logged per step."""

    def __init__(self, input_dim: int, num_classes: int, hidden_sizes: Sequence[int] = HIDDEN_SIZES,
                 dropout: float = DROPOUT) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        self.backbone = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


class TrainStepTimer(Callback):
    """Each training step's wall time, and each training epoch's less the validation inside it.

    A step is timed from its ``on_train_batch_start`` to the next one's, so the
    window holds all Lightning does per step, including the logger connector's
    processing of ``self.log`` results after ``on_train_batch_end``; the last
    step of an epoch (whose window would hold the validation run) is not counted.
    """

    def __init__(self) -> None:
        self.step_seconds: list[float] = []
        self.train_seconds = 0.0
        self.steps = 0
        self._step_start: float | None = None
        self._epoch_start = self._validation_start = self._validation_seconds = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_seconds = 0.0
        self._step_start = None
        self._epoch_start = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        now = time.perf_counter()
        if self._step_start is not None:
            self.step_seconds.append(now - self._step_start)
        self._step_start = now
        self.steps += 1

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_seconds += time.perf_counter() - self._validation_start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_seconds += time.perf_counter() - self._epoch_start - self._validation_seconds

    @property
    def median_step(self) -> float:
        """Median seconds of a training step (robust to other processes' bursts on a shared machine)."""
        return statistics.median(self.step_seconds) if self.step_seconds else self.mean_step

    @property
    def mean_step(self) -> float:
        """Training epochs' wall time less validation, over the steps (includes garbage collection and bursts)."""
        return self.train_seconds / max(self.steps, 1)


def long_tailed_data(num_samples: int, num_classes: int, num_features: int, seed: int) -> LabeledTensors:
    """Random features, labels drawn from an exponential long tail (head/tail ratio 100), every class present."""
    generator = torch.Generator().manual_seed(seed)
    profile = torch.logspace(0, -2, num_classes)
    drawn = torch.multinomial(profile / profile.sum(), num_samples, replacement=True, generator=generator)
    labels = torch.cat([torch.arange(num_classes), drawn])[:num_samples]
    labels = labels[torch.randperm(labels.numel(), generator=generator)]
    return LabeledTensors(torch.randn(labels.numel(), num_features, generator=generator), labels)


def batches(dataset: LabeledTensors, batch_size: int, shuffle: bool) -> DataLoader:
    """Whole batches by one index operation: ``batch_size=None`` turns collation off."""
    order = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None)


def time_fit(kind: str, args: argparse.Namespace, train: LabeledTensors, val: LabeledTensors) -> TrainStepTimer:
    """The step times of one ``Trainer.fit`` of the ``kind`` ("mixin" or "plain") model."""
    L.seed_everything(0, verbose=False)
    if kind == "mixin":
        # The warm-up moves from CE to CE: what it costs is the schedule's own work, the loss is the same.
        warmup = LossWarmup(epochs=args.warmup_epochs) if args.warmup_epochs else None
        model: L.LightningModule = MLPClassifier(args.features, args.classes, hidden_sizes=HIDDEN_SIZES,
                                                 dropout=DROPOUT, warmup=warmup)
    else:
        model = PlainClassifier(args.features, args.classes)
    timer = TrainStepTimer()
    trainer = L.Trainer(
        accelerator=args.device, devices=1, max_epochs=args.epochs, limit_train_batches=args.steps,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, callbacks=[timer],
    )
    trainer.fit(model, batches(train, args.batch_size, shuffle=True), batches(val, args.batch_size, shuffle=False))
    return timer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per fit (validation after each)")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved timed pairs (>= 5 for a measurement)")
    parser.add_argument("--warmups", type=int, default=2, help="untimed fits of each side first")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--val-batches", type=int, default=2, help="validation batches per epoch")
    parser.add_argument("--warmup-epochs", type=int, default=0,
                        help="give the mixin a CE -> CE loss warm-up of this many epochs (train/warmup_factor logged)")
    parser.add_argument("--device", default="cpu", help="Lightning accelerator: cpu or cuda")
    # One thread by default: this step is Python-bound, and on a shared machine idle OpenMP threads
    # spinning against other processes made single steps 30x slower (100 ms instead of 3.5 ms).
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (0: torch's default)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU visible to torch")
    if args.threads:
        torch.set_num_threads(args.threads)
    # Lightning's advice (workers, batch size inference) is the same for both sides and not the point here.
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    train = long_tailed_data(args.steps * args.batch_size, args.classes, args.features, seed=0)
    val = long_tailed_data(args.val_batches * args.batch_size, args.classes, args.features, seed=1)
    hardware = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    load = ", load average %.1f %.1f %.1f" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    print(
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}; {platform.node()} ({platform.platform()}, "
        f"{hardware}, {os.cpu_count()} cores{load}); torch {torch.__version__}, lightning {L.__version__}, "
        f"{torch.get_num_threads()} intra-op threads on {args.device}"
    )
    warmup = f", mixin with a {args.warmup_epochs}-epoch loss warm-up" if args.warmup_epochs else ""
    print(f"{args.classes} classes, batch {args.batch_size}, {args.epochs} x {args.steps} steps a fit{warmup}; "
          f"{args.warmups} warm-up fits of each, then {args.repeats} interleaved pairs; time per training step = "
          "on_train_batch_start to the next step's, median over the fit", flush=True)
    for _ in range(args.warmups):
        for kind in ("mixin", "plain"):
            time_fit(kind, args, train, val)
    timers: dict[str, list[TrainStepTimer]] = {"mixin": [], "plain": []}
    for index in range(args.repeats):
        for kind in ("mixin", "plain") if index % 2 else ("plain", "mixin"):
            timers[kind].append(time_fit(kind, args, train, val))
        mixin, plain = timers["mixin"][-1], timers["plain"][-1]
        print(f"  pair {index + 1}: median step mixin {mixin.median_step * 1e3:.3f} ms, plain "
              f"{plain.median_step * 1e3:.3f} ms; epoch less validation per step mixin {mixin.mean_step * 1e3:.3f} ms, "
              f"plain {plain.mean_step * 1e3:.3f} ms", flush=True)
    note = "" if args.repeats >= 5 else " (fewer than 5 pairs: a smoke run, not a measurement)"
    for label, measure in (("median step", "median_step"), ("epoch less validation", "mean_step")):
        mixin_times = [getattr(timer, measure) for timer in timers["mixin"]]
        plain_times = [getattr(timer, measure) for timer in timers["plain"]]
        mixin_ms, plain_ms = statistics.median(mixin_times) * 1e3, statistics.median(plain_times) * 1e3
        ratio = statistics.median(m / p for m, p in zip(mixin_times, plain_times, strict=True))
        if measure == "median_step":
            verdict = f"; target <= {TARGET:.2f}x {'ok' if ratio <= TARGET else 'MISSED'}{note}"
            print(f"time per training step (median step of each fit): mixin {mixin_ms:.3f} ms, plain {plain_ms:.3f} ms")
            print(f"ratio mixin / plain: {ratio:.3f}x (median of per-pair ratios; ratio of medians "
                  f"{mixin_ms / plain_ms:.3f}x){verdict}")
        else:
            print(f"{label} per step (mean, with GC and bursts): mixin {mixin_ms:.3f} ms, plain {plain_ms:.3f} ms, "
                  f"ratio {ratio:.3f}x")

if __name__ == "__main__":
    main()
