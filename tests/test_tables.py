"""data=csv: CSV and parquet tables, train-only standardisation, categorical codes, string labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lit_imbalance.data import TableDataModule
from tests.conftest import run_train_py


def make_table(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.choice(["fraud", "ok", "review"], size=rows, p=[0.1, 0.7, 0.2])
    centre = pd.Series(label).map({"fraud": 3.0, "ok": 0.0, "review": -2.0}).to_numpy()
    return pd.DataFrame({
        "amount": centre * 10 + rng.normal(size=rows) + shift,
        "age": rng.integers(18, 90, size=rows).astype(float),
        "country": rng.choice(["de", "fr", "it"], size=rows),
        "label": label,
    })


def test_csv_through_train_py(tmp_path: Path) -> None:
    make_table(300, seed=0).to_csv(tmp_path / "rows.csv", index=False)
    run_dir = tmp_path / "run"
    result = run_train_py(
        "data=csv", f"data.path={tmp_path / 'rows.csv'}", "data.label=label", "logger=none", "trainer.max_epochs=3",
        "trainer.enable_progress_bar=false", run_dir=run_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    table = make_table(300, seed=0)
    totals = table["label"].value_counts()
    # Per class: 20% to test, then 10% of the rest to validation (rounded, at least one each).
    expected_test = [int(round(0.2 * totals[c])) for c in ("fraud", "ok", "review")]
    assert [metrics[f"test/support/{c}"] for c in ("fraud", "ok", "review")] == expected_test
    expected_val = [int(round(0.1 * (totals[c] - t))) for c, t in zip(("fraud", "ok", "review"), expected_test)]
    expected_train = [int(totals[c]) - t - v for c, t, v in zip(("fraud", "ok", "review"), expected_test, expected_val)]
    assert metrics["train_class_counts"] == expected_train
    # The amount column separates the classes: a few epochs of the MLP find it.
    assert metrics["test/balanced_acc"] > 0.6


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_features_are_standardised_with_training_statistics_only(tmp_path: Path, suffix: str) -> None:
    tables = {"train": make_table(200, seed=1), "val": make_table(40, seed=2, shift=-50.0),
              "test": make_table(60, seed=3, shift=100.0)}
    tables["test"].loc[0, "country"] = "es"  # a category training never saw
    for split, table in tables.items():
        file = tmp_path / f"{split}{suffix}"
        table.to_parquet(file) if suffix == ".parquet" else table.to_csv(file, index=False)
    dm = TableDataModule(path=str(tmp_path / f"train{suffix}"), label="label",
                         val_path=str(tmp_path / f"val{suffix}"), test_path=str(tmp_path / f"test{suffix}"))
    assert dm.class_names == ["fraud", "ok", "review"]
    assert dm.encoder.feature_names == ["amount", "age", "country=de", "country=fr", "country=it"]
    numeric = tables["train"][["amount", "age"]]
    mean, std = numeric.mean().to_numpy(), numeric.std(ddof=0).to_numpy()
    for split, table in tables.items():
        x = dm.splits[split].x.numpy()
        assert np.allclose(x[:, :2], (table[["amount", "age"]].to_numpy() - mean) / std, atol=1e-4), split
        assert dm.splits[split].y.tolist() == table["label"].map({"fraud": 0, "ok": 1, "review": 2}).tolist()
    x_test = dm.splits["test"].x.numpy()
    assert x_test[:, 0].mean() > 5 and dm.splits["val"].x.numpy()[:, 0].mean() < -2  # not re-centred on themselves
    assert x_test[0, 2:].tolist() == [0.0, 0.0, 0.0]
    assert x_test[1, 2:].tolist() == [float(tables["test"].loc[1, "country"] == c) for c in ("de", "fr", "it")]


def test_ordinal_codes_and_unknown_labels(tmp_path: Path) -> None:
    train = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "colour": ["red", "blue", "red", "blue", "red", None],
                          "y": [0, 1, 0, 1, 0, 1]})
    test = pd.DataFrame({"x": [1.0, 2.0], "colour": ["green", "red"], "y": [1, 0]})
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    dm = TableDataModule(path=str(tmp_path / "train.csv"), label="y", test_path=str(tmp_path / "test.csv"),
                         categorical="ordinal", val_fraction=0.34)
    assert dm.encoder.feature_names == ["x", "colour"] and dm.class_names == ["0", "1"]
    assert dm.splits["test"].x[:, 1].tolist() == [-1.0, 1.0]  # green unseen: -1; categories sorted: blue 0, red 1
    pd.DataFrame({"x": [1.0], "colour": ["red"], "y": [7]}).assign(y=["seven"]).to_csv(tmp_path / "bad.csv", index=False)
    train.assign(y=["a", "b", "a", "b", "a", "b"]).to_csv(tmp_path / "strings.csv", index=False)
    with pytest.raises(ValueError, match=r"`test labels` to be classes seen in training \(a, b\), but got 'seven'"):
        TableDataModule(path=str(tmp_path / "strings.csv"), label="y", test_path=str(tmp_path / "bad.csv"), val_fraction=0.34)
    with pytest.raises(ValueError, match=r"`label` to be a column of the train table \(x, colour, y\), but got 'target'"):
        TableDataModule(path=str(tmp_path / "train.csv"), label="target")
    with pytest.raises(FileNotFoundError, match=r"`path` to be an existing .csv or .parquet file, but got '/no.csv'"):
        TableDataModule(path="/no.csv", label="y")


def test_a_test_fraction_of_zero_is_refused(tmp_path: Path) -> None:
    make_table(50, seed=1).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(ValueError, match=r"`test_fraction`.*0\.0"):
        TableDataModule(path=str(tmp_path / "train.csv"), label="label", test_fraction=0.0)


def test_checkpoint_state_holds_the_encoding_and_refuses_another_table(tmp_path: Path) -> None:
    train = make_table(200, seed=1)
    for split, table in (("train", train), ("val", make_table(40, seed=2)), ("test", make_table(60, seed=3))):
        table.to_csv(tmp_path / f"{split}.csv", index=False)

    def module(path: Path, **kwargs: str) -> TableDataModule:
        return TableDataModule(path=str(path), label="label", val_path=str(tmp_path / "val.csv"),
                               test_path=str(tmp_path / "test.csv"), **kwargs)

    torch.save(module(tmp_path / "train.csv").state_dict(), tmp_path / "state.pt")
    saved = torch.load(tmp_path / "state.pt", weights_only=True)  # plain containers only
    numeric = train[["amount", "age"]]
    torch.testing.assert_close(saved["encoder"]["mean"], torch.tensor(numeric.mean().to_numpy()))
    torch.testing.assert_close(saved["encoder"]["std"], torch.tensor(numeric.std(ddof=0).to_numpy()))
    assert saved["encoder"]["categories"] == {"country": ["de", "fr", "it"]}
    assert saved["label_names"] == ["fraud", "ok", "review"]
    module(tmp_path / "train.csv").load_state_dict(saved)  # the same table: accepted

    with pytest.raises(ValueError, match=r"`path` to be the table"):  # the same file, coded otherwise
        module(tmp_path / "train.csv", categorical="ordinal").load_state_dict(saved)

    others = {
        "shifted.csv": make_table(200, seed=1, shift=1.0),  # the same columns, other statistics
        "new_country.csv": train.replace({"country": {"it": "es"}}),  # other one-hot columns
        "renamed.csv": train.replace({"label": {"review": "manual"}}),  # other class names (last: it renames val, test)
    }
    for name, table in others.items():
        table.to_csv(tmp_path / name, index=False)
        if name == "renamed.csv":
            for split in ("val", "test"):
                make_table(60, seed=3).replace({"label": {"review": "manual"}}).to_csv(tmp_path / f"{split}.csv",
                                                                                        index=False)
        with pytest.raises(ValueError, match=rf"`path` to be the table .* trained with.*{name}"):
            module(tmp_path / name).load_state_dict(saved)


def test_train_py_refuses_to_resume_on_another_table(tmp_path: Path) -> None:
    make_table(300, seed=0).to_csv(tmp_path / "rows.csv", index=False)
    make_table(300, seed=0, shift=3.0).to_csv(tmp_path / "shifted.csv", index=False)
    common = ("data=csv", "data.label=label", "logger=none", "trainer.enable_progress_bar=false")
    first = run_train_py(*common, f"data.path={tmp_path / 'rows.csv'}", "trainer.max_epochs=1", run_dir=tmp_path / "a")
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert "TableDataModule" in torch.load(checkpoint, weights_only=True)  # Lightning saved the encoding
    resumed = run_train_py(*common, f"data.path={tmp_path / 'shifted.csv'}", "trainer.max_epochs=2",
                           f"ckpt_path={checkpoint}", run_dir=tmp_path / "b")
    assert resumed.returncode == 2  # bad input, as every refused config value
    assert "Expected argument `path` to be the table" in resumed.stderr and "shifted.csv" in resumed.stderr


def test_a_missing_feature_column_is_refused_by_the_key_of_its_table(tmp_path: Path) -> None:
    make_table(200, seed=1).to_csv(tmp_path / "train.csv", index=False)
    make_table(40, seed=2).drop(columns=["age"]).to_csv(tmp_path / "val.csv", index=False)
    with pytest.raises(ValueError, match=r"`val_path` to be a table with the training table's feature columns "
                                         r"\(missing: age\)"):
        TableDataModule(path=str(tmp_path / "train.csv"), label="label", val_path=str(tmp_path / "val.csv"))
    with pytest.raises(ValueError, match=r"`features` to be columns of the train table other than the label "
                                         r"\(amount, age, country, label\), but got 'height'"):
        TableDataModule(path=str(tmp_path / "train.csv"), label="label", features=["amount", "height"])
    with pytest.raises(ValueError, match=r"`features`.*but got 'label'"):
        TableDataModule(path=str(tmp_path / "train.csv"), label="label", features=["amount", "label"])


def test_an_identifier_column_is_refused_for_one_hot_coding_by_name(tmp_path: Path) -> None:
    table = make_table(200, seed=1).assign(customer=[f"c{i}" for i in range(200)])  # one category per row
    table.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(ValueError, match=r"`features` to be columns with at most max_categories=100 categories.*"
                                         r"but got 'customer \(144 categories\)'"):
        TableDataModule(path=str(tmp_path / "train.csv"), label="label", max_categories=100)
    wide = TableDataModule(path=str(tmp_path / "train.csv"), label="label", max_categories=None)
    assert wide.num_features == 2 + 3 + 144  # 200 rows - 20% test - 10% validation: 144 training customers
    kept = TableDataModule(path=str(tmp_path / "train.csv"), label="label", max_categories=100,
                           features=["amount", "age", "country"])
    assert kept.num_features == 5
    ordinal = TableDataModule(path=str(tmp_path / "train.csv"), label="label", max_categories=100,
                              categorical="ordinal")
    assert ordinal.num_features == 4  # one integer code per column: nothing to refuse
    with pytest.raises(ValueError, match=r"`max_categories` to be a positive integer, but got 0"):
        TableDataModule(path=str(tmp_path / "train.csv"), label="label", max_categories=0)


def test_an_infinite_number_is_refused_not_clipped_to_float32s_largest(tmp_path: Path) -> None:
    make_table(200, seed=1).to_csv(tmp_path / "train.csv", index=False)
    test = make_table(60, seed=3)
    test.loc[4, "amount"] = np.inf
    test.to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(ValueError, match=r"`x_test` to be finite features, but got 'an array with NaN or inf'"):
        TableDataModule(path=str(tmp_path / "train.csv"), label="label", test_path=str(tmp_path / "test.csv"))
    test.loc[4, "amount"] = np.nan  # missing: the training mean, 0 once scaled
    test.to_csv(tmp_path / "test.csv", index=False)
    module = TableDataModule(path=str(tmp_path / "train.csv"), label="label", test_path=str(tmp_path / "test.csv"))
    assert module.splits["test"].x[4, 0].item() == 0.0
