"""Forward+backward time and peak memory of every loss, as ratios against its PyTorch baseline.

Three sizes (issue 15): 65,536 x 100, 4,096 x 1,000 (ImageNet-LT) and 256 x
8,142 (iNaturalist). Softmax-family losses take integer targets; sigmoid-family
losses take the same ``(N, C)`` logits with 0/1 float targets (5% positives), so
every size has the same element count for both families. Each row times a loss
and its baseline back to back, alternately, on the same inputs in one process:
3 warm-ups, then ``--repeats`` (>= 8) interleaved pairs. "x time" is the median
of the per-pair ratios (load from other processes hits both sides of a pair),
"x med" the ratio of the two medians. Peak memory is what forward+backward
allocates beyond its inputs: ``torch.cuda.max_memory_allocated`` on a GPU, the
profiler's allocation events on the CPU. The compiled sigmoid-focal kernel's
first call (compilation) is excluded from the timed runs and shown apart.

    python benchmarks/losses.py                  # the three sizes, the whole table
    python benchmarks/losses.py --quick          # small sizes, seconds
    python benchmarks/losses.py --device cuda    # the same table on a GPU (the default picks one when visible)
    python benchmarks/losses.py --threads 1      # intra-op threads (default: torch's)
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lit_imbalance.losses import build_loss, sigmoid_focal_loss
from lit_imbalance.losses._closed_form import COMPILE_MIN_ELEMENTS

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SIZES = [(65_536, 100), (4_096, 1_000), (256, 8_142)]
QUICK_SIZES = [(8_192, 100), (1_024, 1_000), (64, 8_142)]


@dataclass
class Row:
    """One line of the table: a loss, its baseline and the target ratio (None: shown, no target)."""

    name: str
    family: str  # "softmax" (integer targets) or "sigmoid" (float targets)
    loss: Step
    baseline_name: str
    baseline: Step
    target: float | None


def textbook_sigmoid_focal(x: torch.Tensor, t: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """torchvision.ops.sigmoid_focal_loss as written there: the "before" of the fast path."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    return ((alpha * t + (1 - alpha) * (1 - t)) * loss).mean()


def rows(num_classes: int, device: torch.device) -> list[Row]:
    counts = torch.logspace(3, 0, num_classes).round().long().tolist()

    def make(name: str, **kwargs) -> Step:
        return build_loss(name, **kwargs).to(device)

    with_counts = {"class_counts": counts}
    ce, bce = F.cross_entropy, F.binary_cross_entropy_with_logits
    cost = (1 - torch.eye(num_classes)) * torch.linspace(1, 5, num_classes).unsqueeze(1)  # true-class costs
    general_cost = cost.clone()
    general_cost[0, 1:] = torch.linspace(1, 9, num_classes - 1)  # no longer row-constant
    focal = make("focal", gamma=2.0)
    return [
        Row("ce (fused kernel)", "softmax", make("ce"), "F.cross_entropy", ce, None),
        Row("softmax_focal (gamma=2)", "softmax", focal, "F.cross_entropy", ce, 1.15),
        Row("weighted_ce", "softmax", make("weighted_ce", **with_counts), "F.cross_entropy", ce, None),
        Row("ldam (s=30)", "softmax", make("ldam", **with_counts), "F.cross_entropy", ce, 1.15),
        Row("ldam-drw (s=30, effective)", "softmax", make("ldam", reweight="effective", **with_counts),
            "F.cross_entropy", ce, None),  # fmt: skip
        Row("cost_sensitive (0-1 cost)", "softmax", make("cost_sensitive"), "F.cross_entropy", ce, 1.15),
        Row("cost_sensitive (true-class costs)", "softmax", make("cost_sensitive", cost_matrix=cost),
            "F.cross_entropy", ce, 1.15),  # fmt: skip
        Row("cost_sensitive (general matrix)", "softmax", make("cost_sensitive", cost_matrix=general_cost),
            "F.cross_entropy", ce, None),  # fmt: skip
        Row("balanced_softmax", "softmax", make("balanced_softmax", **with_counts), "F.cross_entropy", ce, 1.15),
        Row("logit_adjusted (tau=1)", "softmax", make("logit_adjusted", **with_counts), "F.cross_entropy", ce, 1.15),
        Row("class_balanced (softmax)", "softmax", make("class_balanced", **with_counts), "F.cross_entropy", ce, 1.15),
        Row("class_balanced (focal)", "softmax", make("class_balanced", base="focal", **with_counts),
            "softmax_focal", focal, 1.15),  # fmt: skip
        Row("class_balanced (sigmoid)", "sigmoid", make("class_balanced", base="sigmoid", **with_counts),
            "F.bce_with_logits", bce, 1.15),  # fmt: skip
        Row("asymmetric", "sigmoid", make("asymmetric"), "F.bce_with_logits", bce, 1.5),
        Row("ghm", "sigmoid", make("ghm"), "F.bce_with_logits", bce, 1.5),
        Row("ohem (neg_pos_ratio=3)", "sigmoid", make("ohem"), "F.bce_with_logits", bce, 1.5),
        Row("sigmoid_focal (auto)", "sigmoid", make("sigmoid_focal"), "F.bce_with_logits", bce, 1.5),
        Row("sigmoid_focal (eager)", "sigmoid", make("sigmoid_focal", fast_path="eager"), "F.bce_with_logits", bce,
            None),  # fmt: skip
        Row("textbook sigmoid focal", "sigmoid", textbook_sigmoid_focal, "F.bce_with_logits", bce, None),
    ]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_backward(loss: Step, logits: torch.Tensor, target: torch.Tensor) -> float:
    """Seconds for one forward + backward from fresh leaf logits."""
    leaf = logits.detach().requires_grad_()
    synchronize(logits.device)
    start = time.perf_counter()
    loss(leaf, target).backward()
    synchronize(logits.device)
    return time.perf_counter() - start


def peak_bytes(loss: Step, logits: torch.Tensor, target: torch.Tensor) -> float | None:
    """Largest amount of memory live at once during forward + backward, beyond the inputs."""
    leaf = logits.detach().requires_grad_()
    if logits.device.type == "cuda":
        synchronize(logits.device)
        torch.cuda.reset_peak_memory_stats(logits.device)
        before = torch.cuda.memory_allocated(logits.device)
        loss(leaf, target).backward()
        synchronize(logits.device)
        return float(torch.cuda.max_memory_allocated(logits.device) - before)
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        return None
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


def compare(row: Row, logits: torch.Tensor, target: torch.Tensor, repeats: int) -> dict:
    """Median time ratios over interleaved pairs after 3 warm-ups, first-call overhead, peak-memory ratio."""
    first = forward_backward(row.loss, logits, target)  # compiles, if the loss compiles
    for _ in range(3):
        forward_backward(row.loss, logits, target)
        forward_backward(row.baseline, logits, target)
    loss_times, base_times = [], []
    for index in range(repeats):
        if index % 2:  # alternate which side runs first, so neither always follows the other
            loss_times.append(forward_backward(row.loss, logits, target))
            base_times.append(forward_backward(row.baseline, logits, target))
        else:
            base_times.append(forward_backward(row.baseline, logits, target))
            loss_times.append(forward_backward(row.loss, logits, target))
    loss_peak, base_peak = peak_bytes(row.loss, logits, target), peak_bytes(row.baseline, logits, target)
    loss_time = statistics.median(loss_times)
    return {
        "ms": loss_time * 1e3,
        "base_ms": statistics.median(base_times) * 1e3,
        "ratio": statistics.median(a / b for a, b in zip(loss_times, base_times, strict=True)),
        "median_ratio": loss_time / statistics.median(base_times),
        "first_call_s": max(first - loss_time, 0.0),
        "peak_mb": None if loss_peak is None else loss_peak / 2**20,
        "mem_ratio": None if not base_peak or loss_peak is None else loss_peak / base_peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs: a smoke run in seconds")
    parser.add_argument("--device", default="auto", help="auto (a GPU when one is visible, else the CPU), cpu or cuda[:N]")
    parser.add_argument("--repeats", type=int, default=8, help="interleaved timed pairs per row (>= 8)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    parser.add_argument("--only", nargs="+", default=None, metavar="TEXT",
                        help="only the rows whose name contains one of these (e.g. --only asymmetric ldam)")
    args = parser.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU visible to torch")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    repeats = max(args.repeats, 8)
    torch.manual_seed(0)
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}; torch {torch.__version__} on {device} "
        f"({hardware}), {torch.get_num_threads()} intra-op threads, {repeats} interleaved pairs after 3 warm-ups; "
        f"sigmoid-focal kernel compiled from {COMPILE_MIN_ELEMENTS:,} elements (fast_path='auto')"
    )
    # The fast paths must give the textbook values before their speed means anything.
    head_x = torch.randn(64, 32, device=device) * 3
    head_t = (torch.rand(64, 32, device=device) < 0.05).float()
    for fast_path in ("eager", "compiled"):
        torch.testing.assert_close(
            sigmoid_focal_loss(head_x, head_t, fast_path=fast_path), textbook_sigmoid_focal(head_x, head_t),
            rtol=1e-5, atol=1e-7,
        )  # fmt: skip

    header = f"{'loss':36} {'vs':18} {'ms':>8} {'base ms':>8} {'x time':>7} {'x med':>6} {'peak MB':>8} " \
             f"{'x mem':>6} {'1st s':>6}  target"  # fmt: skip
    misses = []
    markdown: list[str] = []
    for num_samples, num_classes in QUICK_SIZES if args.quick else SIZES:
        logits = torch.randn(num_samples, num_classes, device=device) * 3
        labels = torch.randint(0, num_classes, (num_samples,), device=device)
        binary = (torch.rand(num_samples, num_classes, device=device) < 0.05).float()
        title = f"{num_samples:,} x {num_classes:,} logits ({logits.numel():,} elements)"
        print(f"\n{title}\n{header}")
        markdown += [f"\n**{title}**\n", "| loss | vs | ms | x time | x mem | target |", "|---|---|---:|---:|---:|---|"]
        for row in rows(num_classes, device):
            if args.only and not any(text in row.name for text in args.only):
                continue
            target = labels if row.family == "softmax" else binary
            result = compare(row, logits, target, repeats)
            verdict = ""
            if row.target is not None:
                met = result["ratio"] <= row.target
                verdict = f"<= {row.target:.2f}x {'ok' if met else 'MISSED'}"
                if not met:
                    misses.append(f"{row.name} at {title}: {result['ratio']:.2f}x")
            memory = "     n/a    n/a" if result["peak_mb"] is None else f"{result['peak_mb']:8.1f} {result['mem_ratio']:6.2f}"
            print(
                f"{row.name:36} {row.baseline_name:18} {result['ms']:8.2f} {result['base_ms']:8.2f} "
                f"{result['ratio']:7.2f} {result['median_ratio']:6.2f} {memory} {result['first_call_s']:6.2f}  {verdict}",
                flush=True,
            )
            mem = "n/a" if result["mem_ratio"] is None else f"{result['mem_ratio']:.2f}"
            markdown.append(
                f"| {row.name} | {row.baseline_name} | {result['ms']:.1f} | {result['ratio']:.2f} | {mem} | {verdict} |"
            )
    quick_note = " (--quick: smaller than the sizes the targets are set for)" if args.quick else ""
    print(f"\ntargets missed{quick_note}: {'none' if not misses else '; '.join(misses)}")
    if args.markdown:
        print("\n".join(markdown))


if __name__ == "__main__":
    main()
