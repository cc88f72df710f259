"""CIFAR-LT: the LDAM-DRW construction on generated archives of the official pickle layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_imbalance.data import CIFAR10LTDataModule, CIFAR100LTDataModule, cifar_long_tail, long_tail_counts
from lit_imbalance.data.cifar import CIFAR10, CIFAR100
from tests.conftest import run_train_py
from tests.datagen import TEST_FLAG, decode_index, write_cifar

CIFAR10_LT_100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def reference_counts(img_max: int, cls_num: int, imb_factor: float) -> list[int]:
    """``get_img_num_per_cls`` of LDAM-DRW's imbalance_cifar.py (imb_type='exp')."""
    return [int(img_max * (imb_factor ** (cls_idx / (cls_num - 1.0)))) for cls_idx in range(cls_num)]


def reference_subset(data: np.ndarray, targets: np.ndarray, img_num_per_cls: list[int], rand_number: int = 0) -> np.ndarray:
    """``gen_imbalanced_data`` of LDAM-DRW's imbalance_cifar.py: the long-tailed image array."""
    np.random.seed(rand_number)
    new_data = []
    for the_class, the_img_num in zip(np.unique(targets), img_num_per_cls):
        idx = np.where(targets == the_class)[0]
        np.random.shuffle(idx)
        new_data.append(data[idx[:the_img_num], ...])
    return np.vstack(new_data)


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A full-size CIFAR-10 archive (5,000 training images per class, 100 test images per class)."""
    root = tmp_path_factory.mktemp("cifar10")
    rows, labels = write_cifar(root, CIFAR10, per_class=5000, test_per_class=100)
    return root, rows, labels


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A full-size CIFAR-100 archive (500 training images per class, 10 test images per class)."""
    root = tmp_path_factory.mktemp("cifar100")
    rows, labels = write_cifar(root, CIFAR100, per_class=500, test_per_class=10)
    return root, rows, labels


@pytest.mark.parametrize(
    ("num_classes", "img_max", "rho", "total"),
    [(10, 5000, 100, 12406), (10, 5000, 50, 13996), (100, 500, 100, 10847), (100, 500, 50, 12608)],
)
def test_counts_are_the_published_training_set_sizes(num_classes: int, img_max: int, rho: int, total: int) -> None:
    counts = long_tail_counts(img_max, num_classes, rho)
    assert counts == reference_counts(img_max, num_classes, 1 / rho)
    assert sum(counts) == total


def test_cifar10_lt_through_train_py_writes_the_standard_counts(cifar10_root, tmp_path: Path) -> None:
    root, _, _ = cifar10_root
    run_dir = tmp_path / "run"
    result = run_train_py(
        "data=cifar10_lt", f"data.root={root}", "data.imbalance_ratio=100", "model=resnet32",
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2", "logger=none",
        # Quicker on 2 CPU cores, nothing the counts depend on:
        "data.num_workers=0", "data.pin_memory=false", "data.eval_batch_size=128", "callbacks.plots=null",
        "trainer.enable_progress_bar=false", run_dir=run_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train_class_counts"] == CIFAR10_LT_100
    assert sum(CIFAR10_LT_100) == 12406
    # Class names come from batches.meta; 2 test batches of 128 of the 1,000 generated test images.
    assert sum(metrics[f"test/support/class_{c}"] for c in range(10)) == 256 and metrics["status"] == "finished"


def test_cifar10_subset_is_the_reference_construction(cifar10_root) -> None:
    root, rows, labels = cifar10_root
    images = rows.reshape(-1, 3, 32, 32)
    for rho in (100, 50):
        dm = CIFAR10LTDataModule(root=str(root), imbalance_ratio=rho, val_per_class=200)
        expected = reference_subset(images, labels, reference_counts(5000, 10, 1 / rho))
        train = dm.dataset("train")
        assert torch.equal(train.images, torch.from_numpy(expected))
        assert dm.train_class_counts.tolist() == reference_counts(5000, 10, 1 / rho)
        assert int(dm.train_class_counts.sum()) == {100: 12406, 50: 13996}[rho]
        assert torch.equal(train.targets, torch.as_tensor(labels[decode_index(expected)]))
    # The global numpy generator is not the loader's: it was not reseeded.
    state = np.random.get_state()[1].copy()
    CIFAR10LTDataModule(root=str(root), imbalance_ratio=100)
    assert np.array_equal(state, np.random.get_state()[1])


def test_cifar_validation_comes_from_left_out_training_images(cifar100_root) -> None:
    root, rows, labels = cifar100_root
    dm = CIFAR100LTDataModule(root=str(root), imbalance_ratio=100, val_per_class=20)
    assert int(dm.train_class_counts.sum()) == 10847
    assert int(CIFAR100LTDataModule(root=str(root), imbalance_ratio=50).train_class_counts.sum()) == 12608
    train_images, val_images = dm.dataset("train").images.numpy(), dm.dataset("val").images.numpy()
    train_source, val_source = decode_index(train_images), decode_index(val_images)
    # Training images, never test images, and none of them in the training subset.
    assert (val_images[:, 0, 0, 0] != TEST_FLAG).all() and (train_images[:, 0, 0, 0] != TEST_FLAG).all()
    assert not set(val_source) & set(train_source)
    assert np.array_equal(dm.labels("val").numpy(), labels[val_source])
    # Up to 20 per class from what the cut left: none of the head class (it keeps all 500).
    left = 500 - np.asarray(long_tail_counts(500, 100, 100))
    assert np.bincount(dm.labels("val").numpy(), minlength=100).tolist() == np.minimum(left, 20).tolist()
    test_labels = dm.labels("test")
    assert np.bincount(test_labels.numpy(), minlength=100).tolist() == [10] * 100
    assert dm.class_names[:2] == ["class_0", "class_1"]


def test_cifar_transforms_crop_flip_and_normalise(cifar100_root) -> None:
    root, _, _ = cifar100_root
    dm = CIFAR100LTDataModule(root=str(root), imbalance_ratio=100, val_per_class=1)
    image, label = dm.dataset("test")[3]
    raw = dm.dataset("test").images[3].float() / 255
    mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2023, 0.1994, 0.2010])
    assert torch.allclose(image, (raw - mean[:, None, None]) / std[:, None, None], atol=1e-6)
    assert label.dtype == torch.int64
    torch.manual_seed(0)
    augmented = torch.stack([dm.dataset("train")[0][0] for _ in range(20)])
    assert augmented.shape == (20, 3, 32, 32)
    # Random crops of a padded image: some views differ from the plain normalised one.
    assert not all(torch.equal(view, augmented[0]) for view in augmented)


def test_missing_cifar_files_name_the_root_and_how_to_get_them(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as error:
        CIFAR10LTDataModule(root=str(tmp_path))
    message = str(error.value)
    assert message.startswith(f"Expected argument `root` to be a directory holding cifar-10-batches-py/")
    assert "missing: data_batch_2, data_batch_3, data_batch_4, data_batch_5, test_batch, batches.meta" in message
    assert "data.download=true" in message and "cifar-10-python.tar.gz" in message and str(tmp_path) in message
    assert "\n" not in message


def test_missing_cifar_root_through_train_py_is_one_clear_line(tmp_path: Path) -> None:
    result = run_train_py("data=cifar100_lt", "data.root=/nonexistent/cifar", "model=resnet32", "logger=none",
                          run_dir=tmp_path / "run")
    assert result.returncode != 0
    line = next(line for line in result.stderr.splitlines() if "Expected argument `root`" in line)
    assert "/nonexistent/cifar" in line and "cifar-100-python/" in line and "data.download=true" in line


def test_the_evaluated_training_split_is_the_training_images_without_augmentation(cifar100_root) -> None:
    root, _, _ = cifar100_root
    dm = CIFAR100LTDataModule(root=str(root), imbalance_ratio=100, val_per_class=1)
    plain = dm.evaluation_dataset("train")
    assert plain.images is dm.dataset("train").images and torch.equal(plain.targets, dm.dataset("train").targets)
    raw = dm.dataset("train").images[0].float() / 255
    mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2023, 0.1994, 0.2010])
    for _ in range(5):  # no random crop or flip: every view is the normalised image (what NCM averages)
        assert torch.allclose(plain[0][0], (raw - mean[:, None, None]) / std[:, None, None], atol=1e-6)
    assert dm.dataset("train").transform is not plain.transform  # the training loader still augments
