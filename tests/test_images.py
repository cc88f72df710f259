"""Image folders and split files: generated PNGs, through train.py and the data modules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lit_imbalance.data import ImageFolderDataModule, SplitFilesDataModule, long_tail_counts
from lit_imbalance.data.images import IMAGENET_MEAN, IMAGENET_STD
from tests.conftest import run_train_py
from tests.datagen import write_image_folder, write_png

QUICK = ("logger=none", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false", "data.num_workers=0", "data.pin_memory=false", "data.image_size=32")


def red_value(image: torch.Tensor) -> float:
    """The red value (0..255) a normalised, constant-red image was made from."""
    return float((image[0].mean() * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255)


def test_image_folder_with_timm_resnet18_through_train_py(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "data" / "train", {"cat": 12, "dog": 12, "emu": 12})
    run_dir = tmp_path / "run"
    result = run_train_py(
        "data=image_folder", f"data.root={tmp_path / 'data'}", "data.imbalance_ratio=4", "data.batch_size=4",
        "model=timm", "model.name=resnet18", "model.pretrained=false", *QUICK, run_dir=run_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # Per class: 12 -> 2 held out for test (20%), 1 of the other 10 for validation, 9 left, then cut to rho=4.
    assert metrics["train_class_counts"] == long_tail_counts(9, 3, 4) == [9, 4, 2]
    assert [metrics[f"test/support/{name}"] for name in ("cat", "dog", "emu")] == [2, 2, 2]
    assert 0.0 <= metrics["test/balanced_acc"] <= 1.0


def test_split_files_through_train_py(tmp_path: Path) -> None:
    root = tmp_path / "data"
    counts = {"train": [10, 5, 2], "val": [2, 2, 2], "test": [3, 3, 3]}
    value = 0
    for split, per_class in counts.items():
        lines = []
        for label, count in enumerate(per_class):
            for _ in range(count):
                relative = f"images/{split}/n{label:03d}/img {value}.png"  # a space in the name, as some sets have
                write_png(root / relative, value)
                lines.append(f"{relative} {label}")
                value += 1
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n\n")
    run_dir = tmp_path / "run"
    result = run_train_py("data=split_files", f"data.root={root}", "model=resnet32", *QUICK, run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train_class_counts"] == [10, 5, 2]
    assert [metrics[f"test/support/{c}"] for c in range(3)] == [3, 3, 3]
    assert [metrics[f"val/support/{c}"] for c in range(3)] == [2, 2, 2]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_image_folder(tmp_path / "train", {"a": 6, "b": 4})
    write_image_folder(tmp_path / "test", {"a": 2, "b": 3}, start=100)
    return tmp_path


def test_image_folder_labels_come_without_decoding_images(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(Image, "open", refuse)
    dm = ImageFolderDataModule(root=str(folder), image_size=16, val_fraction=0.25)
    assert dm.class_names == ["a", "b"]
    # test/ exists, so validation is held out of train/ (25% per class) and test/ is the test split.
    assert dm.train_class_counts.tolist() == [4, 3]
    assert np.bincount(dm.labels("val").numpy()).tolist() == [2, 1]
    assert np.bincount(dm.labels("test").numpy()).tolist() == [2, 3]


def test_image_folder_decodes_the_listed_file_lazily(folder: Path) -> None:
    dm = ImageFolderDataModule(root=str(folder), image_size=16)
    test = dm.dataset("test")
    for index in range(len(test)):
        image, label = test[index]
        assert image.shape == (3, 16, 16)
        name = Path(test.paths[index])
        assert int(label) == ["a", "b"].index(name.parent.name)
        assert red_value(image) == pytest.approx(int(name.stem), abs=0.5)


def test_image_folder_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"Expected argument `root` to be a directory with a train/ folder"):
        ImageFolderDataModule(root=str(tmp_path / "missing"))
    write_image_folder(tmp_path / "train", {"a": 2})
    write_image_folder(tmp_path / "val", {"zebra": 2})
    with pytest.raises(ValueError, match=r"val/ class folders that train/ has too \(unknown: zebra\)"):
        ImageFolderDataModule(root=str(tmp_path))


def test_split_file_errors_name_the_file_and_line(tmp_path: Path) -> None:
    write_png(tmp_path / "x.png", 1)
    (tmp_path / "train.txt").write_text("x.png 0\nx.png cat\n")
    with pytest.raises(ValueError, match=r"`train_list` to be lines `relative/path label` .*train.txt, line 2\), but got 'x.png cat'"):
        SplitFilesDataModule(root=str(tmp_path), train_list=str(tmp_path / "train.txt"))
    (tmp_path / "train.txt").write_text("x.png 0\ny.png 1\n")
    with pytest.raises(FileNotFoundError, match=r"`root` to be the image root of train.txt \(1 listed files missing"):
        SplitFilesDataModule(root=str(tmp_path), train_list=str(tmp_path / "train.txt"))
    (tmp_path / "train.txt").write_text("x.png 0\n")
    with pytest.raises(FileNotFoundError, match=r"`test_list` to be an existing file"):
        SplitFilesDataModule(root=str(tmp_path), train_list=str(tmp_path / "train.txt"), test_list="/nope.txt")


def test_a_test_fraction_of_zero_is_refused_for_images(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", {"a": 4, "b": 4})
    with pytest.raises(ValueError, match=r"`test_fraction`.*0\.0"):
        ImageFolderDataModule(root=str(tmp_path), test_fraction=0.0)
