"""The scikit-learn model's parts that need no Spark: imputation and indicators, classes a model never saw,
tune_grid's folds and fold scores (docs/your-data.md#the-scikit-learn-trainers)."""

import numpy as np
import pandas as pd
import pytest

from sparkmlops.data.classes import class_scores
from sparkmlops.data.schema import FeatureSpec
from sparkmlops.fitting.metrics import array_classification_metrics
from sparkmlops.fitting.sklearn_forest import ForestEstimator, ForestParams, build_forest, encoded_feature_names
from sparkmlops.tune.tune_grid import cv_folds, fold_score

SPEC = FeatureSpec(
    "species",
    ["island"],
    ["mass"],
    [],
    task="classification",
    label_type="string",
    boolean_cols=["heavy"],
    missing_cols=("mass",),
    classes=("a", "b", "c"),
)


def _rows(n: int = 60):
    rng = np.random.default_rng(0)
    mass = rng.normal(10, 3, n)
    frame = pd.DataFrame(
        {
            "island": rng.choice(["x", "y", None], n),
            "mass": np.where(np.arange(n) % 7 == 0, np.nan, mass),
            "heavy": np.where(np.arange(n) % 5 == 0, np.nan, (mass > 10).astype(float)),
        }
    )
    return frame, np.where(mass > 12, "c", np.where(mass > 8, "b", "a"))


@pytest.mark.parametrize("impute, fill", [("median", np.nanmedian), ("mean", np.nanmean)])
def test_missing_numbers_are_imputed_with_an_indicator(impute, fill):
    frame, label = _rows()
    model = build_forest(SPEC, ForestParams(num_trees=3, impute=impute), seed=1).fit(frame, label)
    encoded = model.named_steps["encode"].transform(frame)
    assert encoded.shape[1] == len(encoded_feature_names(SPEC)) == 4  # island, mass, heavy, mass_na
    missing = frame["mass"].isna().to_numpy()
    np.testing.assert_allclose(encoded[missing, 1], fill(frame["mass"]))
    np.testing.assert_array_equal(encoded[:, 3], missing.astype(float))
    assert not np.isnan(encoded).any()
    # a null string is a category of its own, apart from the known ones and from an unseen one
    codes = dict(zip(frame["island"].fillna("<null>"), encoded[:, 0]))
    unseen = model.named_steps["encode"].transform(frame.head(1).assign(island="atlantis"))[0, 0]
    assert len({codes["x"], codes["y"], codes["<null>"], unseen}) == 4


def test_a_class_the_model_never_saw_gets_probability_zero():
    frame, label = _rows()
    seen = label != "b"
    model = build_forest(SPEC, ForestParams(num_trees=5), seed=1).fit(frame[seen], label[seen])
    assert list(model.classes_) == ["a", "c"]
    scores = class_scores(model, frame, SPEC.classes)
    assert scores.shape == (60, 3)
    np.testing.assert_array_equal(scores[:, 1], 0.0)
    np.testing.assert_allclose(scores[:, [0, 2]], model.predict_proba(frame))


def test_a_fold_without_a_class_is_scored_on_every_class():
    """A class absent from a validation fold (or from the fold's training rows) is not an error: the fold's
    log_loss is the run's own, on probabilities for every class."""
    frame, label = _rows()
    estimator = ForestEstimator(spec=SPEC, num_trees=5, seed=1).fit(frame, label)
    fold = label != "c"
    score = fold_score(SPEC, "log_loss", estimator, frame[fold], label[fold])
    expected = array_classification_metrics(label[fold], class_scores(estimator, frame[fold], SPEC.classes), "abc")
    assert score == pytest.approx(-expected["log_loss"]) and score < 0
    assert fold_score(SPEC, "accuracy", estimator, frame[fold], label[fold]) == pytest.approx(expected["accuracy"])


def test_a_classifiers_folds_each_hold_every_class():
    label = np.array(["a"] * 57 + ["b"] * 3)
    # seed 40: plain KFold would leave a fold without "b"
    for _, valid in cv_folds(SPEC, 3, seed=40).split(np.zeros((60, 1)), label):
        assert set(label[valid]) == {"a", "b"}
