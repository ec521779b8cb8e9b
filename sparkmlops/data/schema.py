"""The data contract: the SF Airbnb and IoT schemas, and which columns of a frame feed a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
INTEGER_TYPES = ("int", "bigint", "smallint", "tinyint")
TASKS = {
    "auto": "a string or boolean label is classification, a numeric one regression",
    "regression": "predict a number",
    "classification": "predict a class (string, boolean or integer label)",
}


@dataclass(frozen=True)
class ColumnChoice:
    """What the user chose about the columns: the task and which columns are features (empty = every usable
    column but the excluded ones)."""

    task: str = "regression"
    features: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    # train's pipeline classifies and takes booleans as 0/1; the other trainers fit regressions on numbers and
    # categories (booleans ignored, as before train took them)
    can_classify: bool = False


def chosen_columns(task: str, features: str, exclude: str) -> ColumnChoice:
    """The column choice of an entry point that classifies, from its -P task, features and exclude."""
    return ColumnChoice(task, column_list(features), column_list(exclude), can_classify=True)


def choice_of_run(parameters: dict[str, str]) -> ColumnChoice:
    """The column choice a run's logged parameters record (runs from before -P task were regressions)."""
    return ColumnChoice(
        parameters.get("task", "regression"),
        column_list(parameters.get("features", "")),
        column_list(parameters.get("exclude", "")),
        can_classify="task" in parameters,
    )


def column_list(value: str) -> tuple[str, ...]:
    """A comma-separated parameter (-P features=a,b,c) as a tuple of names."""
    return tuple(name.strip() for name in value.split(",") if name.strip())


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns feed the model: strings are indexed, numerics (and booleans, as 0/1) assembled; the
    label's task and type; the columns left out, each with its reason."""

    label_col: str
    categorical_cols: list[str]
    numeric_cols: list[str]
    ignored_cols: list[str]
    task: str = "regression"
    label_type: str = "double"
    boolean_cols: list[str] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)  # column -> why it is not a feature
    missing_cols: tuple[str, ...] = ()  # numeric features with nulls or NaN in the training data (imputed, flagged)
    null_category_cols: tuple[str, ...] = ()  # string features with nulls in the training data (null is a category)
    classes: tuple = ()  # a classifier's classes in the label's own values, in the model's order

    @property
    def feature_cols(self) -> list[str]:
        return self.categorical_cols + self.numeric_cols + self.boolean_cols

    @property
    def is_classifier(self) -> bool:
        return self.task == "classification"


def resolve_task(task: str, label_col: str, label_type: str, can_classify: bool = True) -> str:
    """The task for a label of ``label_type``: auto follows the type; a choice the type cannot carry is refused."""
    numeric = is_numeric(label_type)
    if not can_classify and not numeric:
        raise UserInputError(f"label column '{label_col}' is {label_type}, not numeric: this entry point fits "
                             "regressions only (train, train_sklearn and the tuners classify); pass -P "
                             "label_col=<numeric column> or cast it in the data.")
    if task == "auto":
        task = "regression" if numeric else "classification"
    if task == "regression" and not numeric:
        raise UserInputError(f"label column '{label_col}' is {label_type}, not numeric: regression needs a numeric "
                             "label; pass -P task=classification (or auto), or -P label_col=<numeric column>.")
    if task == "classification" and not (label_type in ("string", "boolean") or label_type in INTEGER_TYPES):
        raise UserInputError(f"label column '{label_col}' is {label_type}: classification needs a string, boolean or "
                             "integer label (a fractional number is a regression target); pass -P task=regression "
                             "or cast the label to classes.")
    return task


def infer_feature_spec(df, label_col: str, choice: ColumnChoice = ColumnChoice()) -> FeatureSpec:
    """Check the label and the column choice and find the features from the schema alone (no Spark job)."""
    dtypes = dict(df.dtypes)
    if label_col not in dtypes:
        raise UserInputError(f"label column '{label_col}' is not in the data (columns: "
                             f"{', '.join(list(dtypes)[:40])}): pass -P label_col=<column to predict>.")
    task = resolve_task(choice.task, label_col, dtypes[label_col], choice.can_classify)
    unknown = [c for c in (*choice.features, *choice.exclude) if c not in dtypes]
    if unknown:
        raise UserInputError(f"column(s) {', '.join(unknown)} named in features/exclude are not in the data "
                             f"(columns: {', '.join(list(dtypes)[:40])}).")
    both = [c for c in choice.features if c in choice.exclude]
    if both:
        raise UserInputError(f"column(s) {', '.join(both)} are both in features and in exclude: name each once.")
    if label_col in choice.features:
        raise UserInputError(f"features names the label '{label_col}': a model cannot use its own label.")
    candidates = list(choice.features) or [c for c in dtypes if c != label_col and c not in choice.exclude]
    categorical = [c for c in candidates if dtypes[c] == "string"]
    numeric = [c for c in candidates if is_numeric(dtypes[c])]
    boolean = [c for c in candidates if dtypes[c] == "boolean" and choice.can_classify]
    left_out = {c: f"{dtypes[c]} columns cannot be features" for c in candidates
                if c not in categorical + numeric + boolean}
    if choice.features and left_out:
        raise UserInputError(f"features names column(s) that cannot be features: "
                             f"{'; '.join(f'{c} ({why})' for c, why in left_out.items())}.")
    left_out.update({c: "excluded (-P exclude)" for c in choice.exclude})
    check_known_column_types(dtypes)
    if not categorical and not numeric and not boolean:
        raise UserInputError(f"no feature columns: besides the label '{label_col}' the data needs string, numeric or "
                             f"boolean columns (left out: {', '.join(left_out) or 'none'}).")
    ignored = [c for c in dtypes if c != label_col and c not in categorical + numeric + boolean]
    return FeatureSpec(label_col, categorical, numeric, ignored, task, dtypes[label_col], boolean, left_out)


def sql_column(name: str) -> str:
    """A column name as a Spark SQL identifier (backticks, any backtick in it doubled)."""
    return "`" + name.replace("`", "``") + "`"


def is_numeric(spark_type: str) -> bool:
    return spark_type in NUMERIC_TYPES or spark_type.startswith("decimal")


def check_known_column_types(dtypes: dict[str, str]) -> None:
    """Columns named as in the SF Airbnb or IoT schema must have its kind (number or string): a number
    stored as text would silently become a category, a category stored as a number a measurement."""
    expected = {name: kind for name, kind, *_ in AIRBNB_COLUMNS + IOT_COLUMNS}
    wrong = [f"{c} is {t}, expected {expected[c]}" for c, t in dtypes.items() if c in expected
             and expected[c] in ("double", "string") and is_numeric(t) != (expected[c] == "double")]
    if wrong:
        raise UserInputError(f"columns of the wrong type: {'; '.join(wrong[:5])}: cast them in the data "
                             "(the SF Airbnb schema, see docs/bad-input.md).")
