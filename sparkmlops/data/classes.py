"""A classifier's classes: counted in one pass, checked, put in a fixed order, logged.

The order is the label's natural order (numbers ascending, false before true, strings by code point): class
``i`` of the model is ``spec.classes[i]``, and ``probability[i]`` is its probability, in every scorer.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from sparkmlops.core import tracking
from sparkmlops.core.errors import UserInputError
from sparkmlops.data.schema import FeatureSpec

MAX_CLASSES = 100
IMBALANCE_WARNING_SHARE = 0.99


def with_classes(df, spec: FeatureSpec, profile: dict) -> FeatureSpec:
    """``spec`` with its classes (the label's distinct non-null values, sorted); the counts go to
    ``profile["class_counts"]``. Refuses a label with one class or more than MAX_CLASSES."""
    from pyspark.sql import functions as F

    rows = (
        df.filter(F.col(spec.label_col).isNotNull())
        .groupBy(spec.label_col)
        .count()
        .limit(MAX_CLASSES + 1)
        .collect()
    )
    counts = {row[0]: row[1] for row in rows}
    if len(counts) > MAX_CLASSES:
        raise UserInputError(
            f"label '{spec.label_col}' has more than {MAX_CLASSES} distinct values: that is not a set of classes; "
            "pass -P task=regression for a numeric target, or group the classes in the data."
        )
    if len(counts) < 2:
        only = next(iter(counts), None)
        raise UserInputError(
            f"label '{spec.label_col}' has {'only the class ' + repr(only) if counts else 'no values'}: a classifier "
            "needs at least two classes in the training data."
        )
    ordered = tuple(sorted(counts))
    profile["class_counts"] = {label: counts[label] for label in ordered}
    return replace(spec, classes=ordered)


def log_and_warn(spec: FeatureSpec, profile: dict) -> None:
    """Log the classes and their counts; say on stderr when one class is nearly all the data."""
    counts = profile["class_counts"]
    tracking.log_params({"n_classes": len(spec.classes)})
    tracking.set_tags({"classes": json.dumps([_jsonable(c) for c in spec.classes])})
    tracking.log_dict({str(label): n for label, n in counts.items()}, "class_counts.json")
    total = sum(counts.values())
    majority = max(counts, key=counts.get)
    if counts[majority] / total >= IMBALANCE_WARNING_SHARE:
        print(
            f"warning: {counts[majority] / total:.1%} of '{spec.label_col}' is {majority!r}: accuracy says little "
            "here; judge the model by roc_auc, pr_auc or f1.",
            file=sys.stderr,
            flush=True,
        )


def _jsonable(value):
    return value.item() if hasattr(value, "item") else value


def class_scores(model, rows, classes=None):
    """A fitted scikit-learn classifier's probabilities for ``rows``, one column per class of ``classes``
    (default: the model's own) in that order: a class the model never saw in training gets 0."""
    import numpy as np

    probability = model.predict_proba(rows)
    learnt = list(model.classes_)
    if classes is None or list(classes) == learnt:
        return probability
    aligned = np.zeros((len(probability), len(classes)))
    for i, label in enumerate(classes):
        if label in learnt:
            aligned[:, i] = probability[:, learnt.index(label)]
    return aligned
