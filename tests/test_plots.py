"""The pictures: what each one draws, and that a run writes them from its own numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from lit_imbalance import plots
from lit_imbalance.app import train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    return imread(path)


def test_recall_bars_are_sorted_by_training_count_and_coloured_by_shot() -> None:
    counts = torch.tensor([5, 300, 40, 12])
    recall = torch.tensor([0.1, 0.9, 0.6, 0.3])
    figure = plots.recall_by_frequency(recall, counts, ["a", "b", "c", "d"])
    axes = figure.axes[0]
    bars = axes.patches
    assert [bar.get_height() for bar in bars] == pytest.approx([0.9, 0.6, 0.3, 0.1])
    assert [t.get_text() for t in axes.get_xticklabels()] == ["b\n300", "c\n40", "d\n12", "a\n5"]
    colors = [plots.SHOT_COLORS[shot] for shot in ("many", "medium", "few", "few")]
    assert [bar.get_facecolor() for bar in bars] == [pytest.approx(_rgba(c)) for c in colors]
    # Training counts on a log twin axis, in the same (sorted) order.
    counts_line = figure.axes[1].lines[0]
    assert figure.axes[1].get_yscale() == "log"
    assert list(counts_line.get_ydata()) == [300, 40, 12, 5]


def test_recall_by_frequency_rejects_counts_of_another_length() -> None:
    with pytest.raises(ValueError, match="Expected argument `class_counts` to be 3 counts"):
        plots.recall_by_frequency([0.1, 0.2, 0.3], [1, 2])


def test_confusion_picture_is_row_normalised_with_empty_rows_blank() -> None:
    confusion = torch.tensor([[8, 2, 0], [1, 1, 2], [0, 0, 0]])
    image = plots.confusion_matrix(confusion, ["x", "y", "z"]).axes[0].images[0].get_array()
    expected = np.array([[0.8, 0.2, 0.0], [0.25, 0.25, 0.5], [np.nan] * 3])
    np.testing.assert_allclose(np.ma.filled(image, np.nan), expected)
    assert np.nansum(np.ma.filled(image, np.nan), axis=1)[:2] == pytest.approx([1.0, 1.0])


def test_multilabel_confusion_gives_recall_per_label() -> None:
    # Per label [[tn, fp], [fn, tp]].
    confusion = torch.tensor([[[10, 0], [1, 3]], [[5, 5], [0, 0]]])
    recall, support = plots.class_recall_and_support(confusion)
    assert recall.tolist() == pytest.approx([0.75, 0.0])
    assert support.tolist() == [4.0, 0.0]
    with pytest.raises(ValueError, match="Expected argument `confusion`"):
        plots.class_recall_and_support(torch.zeros(2, 3))


def test_sweep_heatmap_draws_the_grid_marks_failed_cells_and_outlines_the_best(tmp_path: Path) -> None:
    grid = np.array([[0.5, 0.7, 0.6], [np.nan, 0.65, 0.4]])
    figure = plots.sweep_heatmap([0.25, 0.5], [0.0, 1.0, 2.0], grid, "loss.alpha", "loss.gamma")
    axes = figure.axes[0]
    np.testing.assert_allclose(np.ma.filled(axes.images[0].get_array(), np.nan), grid)
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in axes.texts}
    assert texts[(1, 0)] == "failed" and texts[(0, 1)] == "0.700"
    (outline,) = axes.patches
    assert outline.get_xy() == (0.5, -0.5)  # column 1, row 0: the 0.7 cell
    image = read_png(plots.save_figure(figure, tmp_path / "grid.png", dpi=100))
    width, height = figure.get_size_inches() * 100
    assert image.shape[:2] == (round(height), round(width))
    with pytest.raises(ValueError, match="Expected argument `grid` to be an array of shape \\(2, 2\\)"):
        plots.sweep_heatmap([0, 1], [0, 1], np.zeros((3, 2)), "a", "b")


def test_sweep_scatter_circles_the_best_trial_and_crosses_failed_ones() -> None:
    figure = plots.sweep_scatter([0.0, 1.0, 2.0], [0.1, 0.5, 0.9], [0.3, math.nan, 0.6], "gamma", "alpha")
    axes = figure.axes[0]
    points, failed, best = axes.collections
    assert points.get_offsets().tolist() == [[0.0, 0.1], [2.0, 0.9]]
    assert failed.get_offsets().tolist() == [[1.0, 0.5]]
    assert best.get_offsets().tolist() == [[2.0, 0.9]]


def test_a_run_writes_both_pictures_from_its_own_numbers(train_cfg, tmp_path: Path) -> None:
    train(train_cfg("trainer.max_epochs=3"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    recall_png = read_png(tmp_path / "plots" / "test_recall_by_frequency.png")
    confusion_png = read_png(tmp_path / "plots" / "test_confusion_matrix.png")
    assert confusion_png.std() > 0
    # Redrawn from metrics.json alone, the long-tail picture is pixel-identical: it shows
    # exactly the logged test recalls and the training counts.
    recall = [metrics[f"test/recall/{c}"] for c in range(10)]
    figure = plots.recall_by_frequency(recall, metrics["train_class_counts"], [str(c) for c in range(10)])
    redrawn = read_png(plots.save_figure(figure, tmp_path / "redrawn.png"))
    np.testing.assert_array_equal(recall_png, redrawn)


def _rgba(hex_color: str) -> tuple[float, ...]:
    from matplotlib.colors import to_rgba

    return to_rgba(hex_color)
