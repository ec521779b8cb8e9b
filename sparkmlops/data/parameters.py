"""The parameters several entry points share, declared once (core.entry_points.param): each call makes the
field of one entry point's parameter dataclass, with the same name, default and help everywhere."""

from __future__ import annotations

from dataclasses import dataclass

from sparkmlops.core.entry_points import param
from sparkmlops.data.schema import DEFAULT_LABEL, TASKS

IMPUTE = {"median": "the column's median", "mean": "its mean", "mode": "its most frequent value"}


def data_path(help: str = "Parquet (or .csv) file or folder; empty = generated data."):
    return param("", help)


def label_col():
    return param(DEFAULT_LABEL, "Column to predict: a number (regression) or classes (classification).")


def task():
    return param("auto", "{choices}.", choices=TASKS)


def features():
    return param("", "Comma list of feature columns; empty = every usable column but the excluded ones.")


def exclude():
    return param("", "Comma list of columns that are not features (ids, notes, leaks).")


def impute():
    return param("median", "How numeric nulls and NaN are filled inside the model: {choices}.", choices=IMPUTE)


def train_fraction():
    return param(0.8, "Share of rows for training; the rest is the test split.")


def register_as():
    return param("", "Registered model name: the logged model becomes its newest version; empty = do not register.")


def model_uri(help: str = "runs:/<id>/model, models:/<name>@<alias>, models:/<name>/<n>, or a path.", **kwargs):
    return param("", help, **{"required": True, **kwargs})


def input_path():
    return param("", "Parquet (or .csv) file or folder to score.", required=True)


def output_path(help: str = "Parquet folder to write."):
    return param("", help, required=True)


def output_mode():
    return param("error", "error (refuse an existing output) or overwrite.")


@dataclass(frozen=True)
class TrainingData:
    """Where a trainer's data comes from: the first parameter of every entry point that trains (a base of its
    parameter dataclass, listed last among the bases so that its field comes first)."""

    data_path: str = data_path()
