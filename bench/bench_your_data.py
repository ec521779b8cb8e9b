"""train's default model against scikit-learn's on real public tables, on the same split: quality and time.

For each (dataset, label): `train`'s job in-process (one SparkSession for all, a tracked run each, the same
code path as `python train.py`), then scikit-learn's random forest with the same settings (100 trees,
depth 5, seed 42; median imputation, categories as ordinal codes) fitted on the very rows of train's
training split and scored on its test split. Prints accuracy or rmse of both and the seconds of each (train:
the whole job, reading and logging included; scikit-learn: fit and predict on data already in pandas).

    python bench/bench_your_data.py [--trees 100] [--depth 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import REAL_DIR, ROOT, isolated_env  # noqa: E402


def datasets(folder: Path) -> list[tuple[str, str, str, str]]:
    """(name, path, label, task) of each table: written here from the packages that ship them."""
    from palmerpenguins import load_penguins
    from sklearn.datasets import load_breast_cancer

    penguins = folder / "penguins.parquet"
    load_penguins().to_parquet(penguins, index=False)
    cancer = load_breast_cancer(as_frame=True).frame
    cancer.columns = [c.replace(" ", "_") for c in cancer.columns]
    cancer_path = folder / "breast_cancer.parquet"
    cancer.to_parquet(cancer_path, index=False)
    weather = folder / "seattle_weather.parquet"
    from vega_datasets import local_data

    local_data.seattle_weather().to_parquet(
        weather, index=False, coerce_timestamps="us", allow_truncated_timestamps=True
    )
    mpg = ROOT / "tests" / "data" / "ggplot2_mpg" / "mpg.csv"
    found = [
        ("penguins (palmerpenguins)", str(penguins), "species", "auto"),
        ("Seattle weather (vega_datasets)", str(weather), "weather", "auto"),
        ("mpg (ggplot2, tests/data)", str(mpg), "class", "auto"),
        ("penguins (palmerpenguins)", str(penguins), "body_mass_g", "auto"),
        ("breast cancer (scikit-learn)", str(cancer_path), "target", "classification"),
    ]
    real = REAL_DIR / "sf-airbnb-clean.parquet"
    if real.exists():
        found.append(("SF Airbnb (../shared)", str(real), "price", "auto"))
    return found


def sklearn_baseline(train, test, label: str, classify: bool, trees: int, depth: int) -> tuple[float, float]:
    """(metric, seconds) of scikit-learn's forest on train's own split."""
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.metrics import accuracy_score, mean_squared_error
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder

    features = [c for c in train.columns if c != label]
    strings = [c for c in features if train[c].dtype == object]
    numbers = [c for c in features if c not in strings]
    prepare = ColumnTransformer(
        [
            ("numbers", SimpleImputer(strategy="median"), numbers),
            (
                "strings",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="(null)"),
                    OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                ),
                strings,
            ),
        ]
    )
    forest = (RandomForestClassifier if classify else RandomForestRegressor)(
        n_estimators=trees, max_depth=depth, random_state=42, n_jobs=-1
    )
    model = make_pipeline(prepare, forest)
    started = time.perf_counter()
    model.fit(train[features], train[label])
    predicted = model.predict(test[features])
    seconds = time.perf_counter() - started
    if classify:
        return accuracy_score(test[label], predicted), seconds
    return float(np.sqrt(mean_squared_error(test[label], predicted))), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--depth", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-your-data-"))
    os.environ.update({k: v for k, v in isolated_env(tmp).items() if k.startswith(("MLFLOW", "SPARKMLOPS"))})

    from sparkmlops.core import tracking
    from sparkmlops.core.spark import get_spark
    from sparkmlops.data import splits
    from sparkmlops.train.train import TrainParams, train_and_log

    spark = get_spark("bench-your-data")
    rows = []
    for name, path, label, task in datasets(tmp):
        exclude = "_c0" if path.endswith(".csv") else ""  # mpg's row numbers
        params = TrainParams(
            data_path=path, label_col=label, task=task, exclude=exclude, num_trees=args.trees, max_depth=args.depth
        ).validate()
        started = time.perf_counter()
        with tracking.tracked_run(f"bench {label}"):
            result = train_and_log(spark, params)
        train_seconds = time.perf_counter() - started
        classify = result.spec.is_classifier
        metric = "accuracy" if classify else "rmse"
        # the same split as train's: the labelled rows, split with its fraction and seed
        data = splits.load_labelled(spark, path, label, params.column_choice(), imputes_missing=True)
        train_rows, test_rows = splits.split_train_test(data.df, params.train_fraction, params.seed)
        columns = result.spec.feature_cols + [label]
        baseline, sklearn_seconds = sklearn_baseline(
            train_rows.select(*columns).toPandas(),
            test_rows.select(*columns).toPandas(),
            label,
            classify,
            args.trees,
            args.depth,
        )
        data.cached.unpersist()
        rows.append(
            (name, label, result.spec.task, metric, result.metrics[metric], baseline, train_seconds, sklearn_seconds)
        )

    print(f"{args.trees} trees, depth {args.depth}, seed 42; train's split (0.8/0.2, seed 42) for both")
    print("ratio = train / scikit-learn: above 1x is better for accuracy, below 1x for rmse")
    print("| dataset | label | task | metric | train (Spark) | scikit-learn | ratio | train s | scikit-learn s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, label, task, metric, ours, theirs, ours_s, theirs_s in rows:
        print(
            f"| {name} | {label} | {task} | {metric} | {ours:.3f} | {theirs:.3f} | {ours / theirs:.2f}x | "
            f"{ours_s:.1f} | {theirs_s:.2f} |"
        )
    spark.stop()


if __name__ == "__main__":
    main()
