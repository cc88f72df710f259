"""Pictures of imbalanced classification: the long tail, the confusion matrix, a sweep's grid.

Every function returns a :class:`matplotlib.figure.Figure` built without
``pyplot`` and rendered by the Agg canvas: no global backend switch, no
figure manager to leak in a long sweep, safe in DDP workers and headless CI.
:func:`save_figure` writes one to a PNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from torch import Tensor

from lit_imbalance._checks import fail
from lit_imbalance.metrics import ReliabilityBins, per_class_recall, safe_divide, shot_groups

SHOT_COLORS = {"many": "#1f77b4", "medium": "#ff7f0e", "few": "#d62728"}
ANNOTATE_MAX_CELLS = 400  # above this, numbers in cells are unreadable anyway


def new_figure(width: float, height: float) -> Figure:
    """A figure attached to an Agg canvas, independent of pyplot's state."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write ``figure`` as a PNG (creating the directory) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, format="png")
    return path


def class_recall_and_support(confusion: Tensor) -> tuple[Tensor, Tensor]:
    """Per-class recall and support from a ``(C, C)`` ``[true, pred]`` or a multi-label ``(L, 2, 2)`` matrix.

    Example:
        >>> class_recall_and_support(torch.tensor([[3, 1], [0, 2]]))
        (tensor([0.7500, 1.0000]), tensor([4., 2.]))
        >>> class_recall_and_support(torch.tensor([[[5, 0], [1, 3]]]))
        (tensor([0.7500]), tensor([4.]))
    """
    confusion = torch.as_tensor(confusion)
    if confusion.ndim == 3 and confusion.shape[1:] == (2, 2):
        positives = confusion[:, 1, :].double()
        return safe_divide(positives[:, 1], positives.sum(dim=1)).float(), positives.sum(dim=1).float()
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        fail("confusion", "a (C, C) or (L, 2, 2) confusion matrix", tuple(confusion.shape))
    return per_class_recall(confusion), confusion.sum(dim=1).float()


def row_normalize(confusion: Tensor) -> np.ndarray:
    """Each row of a ``(C, C)`` confusion matrix divided by its sum; rows without samples are NaN.

    Example:
        >>> row_normalize(torch.tensor([[3, 1], [0, 0]]))
        array([[0.75, 0.25],
               [ nan,  nan]])
    """
    counts = torch.as_tensor(confusion).double().numpy()
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / np.where(totals > 0, totals, 1), np.nan)


def shot_labels(class_counts: Tensor, many_threshold: int = 100, few_threshold: int = 20) -> list[str]:
    """``"many"``, ``"medium"`` or ``"few"`` for every class (see :func:`~lit_imbalance.metrics.shot_groups`).

    Example:
        >>> shot_labels(torch.tensor([150, 50, 5]))
        ['many', 'medium', 'few']
    """
    groups = shot_groups(torch.as_tensor(class_counts), many_threshold, few_threshold)
    return [next(group for group, mask in groups.items() if mask[c]) for c in range(len(class_counts))]


def recall_by_frequency(
    recall: Sequence[float] | Tensor,
    class_counts: Sequence[int] | Tensor,
    class_names: Sequence[str] | None = None,
    many_threshold: int = 100,
    few_threshold: int = 20,
    title: str | None = None,
) -> Figure:
    """The long-tail picture: per-class recall bars, classes sorted by training count (head left).

    Bars are coloured by shot group (many > ``many_threshold`` training samples,
    few < ``few_threshold``); the training counts are drawn on a log axis on
    the right, so the fall of recall along the tail reads at a glance.
    """
    recall = torch.as_tensor(recall, dtype=torch.float64)
    counts = torch.as_tensor(class_counts, dtype=torch.long)
    if recall.ndim != 1 or counts.shape != recall.shape:
        fail("class_counts", f"{recall.numel()} counts, one per recall value", counts.tolist())
    names = [str(i) for i in range(len(recall))] if class_names is None else [str(n) for n in class_names]
    # Stable sort: ties keep the class order, so equal counts do not shuffle between runs.
    order = sorted(range(len(recall)), key=lambda c: -int(counts[c]))
    shots = shot_labels(counts, many_threshold, few_threshold)

    figure = new_figure(max(6.0, 0.45 * len(order) + 2), 4.0)
    axes = figure.add_subplot()
    positions = np.arange(len(order))
    axes.bar(positions, [float(recall[c]) for c in order], color=[SHOT_COLORS[shots[c]] for c in order])
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("recall")
    axes.set_xlabel("class / training samples (sorted by training samples)")
    axes.set_xticks(positions, [f"{names[c]}\n{int(counts[c])}" for c in order], rotation=90 if len(order) > 20 else 0)
    axes.axhline(float(recall.mean()), color="grey", linestyle="--", linewidth=1)
    counts_axes = axes.twinx()
    counts_axes.plot(positions, [max(int(counts[c]), 1) for c in order], color="black", marker="o", markersize=3)
    counts_axes.set_yscale("log")
    counts_axes.set_ylabel("training samples (log)")
    handles = [Patch(color=color, label=f"{group}-shot") for group, color in SHOT_COLORS.items() if group in shots]
    handles.append(Line2D([], [], color="grey", linestyle="--", linewidth=1, label="mean recall"))
    handles.append(Line2D([], [], color="black", marker="o", markersize=3, label="training samples"))
    axes.legend(handles=handles, loc="upper right", fontsize="small")
    axes.set_title(title or f"Per-class recall along the long tail (mean {float(recall.mean()):.3f})")
    return figure


def confusion_matrix(
    confusion: Tensor, class_names: Sequence[str] | None = None, title: str | None = None
) -> Figure:
    """The row-normalised confusion matrix (row = true class, each row sums to 1); empty rows grey."""
    normalized = row_normalize(confusion)
    size = normalized.shape[0]
    names = [str(i) for i in range(size)] if class_names is None else [str(n) for n in class_names]
    figure = new_figure(max(4.5, 0.45 * size + 2.5), max(4.0, 0.45 * size + 1.5))
    axes = figure.add_subplot()
    image = axes.imshow(normalized, cmap=_with_bad_color("Blues"), vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="fraction of the true class")
    axes.set_xticks(range(size), names, rotation=90 if size > 20 else 0)
    axes.set_yticks(range(size), names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if size * size <= ANNOTATE_MAX_CELLS:
        # Blues is dark at the top of the scale.
        _annotate(axes, normalized, "{:.2f}", "n/a", dark_cell=lambda v: v > 0.5, skip_zero=True)
    axes.set_title(title or "Confusion matrix (row-normalised)")
    return figure


#: Above this many classes the pictures are compact: a C x C image or one bar per class stops
#: being readable, and its size (and the memory to draw it) grows with C squared.
COMPACT_ABOVE_CLASSES = 50


def recall_against_frequency(
    recall: Sequence[float] | Tensor,
    class_counts: Sequence[int] | Tensor,
    many_threshold: int = 100,
    few_threshold: int = 20,
    title: str | None = None,
) -> Figure:
    """Recall of every class against its training count (log axis): the long tail for any number of classes.

    One point per class, coloured by shot group, in a figure of fixed size;
    classes without evaluation samples (NaN recall) are left out.
    """
    recall = torch.as_tensor(recall, dtype=torch.float64)
    counts = torch.as_tensor(class_counts, dtype=torch.long)
    if recall.ndim != 1 or counts.shape != recall.shape:
        fail("class_counts", f"{recall.numel()} counts, one per recall value", counts.tolist()[:10])
    shots = shot_labels(counts, many_threshold, few_threshold)
    known = ~torch.isnan(recall)
    figure = new_figure(7.0, 4.5)
    axes = figure.add_subplot()
    for group, color in SHOT_COLORS.items():
        members = [c for c in range(len(recall)) if shots[c] == group and bool(known[c])]
        if members:
            axes.scatter([max(int(counts[c]), 1) for c in members], [float(recall[c]) for c in members],
                         s=8, color=color, alpha=0.7, label=f"{group}-shot ({len(members)})")
    axes.set_xscale("log")
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("training samples of the class (log)")
    axes.set_ylabel("recall")
    mean = float(recall[known].mean()) if known.any() else float("nan")
    axes.axhline(mean, color="grey", linestyle="--", linewidth=1, label="mean recall")
    axes.legend(loc="lower right", fontsize="small")
    axes.set_title(title or f"Recall against class frequency, {len(recall)} classes (mean {mean:.3f})")
    return figure


def shot_group_confusion(
    confusion: Tensor, class_counts: Sequence[int] | Tensor, many_threshold: int = 100, few_threshold: int = 20
) -> tuple[list[str], np.ndarray]:
    """The confusion matrix summed into shot groups (true group x predicted group), row-normalised.

    Example:
        >>> names, matrix = shot_group_confusion(torch.tensor([[8, 2], [3, 1]]), [200, 5])
        >>> names, matrix.round(2).tolist()
        (['many', 'few'], [[0.8, 0.2], [0.75, 0.25]])
    """
    groups = shot_groups(torch.as_tensor(class_counts), many_threshold, few_threshold)
    names = [name for name, mask in groups.items() if mask.any()]
    membership = torch.stack([groups[name] for name in names]).to(torch.float64)  # (G, C)
    summed = membership @ confusion.to(torch.float64) @ membership.T
    return names, row_normalize(summed)


def most_confused_pairs(confusion: Tensor, k: int = 20) -> list[tuple[int, int, float]]:
    """The ``k`` largest off-diagonal shares ``(true, predicted, fraction of the true class)``.

    Example:
        >>> most_confused_pairs(torch.tensor([[5, 5, 0], [1, 9, 0], [0, 4, 6]]), k=2)
        [(0, 1, 0.5), (2, 1, 0.4)]
    """
    shares = torch.as_tensor(row_normalize(confusion))
    shares = torch.nan_to_num(shares, nan=0.0)
    shares.fill_diagonal_(0.0)
    values, flat = shares.flatten().topk(min(k, shares.numel()))
    size = shares.shape[1]
    return [(int(i) // size, int(i) % size, round(float(v), 6)) for v, i in zip(values, flat) if v > 0]


def compact_confusion(
    confusion: Tensor,
    class_counts: Sequence[int] | Tensor,
    class_names: Sequence[str] | None = None,
    many_threshold: int = 100,
    few_threshold: int = 20,
    pairs: int = 20,
) -> Figure:
    """For many classes: the confusion between shot groups, and the most confused class pairs."""
    size = confusion.shape[0]
    names = [str(i) for i in range(size)] if class_names is None else [str(n) for n in class_names]
    groups, grouped = shot_group_confusion(confusion, class_counts, many_threshold, few_threshold)
    top = most_confused_pairs(confusion, pairs)
    figure = new_figure(12.0, 5.0)
    left, right = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    image = left.imshow(grouped, cmap=_with_bad_color("Blues"), vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=left, label="fraction of the true group")
    left.set_xticks(range(len(groups)), groups)
    left.set_yticks(range(len(groups)), groups)
    left.set_xlabel("predicted shot group")
    left.set_ylabel("true shot group")
    _annotate(left, grouped, "{:.2f}", "n/a", dark_cell=lambda v: v > 0.5)
    left.set_title("Confusion between shot groups")
    labels = [f"{names[t]} -> {names[p]}" for t, p, _ in top][::-1]
    right.barh(range(len(top)), [share for _, _, share in top][::-1], color="tab:red")
    right.set_yticks(range(len(top)), labels, fontsize="small")
    right.set_xlabel("fraction of the true class predicted as the other")
    right.set_title(f"The {len(top)} most confused pairs of {size} classes")
    return figure


def reliability_diagram(bins: ReliabilityBins, title: str | None = None) -> Figure:
    """Accuracy per confidence bin against the diagonal of perfect calibration, ECE in the title.

    Bars rise to each bin's accuracy (binary/multi-label: fraction of positives);
    a red cap shows the gap to the bin's mean confidence, and a lower panel the
    share of samples per bin, so a large gap in an almost empty bin reads as such.
    Empty bins have no bar.
    """
    edges = bins.edges.numpy()
    width = np.diff(edges)
    filled = bins.count.numpy() > 0
    accuracy, confidence = bins.accuracy.double().numpy(), bins.confidence.double().numpy()
    figure = new_figure(5.5, 6.0)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(edges[:-1][filled], accuracy[filled], width=width[filled], align="edge", color="tab:blue",
            edgecolor="black", linewidth=0.5, label="accuracy")
    # The gap between confidence and accuracy, drawn from the accuracy to the confidence.
    top.bar(edges[:-1][filled], confidence[filled] - accuracy[filled], bottom=accuracy[filled], width=width[filled],
            align="edge", color="tab:red", alpha=0.3, edgecolor="tab:red", linewidth=0.5, label="gap to confidence")
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy (fraction of positives)")
    top.legend(loc="upper left", fontsize="small")
    top.set_title(title or f"Reliability diagram (ECE {bins.ece:.4f}, {len(bins.count)} bins)")
    total = max(int(bins.count.sum()), 1)
    bottom.bar(edges[:-1], bins.count.numpy() / total, width=width, align="edge", color="grey")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("share of samples")
    return figure


def sweep_heatmap(
    row_values: Sequence[float],
    column_values: Sequence[float],
    grid: np.ndarray,
    row_label: str,
    column_label: str,
    value_label: str = "objective",
    mode: str = "max",
) -> Figure:
    """A sweep's objective over a full grid of two parameters, the best cell outlined; failed (NaN) cells grey."""
    grid = np.asarray(grid, dtype=float)
    if grid.shape != (len(row_values), len(column_values)):
        fail("grid", f"an array of shape ({len(row_values)}, {len(column_values)})", grid.shape)
    figure = new_figure(max(4.5, 0.9 * len(column_values) + 2.5), max(3.5, 0.6 * len(row_values) + 1.8))
    axes = figure.add_subplot()
    finite = grid[np.isfinite(grid)]
    image = axes.imshow(grid, cmap=_with_bad_color("viridis"), aspect="auto",
                        vmin=finite.min() if finite.size else None, vmax=finite.max() if finite.size else None)
    figure.colorbar(image, ax=axes, label=value_label)
    axes.set_xticks(range(len(column_values)), [f"{v:g}" for v in column_values])
    axes.set_yticks(range(len(row_values)), [f"{v:g}" for v in row_values])
    axes.set_xlabel(column_label)
    axes.set_ylabel(row_label)
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    # Viridis is dark at the bottom of the scale.
    _annotate(axes, grid, "{:.3f}", "failed", dark_cell=lambda v: v < middle)
    if finite.size:
        best = np.nanargmax(grid) if mode == "max" else np.nanargmin(grid)
        axes.add_patch(_outline(np.unravel_index(best, grid.shape)))
    axes.set_title(f"{value_label}\nover {row_label} x {column_label}", fontsize="medium")
    return figure


def sweep_scatter(
    x: Sequence[float], y: Sequence[float], values: Sequence[float], x_label: str, y_label: str,
    value_label: str = "objective",
    mode: str = "max",
) -> Figure:
    """Sampled sweep points (e.g. Optuna trials) coloured by the objective, the best circled; failed ones grey x."""
    x, y, values = (np.asarray(a, dtype=float) for a in (x, y, values))
    ok = np.isfinite(values)
    figure = new_figure(5.5, 4.0)
    axes = figure.add_subplot()
    points = axes.scatter(x[ok], y[ok], c=values[ok], cmap="viridis", s=60, edgecolors="black")
    if (~ok).any():
        axes.scatter(x[~ok], y[~ok], marker="x", color="grey", label="failed")
        axes.legend(loc="best", fontsize="small")
    if ok.any():
        figure.colorbar(points, ax=axes, label=value_label)
        scored = np.where(ok, values, np.nan)
        best = np.nanargmax(scored) if mode == "max" else np.nanargmin(scored)
        axes.scatter([x[best]], [y[best]], s=200, facecolors="none", edgecolors="red", linewidths=2)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(f"{value_label} of each trial", fontsize="medium")
    return figure


def _with_bad_color(name: str) -> Colormap:
    """Colormap ``name`` drawing NaN cells (no samples, failed jobs) light grey."""
    return colormaps[name].with_extremes(bad="lightgrey")


def _annotate(axes, values: np.ndarray, fmt: str, missing: str, dark_cell, skip_zero: bool = False) -> None:
    """Write each cell's value (``missing`` for NaN), white on the cells ``dark_cell(value)`` says are dark."""
    for (row, column), value in np.ndenumerate(values):
        if math.isnan(value):
            axes.text(column, row, missing, ha="center", va="center", fontsize="small", color="dimgrey")
        elif not (skip_zero and value == 0):
            axes.text(column, row, fmt.format(value), ha="center", va="center", fontsize="small",
                      color="white" if dark_cell(value) else "black")


def _outline(cell: tuple[int, ...]) -> Rectangle:
    row, column = cell
    return Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5)
