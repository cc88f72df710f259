"""Images per second of ResNet-32 training steps on the CPU: cross-entropy against the imbalance losses.

One training step is what the CIFAR-LT experiments run per batch: forward
through ResNet-32, the loss, backward, an SGD step (momentum 0.9, weight decay
2e-4), on a batch of 128 random 32x32 images with CIFAR-10-LT (rho=100) class
counts behind the statistics-driven losses. The losses take turns, a few steps
each, for several rounds, so load from other processes hits all of them alike;
per loss the median and the fastest round are reported, with their ratios to
cross-entropy measured in the same process (on a shared machine the fastest
round is the least disturbed one, ``timeit``'s advice). The loss alone (forward + backward on the logits) is timed
too, as a share of the step: the loss must not be what limits throughput.

    python benchmarks/throughput.py            # 10 rounds x 2 steps per loss (a few minutes on 2 cores)
    python benchmarks/throughput.py --quick    # 3 rounds x 1 step
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from lit_imbalance.data import long_tail_counts
from lit_imbalance.losses import build_loss
from lit_imbalance.models import ResNetCIFAR

# Softmax-family losses (integer targets), the ones the CIFAR-LT experiments use and their relatives.
LOSSES = ("ce", "weighted_ce", "focal", "class_balanced", "ldam", "balanced_softmax", "logit_adjusted")
STATISTICS = {"weighted_ce", "class_balanced", "ldam", "balanced_softmax", "logit_adjusted"}


def make_loss(name: str, counts: list[int]) -> torch.nn.Module:
    return build_loss(name, **({"class_counts": counts} if name in STATISTICS else {}))


def train_steps(model: torch.nn.Module, loss: torch.nn.Module, optimizer: torch.optim.Optimizer,
                images: torch.Tensor, target: torch.Tensor, steps: int) -> float:
    """Seconds per training step, averaged over ``steps`` consecutive steps."""
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss(model(images), target).backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def loss_only(loss: torch.nn.Module, logits: torch.Tensor, target: torch.Tensor, repeats: int = 50) -> float:
    """Median seconds of the loss's forward + backward on fixed logits."""
    times = []
    for _ in range(repeats):
        leaf = logits.detach().requires_grad_()
        start = time.perf_counter()
        loss(leaf, target).backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=2, help="consecutive steps per loss and round")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 1 step")
    parser.add_argument("--losses", nargs="+", default=list(LOSSES))
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps = 3, 1
    if "ce" not in args.losses:
        args.losses.insert(0, "ce")

    torch.manual_seed(0)
    counts = long_tail_counts(5000, 10, 100)
    losses = {name: make_loss(name, counts) for name in args.losses}
    model = ResNetCIFAR(depth=32, num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)
    images = torch.randn(args.batch_size, 3, 32, 32)
    target = torch.multinomial(torch.tensor(counts, dtype=torch.float), args.batch_size, replacement=True)

    model.train()
    for loss in losses.values():  # warm-up: allocator, thread pool, first-call paths
        train_steps(model, loss, optimizer, images, target, steps=1)
    times: dict[str, list[float]] = {name: [] for name in losses}
    for round_index in range(args.rounds):
        # Rotate the order, so no loss always runs right after the same neighbour.
        order = list(losses)[round_index % len(losses):] + list(losses)[: round_index % len(losses)]
        for name in order:
            times[name].append(train_steps(model, losses[name], optimizer, images, target, args.steps))
    with torch.no_grad():
        logits = model(images)

    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"ResNet-32, batch {args.batch_size}, 32x32, CPU ({platform.machine()}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} threads{load}), torch {torch.__version__}; {args.rounds} rounds x {args.steps} steps")
    print(f"{'loss':<18}{'images/s median':>16}{'vs CE':>7}{'images/s best':>15}{'vs CE':>7}"
          f"{'loss fwd+bwd':>14}{'share of step':>15}")
    base_median, base_best = statistics.median(times["ce"]), min(times["ce"])
    for name, measured in times.items():
        median, best = statistics.median(measured), min(measured)
        alone = loss_only(losses[name], logits, target)
        print(f"{name:<18}{args.batch_size / median:>16.1f}{base_median / median:>7.2f}{args.batch_size / best:>15.1f}"
              f"{base_best / best:>7.2f}{alone * 1e3:>11.2f} ms{alone / median:>14.2%}")

if __name__ == "__main__":
    main()
