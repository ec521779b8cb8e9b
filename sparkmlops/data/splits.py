"""The data of a training run: read once, checked for training, split as every training entry point splits it, and logged as the run's inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sparkmlops.core import model_registry, tracking
from sparkmlops.core.errors import UserInputError
from sparkmlops.data import digests as data_digests
from sparkmlops.data import generators, validation
from sparkmlops.data import schema as data_schema

MIN_TRAIN_ROWS = 10


def check_training_inputs(label_col: str, train_fraction: float, data_path: str, register_as: str = "") -> None:
    """The checks every training entry point makes on its label, split, data path and registered name."""
    if not label_col:
        raise UserInputError("label_col is empty: pass -P label_col=<numeric column>, e.g. price.")
    check_train_fraction(train_fraction)
    if register_as:
        model_registry.check_model_name(register_as)
    if data_path:
        validation.check_input_path(data_path)


def check_train_fraction(train_fraction: float) -> None:
    if not 0.0 < train_fraction < 1.0:
        raise UserInputError(f"train_fraction must be strictly between 0 and 1 (the rest is the test "
                             f"split), got {train_fraction}.")


def check_against_data(profile: dict, spec: data_schema.FeatureSpec) -> None:
    """Checks that need one pass over the data; Spark would fail cryptically later otherwise."""
    if not profile["rows"]:
        raise UserInputError("the data has no rows: check the path and the job that wrote it.")
    message = validation.describe_value_problems(
        {"nulls": profile["numeric_nulls"], "non_finite": profile["non_finite"]}, "the data")
    if message:
        raise UserInputError(message)
    if profile["all_null_strings"]:
        raise UserInputError(f"feature column(s) {', '.join(profile['all_null_strings'])} are null in every row: "
                             "fix the data or drop the column.")
    if profile["non_finite_labels"]:
        raise UserInputError(f"label '{spec.label_col}' has NaN or infinite values in {profile['non_finite_labels']} "
                             "rows: fix or drop those rows.")
    usable = profile["rows"] - profile["null_labels"]
    if usable < MIN_TRAIN_ROWS:
        raise UserInputError(f"only {usable} rows with a non-null '{spec.label_col}': need at least "
                             f"{MIN_TRAIN_ROWS} to split into train and test.")


@dataclass
class PreparedData:
    """The data of one training or tuning run, read once, checked, split and cached."""

    data_path: str
    spec: data_schema.FeatureSpec
    profile: dict
    train_df: object
    test_df: object
    train_rows: int
    test_rows: int
    digests: dict[str, str]
    cached: object
    datasets: dict = field(default_factory=dict)  # "train"/"test" -> the MLflow dataset logged as an input

    def unpersist(self) -> None:
        for frame in (self.test_df, self.train_df, self.cached):
            frame.unpersist()


@dataclass
class LabelledData:
    """A dataset read, checked and ready to split: rows with a null label are dropped."""

    spec: data_schema.FeatureSpec
    profile: dict
    df: object  # the rows used (labelled, label cast to double)
    cached: object  # what to unpersist
    content: data_digests.ContentDigest  # of ``df``: its row-hash sums, from which split digests derive
    digest: str = ""  # content.hex: the run's data_digest tag

    def __post_init__(self):
        self.digest = self.digest or self.content.hex


def load_labelled(spark, data_path: str, label_col: str) -> LabelledData:
    """Read ``data_path``, check it for training or evaluation and cache it; one Spark pass."""
    from pyspark.sql import functions as F

    raw = validation.read_dataset(spark, data_path)
    spec = data_schema.infer_feature_spec(raw, label_col)
    cached = raw.withColumn(label_col, F.col(label_col).cast("double")).cache()
    profile = validation.profile_for_training(cached, spec)
    check_against_data(profile, spec)
    if profile["null_labels"]:
        df = cached.filter(F.col(label_col).isNotNull())
        return LabelledData(spec, profile, df, cached, data_digests.compute(df))
    return LabelledData(spec, profile, cached, cached, profile["digest"])


def split_train_test(df, train_fraction: float, seed: int):
    """The split every training entry point uses (and promote rebuilds to find held-out rows)."""
    return df.randomSplit([train_fraction, 1.0 - train_fraction], seed=seed)


def prepare_data(spark, data_path: str, label_col: str, train_fraction: float, seed: int) -> PreparedData:
    """Resolve (or generate) the data, check it, split it as train does, and log it as the run's inputs."""
    if data_path:
        data_path, source_note = validation.check_input_path(data_path), "user"
    else:
        data_path = generators.ensure_default_data(spark)
        source_note = (f"generated (sparkmlops generator v{generators.GENERATOR_VERSION}, "
                       f"n_rows={generators.DEFAULT_N_ROWS}, seed={generators.DEFAULT_SEED})")
    tracking.log_params({"data_path_resolved": data_path})
    tracking.set_tags({"data_source": source_note})

    data = load_labelled(spark, data_path, label_col)
    spec, profile = data.spec, data.profile
    tracking.log_params({"n_categorical_features": len(spec.categorical_cols),
                         "n_numeric_features": len(spec.numeric_cols)})
    if spec.ignored_cols:
        tracking.set_tags({"ignored_columns": ", ".join(spec.ignored_cols)})

    train_df, test_df = split_train_test(data.df, train_fraction, seed)
    train_df, test_df = train_df.cache(), test_df.cache()
    # One pass over the train split; the test split's digest is the whole's minus train's (no pass).
    train_content = data_digests.compute(train_df)
    test_content = data.content.minus(train_content)
    train_digest, train_rows, test_digest, test_rows = (train_content.hex, train_content.rows, test_content.hex,
                                                        test_content.rows)
    digests = {"full": data.digest, "train": train_digest, "test": test_digest}
    datasets = {"train": tracking.log_spark_dataset(train_df, data_path, "train", "training", train_digest, label_col,
                                                    train_rows),
                "test": tracking.log_spark_dataset(test_df, data_path, "test", "testing", test_digest, label_col,
                                                   test_rows)}
    tracking.set_tags({"data_digest": digests["full"]})
    tracking.log_metrics({"rows_null_label_dropped": profile["null_labels"], "train_rows": train_rows,
                          "test_rows": test_rows})
    return PreparedData(data_path, spec, profile, train_df, test_df, train_rows, test_rows, digests, data.cached,
                        datasets)
