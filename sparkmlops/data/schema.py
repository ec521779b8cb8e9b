"""The data contract: the SF Airbnb and IoT schemas, and which columns of a frame feed a model.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparkmlops.core.errors import UserInputError

DEFAULT_LABEL = "price"


IOT_LABEL = "power"


IOT_GROUP_COL = "device_id"


IOT_COLUMNS: list[tuple[str, str]] = [
    ("device_id", "string"), ("reading_time", "timestamp"), ("temperature", "double"), ("humidity", "double"),
    ("pressure", "double"), ("vibration", "double"), ("power", "double"),
]


# (name, Spark type, nullable) of sf-airbnb-clean.parquet, in its order.
_NA_FLAGS = ["bedrooms_na", "bathrooms_na", "beds_na", "review_scores_rating_na",
             "review_scores_accuracy_na", "review_scores_cleanliness_na", "review_scores_checkin_na",
             "review_scores_communication_na", "review_scores_location_na", "review_scores_value_na"]


AIRBNB_COLUMNS: list[tuple[str, str, bool]] = [
    ("host_is_superhost", "string", True),
    ("cancellation_policy", "string", True),
    ("instant_bookable", "string", True),
    ("host_total_listings_count", "double", True),
    ("neighbourhood_cleansed", "string", True),
    ("latitude", "double", True),
    ("longitude", "double", True),
    ("property_type", "string", True),
    ("room_type", "string", True),
    ("accommodates", "double", True),
    ("bathrooms", "double", True),
    ("bedrooms", "double", True),
    ("beds", "double", True),
    ("bed_type", "string", True),
    ("minimum_nights", "double", True),
    ("number_of_reviews", "double", True),
    ("review_scores_rating", "double", True),
    ("review_scores_accuracy", "double", True),
    ("review_scores_cleanliness", "double", True),
    ("review_scores_checkin", "double", True),
    ("review_scores_communication", "double", True),
    ("review_scores_location", "double", True),
    ("review_scores_value", "double", True),
    ("price", "double", True),
] + [(name, "double", False) for name in _NA_FLAGS]


NUMERIC_TYPES = ("double", "float", "int", "bigint", "smallint", "tinyint")


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns feed the model: strings are indexed, numerics assembled as they are."""

    label_col: str
    categorical_cols: list[str]
    numeric_cols: list[str]
    ignored_cols: list[str]

    @property
    def feature_cols(self) -> list[str]:
        return self.categorical_cols + self.numeric_cols


def infer_feature_spec(df, label_col: str) -> FeatureSpec:
    """Check the label and find the features from the schema alone (no Spark job)."""
    dtypes = dict(df.dtypes)
    if label_col not in dtypes:
        raise UserInputError(f"label column '{label_col}' is not in the data (columns: "
                             f"{', '.join(list(dtypes)[:40])}): pass -P label_col=<numeric column>.")
    if not (dtypes[label_col] in NUMERIC_TYPES or dtypes[label_col].startswith("decimal")):
        raise UserInputError(f"label column '{label_col}' is {dtypes[label_col]}, not numeric: "
                             "pass -P label_col=<numeric column> or cast it in the data.")
    categorical = [c for c, t in df.dtypes if t == "string" and c != label_col]
    numeric = [c for c, t in df.dtypes if c != label_col and (t in NUMERIC_TYPES or t.startswith("decimal"))]
    ignored = [c for c, _ in df.dtypes if c != label_col and c not in categorical and c not in numeric]
    check_known_column_types(dtypes)
    if not categorical and not numeric:
        raise UserInputError(f"no feature columns: besides the label '{label_col}' the data needs string or "
                             f"numeric columns (ignored: {', '.join(ignored) or 'none'}).")
    return FeatureSpec(label_col, categorical, numeric, ignored)


def _is_numeric(spark_type: str) -> bool:
    return spark_type in NUMERIC_TYPES or spark_type.startswith("decimal")


def check_known_column_types(dtypes: dict[str, str]) -> None:
    """Columns named as in the SF Airbnb or IoT schema must have its kind (number or string): a number
    stored as text would silently become a category, a category stored as a number a measurement."""
    expected = {name: kind for name, kind, *_ in AIRBNB_COLUMNS + IOT_COLUMNS}
    wrong = [f"{c} is {t}, expected {expected[c]}" for c, t in dtypes.items() if c in expected
             and expected[c] in ("double", "string") and _is_numeric(t) != (expected[c] == "double")]
    if wrong:
        raise UserInputError(f"columns of the wrong type: {'; '.join(wrong[:5])}: cast them in the data "
                             "(the SF Airbnb schema, see docs/bad-input.md).")
