"""The data of a training run: read once, checked for training, split as every training entry point splits it, and logged as the run's inputs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace

from sparkmlops.core import model_registry, tracking
from sparkmlops.core.errors import UserInputError
from sparkmlops.data import digests as data_digests
from sparkmlops.data import classes, generators, validation
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


def check_against_data(
    profile: dict, spec: data_schema.FeatureSpec, imputes_missing: bool = False, for_training: bool = True
) -> None:
    """Checks that need one pass over the data; Spark would fail cryptically later otherwise. With
    ``imputes_missing`` (train's pipeline) nulls and NaN in features are the pipeline's to impute; a feature
    missing in every row is refused only ``for_training`` (there is nothing to impute it from)."""
    if not profile["rows"]:
        raise UserInputError("the data has no rows: check the path and the job that wrote it.")
    if imputes_missing:
        message = validation.describe_infinities(profile["infinite"], "the data")
    else:
        message = validation.describe_value_problems(
            {"nulls": {**profile["numeric_nulls"], **profile["boolean_nulls"]}, "non_finite": profile["non_finite"]},
            "the data")
    if message:
        raise UserInputError(message)
    if profile["all_null_strings"]:
        raise UserInputError(f"feature column(s) {', '.join(profile['all_null_strings'])} are null in every row: "
                             "fix the data or drop the column.")
    if profile["all_missing"] and for_training:
        raise UserInputError(f"feature column(s) {', '.join(profile['all_missing'])} are null or NaN in every row: "
                             f"nothing to impute them from; pass -P exclude={','.join(profile['all_missing'])}.")
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
    df: object  # the rows used (labelled; a regression label cast to double)
    cached: object  # what to unpersist
    content: data_digests.ContentDigest  # of ``df``: its row-hash sums, from which split digests derive
    digest: str = ""  # content.hex: the run's data_digest tag

    def __post_init__(self):
        self.digest = self.digest or self.content.hex


def load_labelled(spark, data_path: str, label_col: str, choice: data_schema.ColumnChoice = data_schema.ColumnChoice(),
                  imputes_missing: bool = False, for_training: bool = True) -> LabelledData:
    """Read ``data_path``, check it for training or evaluation and cache it; one Spark pass (two for a
    classifier: its classes are counted)."""
    from pyspark.sql import functions as F

    raw = validation.read_dataset(spark, data_path)
    spec = data_schema.infer_feature_spec(raw, label_col, choice)
    if spec.is_classifier:
        cached = raw.cache()
    else:
        cached = raw.withColumn(label_col, F.col(label_col).cast("double")).cache()
    profile = validation.profile_for_training(cached, spec)
    check_against_data(profile, spec, imputes_missing, for_training)
    if imputes_missing:  # train's pipeline: numeric nulls imputed and flagged, a null string its own category
        spec = replace(
            spec,
            missing_cols=tuple(c for c in spec.numeric_cols if c in profile["missing"]),
            null_category_cols=tuple(c for c in spec.categorical_cols if c in profile["string_nulls"]),
        )
    if spec.is_classifier and for_training:  # evaluation data is judged by the model's own classes
        spec = classes.with_classes(cached, spec, profile)
    if profile["null_labels"]:
        df = cached.filter(F.col(label_col).isNotNull())
        return LabelledData(spec, profile, df, cached, data_digests.compute(df))
    return LabelledData(spec, profile, cached, cached, profile["digest"])


def split_train_test(df, train_fraction: float, seed: int):
    """The split every training entry point uses (and promote rebuilds to find held-out rows)."""
    return df.randomSplit([train_fraction, 1.0 - train_fraction], seed=seed)


def prepare_for_training(spark, params) -> PreparedData:
    """``prepare_data`` as every trainer calls it: from its parameters' data_path, label_col, train_fraction,
    seed and column_choice(), for a model that imputes missing values."""
    return prepare_data(spark, params.data_path, params.label_col, params.train_fraction, params.seed,
                        params.column_choice(), imputes_missing=True)


def prepare_data(spark, data_path: str, label_col: str, train_fraction: float, seed: int,
                 choice: data_schema.ColumnChoice = data_schema.ColumnChoice(),
                 imputes_missing: bool = False) -> PreparedData:
    """Resolve (or generate) the data, check it, split it as train does, and log it as the run's inputs."""
    if data_path:
        data_path, source_note = validation.check_input_path(data_path), "user"
    else:
        data_path = generators.ensure_default_data(spark)
        source_note = (f"generated (sparkmlops generator v{generators.GENERATOR_VERSION}, "
                       f"n_rows={generators.DEFAULT_N_ROWS}, seed={generators.DEFAULT_SEED})")
    tracking.log_params({"data_path_resolved": data_path})
    tracking.set_tags({"data_source": source_note})

    data = load_labelled(spark, data_path, label_col, choice, imputes_missing)
    spec, profile = data.spec, data.profile
    tracking.log_params({"resolved_task": spec.task, "n_categorical_features": len(spec.categorical_cols),
                         "n_numeric_features": len(spec.numeric_cols)})
    if spec.boolean_cols:
        tracking.log_params({"n_boolean_features": len(spec.boolean_cols)})
    if spec.ignored_cols:
        tracking.set_tags({"ignored_columns": ", ".join(spec.ignored_cols)})
    if spec.left_out:
        left_out = "; ".join(f"{c} ({why})" for c, why in spec.left_out.items())
        tracking.set_tags({"left_out_columns": left_out})
        print(f"note: {len(spec.left_out)} column(s) are not features: {left_out}", file=sys.stderr, flush=True)
    if profile["missing"] and imputes_missing:
        tracking.set_tags({"imputed_columns": ", ".join(sorted(profile["missing"]))})
    if spec.is_classifier:
        classes.log_and_warn(spec, profile)

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
