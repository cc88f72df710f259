"""Forward+backward time and peak memory of every loss, as ratios against the PyTorch baseline.

Softmax-family losses run on ``(N, C)`` logits with integer targets against
``F.cross_entropy``; sigmoid-family losses on ``(N, C)`` logits with 0/1 float
targets against ``F.binary_cross_entropy_with_logits``, both on the same inputs
in one run. Each loss and its baseline are timed back to back, alternately,
after a warm-up, so load from other processes hits both sides; the ratio of
the fastest runs (``timeit``'s advice for a shared machine) and the ratio of
the medians are printed. Peak memory is what the step allocates on top of its
inputs (logits, targets), read from the profiler's allocation events. The
first call's extra time (compilation, for the compiled sigmoid-focal kernel)
is shown apart.

    python benchmarks/losses.py            # 65,536 x 100 softmax, 4M-element sigmoid (< 2 min)
    python benchmarks/losses.py --quick    # 8,192 x 100 and 512K elements (seconds)

Targets: sigmoid focal <= 1.5x BCE-with-logits on 4M elements, softmax focal
<= 1.25x CE on 65,536 x 100.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lit_imbalance.losses import build_loss, sigmoid_focal_loss
from lit_imbalance.losses.focal import COMPILE_MIN_ELEMENTS

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
STATISTICS = {"weighted_ce", "class_balanced", "ldam", "balanced_softmax", "logit_adjusted"}


def textbook_sigmoid_focal(x: torch.Tensor, t: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """torchvision.ops.sigmoid_focal_loss as written there: the "before" of the fast path."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    return ((alpha * t + (1 - alpha) * (1 - t)) * loss).mean()


def forward_backward(loss: Step, logits: torch.Tensor, target: torch.Tensor) -> float:
    """Seconds for one forward + backward from fresh leaf logits."""
    leaf = logits.detach().requires_grad_()
    start = time.perf_counter()
    loss(leaf, target).backward()
    return time.perf_counter() - start


def peak_bytes(loss: Step, logits: torch.Tensor, target: torch.Tensor) -> float | None:
    """Largest amount of memory live at once during forward + backward, beyond the inputs."""
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        return None
    leaf = logits.detach().requires_grad_()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss(leaf, target).backward()
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation:
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return float(peak)


def compare(loss: Step, baseline: Step, logits: torch.Tensor, target: torch.Tensor, budget: float) -> dict:
    """Time ratio (medians, interleaved runs), first-call overhead and peak-memory ratio."""
    first = forward_backward(loss, logits, target)  # compiles, if the loss compiles
    for _ in range(2):
        forward_backward(loss, logits, target)
        forward_backward(baseline, logits, target)
    loss_times, base_times = [], []
    deadline = time.perf_counter() + budget
    while len(loss_times) < 5 or (time.perf_counter() < deadline and len(loss_times) < 60):
        base_times.append(forward_backward(baseline, logits, target))
        loss_times.append(forward_backward(loss, logits, target))
    loss_time, base_time = min(loss_times), min(base_times)
    loss_peak, base_peak = peak_bytes(loss, logits, target), peak_bytes(baseline, logits, target)
    return {
        "ms": loss_time * 1e3,
        "base_ms": base_time * 1e3,
        "ratio": loss_time / base_time,
        "median_ratio": statistics.median(loss_times) / statistics.median(base_times),
        "first_call_s": max(first - loss_time, 0.0),
        "peak_mb": None if loss_peak is None else loss_peak / 2**20,
        "mem_ratio": None if not base_peak else loss_peak / base_peak,
        "runs": len(loss_times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs: a smoke run in seconds")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timed runs per loss")
    args = parser.parse_args()
    torch.manual_seed(0)
    softmax_shape = (8192, 100) if args.quick else (65536, 100)
    sigmoid_shape = (512, 1024) if args.quick else (4096, 1024)
    budget = args.budget if args.budget is not None else (0.3 if args.quick else 3.0)
    counts = torch.logspace(3, 0, softmax_shape[1]).round().long().tolist()

    x_softmax = torch.randn(*softmax_shape) * 3
    y_softmax = torch.randint(0, softmax_shape[1], softmax_shape[:1])
    x_sigmoid = torch.randn(*sigmoid_shape) * 3
    t_sigmoid = (torch.rand(*sigmoid_shape) < 0.05).float()

    softmax_losses: dict[str, Step] = {
        name: build_loss(name, **({"class_counts": counts} if name in STATISTICS else {}))
        for name in (
            "ce",
            "focal",
            "weighted_ce",
            "cost_sensitive",
            "class_balanced",
            "ldam",
            "balanced_softmax",
            "logit_adjusted",
            "truncated_ce",
            "soft_truncated_ce",
        )
    }
    sigmoid_losses: dict[str, Step] = {
        "sigmoid_focal (auto)": build_loss("sigmoid_focal"),
        "sigmoid_focal (eager)": build_loss("sigmoid_focal", fast_path="eager"),
        "sigmoid_focal (reference)": build_loss("sigmoid_focal", fast_path="reference"),
        "textbook sigmoid focal": textbook_sigmoid_focal,
        "asymmetric": build_loss("asymmetric"),
        "ghm": build_loss("ghm"),
        "ohem": build_loss("ohem"),
        "class_balanced (sigmoid)": build_loss("class_balanced", class_counts=[1] * sigmoid_shape[1], base="sigmoid"),
    }
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; fused sigmoid-focal kernel compiled from "
        f"{COMPILE_MIN_ELEMENTS:,} elements (fast_path='auto')"
    )
    columns = ["ms", "x time", "(median)", "peak MB", "x mem", "1st call s", "runs"]
    header = f"{'loss':28} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, [8, 7, 8, 8, 6, 10, 5], strict=True))
    # The fast paths must give the textbook values before their speed means anything.
    head_x, head_t = x_sigmoid[:64], t_sigmoid[:64]
    for fast_path in ("eager", "compiled"):
        fast = sigmoid_focal_loss(head_x, head_t, fast_path=fast_path)
        torch.testing.assert_close(fast, textbook_sigmoid_focal(head_x, head_t), rtol=1e-5, atol=1e-7)
    targets = {}
    for title, losses, baseline, logits, target in [
        (
            f"softmax family on {softmax_shape[0]:,} x {softmax_shape[1]} logits, baseline F.cross_entropy",
            softmax_losses,
            F.cross_entropy,
            x_softmax,
            y_softmax,
        ),
        (
            f"sigmoid family on {sigmoid_shape[0]:,} x {sigmoid_shape[1]} = {x_sigmoid.numel():,} elements, "
            "baseline F.binary_cross_entropy_with_logits",
            sigmoid_losses,
            F.binary_cross_entropy_with_logits,
            x_sigmoid,
            t_sigmoid,
        ),
    ]:
        print(f"\n{title}\n{header}")
        for name, loss in losses.items():
            result = compare(loss, baseline, logits, target, budget)
            memory = "n/a" if result["peak_mb"] is None else f"{result['peak_mb']:8.1f} {result['mem_ratio']:6.2f}"
            print(
                f"{name:28} {result['ms']:8.2f} {result['ratio']:7.2f} {result['median_ratio']:8.2f} {memory} "
                f"{result['first_call_s']:10.2f} {result['runs']:5d}   (baseline {result['base_ms']:.2f} ms)"
            )
            targets[name] = result["ratio"]
    quick_note = " (--quick: smaller than the sizes the targets are set for)" if args.quick else ""
    print(
        f"\ntargets{quick_note}: sigmoid_focal (auto) {targets['sigmoid_focal (auto)']:.2f}x BCE-with-logits "
        f"(<= 1.5 on 4M elements), focal {targets['focal']:.2f}x CE (<= 1.25 on 65,536 x 100)"
    )


if __name__ == "__main__":
    main()
