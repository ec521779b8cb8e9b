"""What a fitted Spark pipeline, read from its saved files (no JVM), asks of its ONNX graph: each stage checked
and collected into a ``PipelinePlan`` (sparkmlops.serve.onnx_convert builds the graph from it). A stage, or a
parameter, that the graph cannot honour is refused with one line naming it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np

from sparkmlops.core.errors import UserInputError
from sparkmlops.data.schema import INTEGER_TYPES
from sparkmlops.serve.saved_pipeline import (
    CLASSIFIER_MODELS,
    TREE_MODELS,
    Stage,
    TreeEnsembleSpec,
    _read_parquet,
    read_tree_ensemble,
)

CAST_STATEMENT = re.compile(
    r"^\s*SELECT\s+\*\s*,\s*CAST\(\s*(\w+)\s+AS\s+(\w+)\s*\)\s+AS\s+(\w+)\s+FROM\s+__THIS__\s*$", re.IGNORECASE
)
EXPM1_STATEMENT = re.compile(
    r"^\s*SELECT\s+\*\s*,\s*expm1\(\s*(\w+)\s*\)\s+AS\s+(\w+)\s+FROM\s+__THIS__\s*$", re.IGNORECASE
)
INDICATOR = re.compile(r"CAST\(\(`([^`]+)` IS NULL OR isnan\(`\1`\)\) AS DOUBLE\) AS `([^`]+)`")
NULL_CATEGORY = re.compile(r"COALESCE\(`([^`]+)`, '([\w-]+)'\) AS `([^`]+)`")
SUPPORTED_STAGES = (
    "SQLTransformer (train's missing-value indicators and null categories)",
    "ImputerModel",
    "StringIndexerModel",
    "VectorAssembler",
    "RandomForestRegressionModel",
    "GBTRegressionModel",
    "DecisionTreeRegressionModel",
    "SparkXGBRegressorModel (reg:squarederror)",
    "SQLTransformer (expm1 of the prediction)",
    "RandomForestClassificationModel",
    "GBTClassificationModel (two classes)",
    "DecisionTreeClassificationModel",
    "IndexToString + SQLTransformer (CAST of the class to the label's type)",
)


@dataclass
class PipelinePlan:
    string_columns: dict[str, tuple[str, list[str], str]]  # input -> (output col, labels, handleInvalid)
    assembler_inputs: list[str]
    features_col: str
    trees: TreeEnsembleSpec
    tree_prediction_col: str
    expm1: tuple[str, str] | None = None  # (input col, output col)
    numeric_inputs: list[str] = field(default_factory=list)  # raw numeric columns the graph takes
    imputed: dict[str, tuple[str, float]] = field(default_factory=dict)  # output -> (raw column, surrogate)
    indicators: dict[str, str] = field(default_factory=dict)  # indicator column -> the raw column it flags
    null_labels: dict[str, str] = field(default_factory=dict)  # string column -> the category a null is
    classes: list | None = None  # a classifier's classes in the label's own values and index order
    label_type: str = ""  # Spark's type of the label (and so of a classifier's prediction)

    @property
    def is_classifier(self) -> bool:
        return self.classes is not None

    @property
    def input_columns(self) -> list[tuple[str, str]]:
        """(column, 'string' | 'double') the graph takes, strings first then numerics (assembler order)."""
        return [(c, "string") for c in self.string_columns] + [(c, "double") for c in self.numeric_inputs]


def _prepared_columns(stage: Stage) -> tuple[dict[str, str], dict[str, tuple[str, str]]] | None:
    """What train's first SQLTransformer makes: (indicator column -> the raw column it flags, null-as-category
    column -> (raw string column, the category nulls become)), or None when the statement is something else."""
    statement = stage.param("statement", "").strip()
    body = re.fullmatch(r"SELECT \*, (.*) FROM __THIS__", statement, re.DOTALL)
    if not body:
        return None
    flagged = INDICATOR.findall(body.group(1))
    coalesced = NULL_CATEGORY.findall(body.group(1))
    rebuilt = [f"CAST((`{c}` IS NULL OR isnan(`{c}`)) AS DOUBLE) AS `{out}`" for c, out in flagged]
    rebuilt += [f"COALESCE(`{c}`, '{label}') AS `{out}`" for c, label, out in coalesced]
    if not rebuilt or ", ".join(rebuilt) != body.group(1):
        return None
    return {out: c for c, out in flagged}, {out: (c, label) for c, label, out in coalesced}


def _column_pairs(stage: Stage) -> list[tuple[str, str]]:
    """(input, output) columns of a stage that takes inputCols/outputCols or inputCol/outputCol."""
    inputs = stage.param("inputCols") or [stage.param("inputCol")]
    outputs = stage.param("outputCols") or [stage.param("outputCol")]
    return list(zip(inputs, outputs))


def plan_pipeline(stages: list[Stage], integer_columns: tuple[str, ...] = ()) -> PipelinePlan:
    """Check every stage is supported and collect what the graph needs; refuse anything else. ``integer_columns``:
    the model's integer inputs (from its signature), whose imputed value Spark truncates."""
    string_columns, assembler, trees, tree_stage, expm1 = {}, None, None, None, None
    imputed, indicators, class_labels, classes, label_type = {}, {}, None, None, ""
    null_categories, null_labels = {}, {}
    for stage in stages:
        name = stage.short_class
        if name == "ImputerModel":
            missing_value = float(stage.param("missingValue", "NaN"))  # Spark writes NaN as the string "NaN"
            if missing_value == missing_value:
                raise UserInputError(
                    f"stage {stage.index} ImputerModel imputes the number {missing_value}: the export supports "
                    "only missingValue=NaN (nulls and NaN), the default."
                )
            surrogates = _read_parquet(os.path.join(stage.path, "data"))[0]
            for column, output in _column_pairs(stage):
                value = float(surrogates[column])
                imputed[output] = (column, float(np.trunc(value)) if column in integer_columns else value)
            continue
        prepared = _prepared_columns(stage) if name == "SQLTransformer" and trees is None else None
        if prepared is not None:
            flagged, coalesced = prepared
            indicators.update(flagged)
            null_categories.update(coalesced)
            continue
        if name == "StringIndexerModel":
            handle = stage.param("handleInvalid", "error")
            if handle not in ("keep", "error"):
                raise UserInputError(
                    f"stage {stage.index} StringIndexerModel has handleInvalid='{handle}': the export "
                    "supports 'keep' and 'error' (Spark drops rows with 'skip', a graph cannot)."
                )
            labels = _read_parquet(os.path.join(stage.path, "data"))[0]
            labels_array = labels.get("labelsArray") or [labels.get("labels")]
            for (column, output), column_labels in zip(_column_pairs(stage), labels_array):
                if column in null_categories:  # indexed from COALESCE(raw, label): the graph takes the raw column
                    column, null_label = null_categories[column]
                    null_labels[column] = null_label
                string_columns[column] = (output, list(column_labels), handle)
        elif name == "VectorAssembler":
            if assembler is not None:
                raise UserInputError(f"stage {stage.index}: a second VectorAssembler is not supported by the export.")
            assembler = stage
        elif stage.cls in TREE_MODELS or stage.cls in CLASSIFIER_MODELS:
            if trees is not None:
                raise UserInputError(f"stage {stage.index}: a second tree model is not supported by the export.")
            if stage.cls in CLASSIFIER_MODELS:
                _check_classifier(stage)
            trees, tree_stage = read_tree_ensemble(stage), stage
        elif name == "IndexToString" and tree_stage is not None and tree_stage.cls in CLASSIFIER_MODELS:
            if stage.param("inputCol") != tree_stage.param("predictionCol", "prediction") or class_labels is not None:
                raise UserInputError(f"stage {stage.index} IndexToString does not read the classifier's prediction.")
            class_labels = (list(stage.param("labels") or []), stage.param("outputCol"))
        elif name == "SQLTransformer" and class_labels is not None and classes is None:
            match = CAST_STATEMENT.match(stage.param("statement", ""))
            if not match or match.group(1) != class_labels[1] or match.group(3) != "prediction":
                raise UserInputError(
                    f"stage {stage.index} SQLTransformer '{stage.param('statement', '')}' is not supported: after "
                    "IndexToString the export handles only 'SELECT *, CAST(<label> AS <type>) AS prediction FROM "
                    "__THIS__'."
                )
            label_type = match.group(2).lower()
            classes = _cast_classes(class_labels[0], label_type)
        elif name == "SQLTransformer":
            match = EXPM1_STATEMENT.match(stage.param("statement", ""))
            if not match or tree_stage is None or match.group(1) != tree_stage.param("predictionCol", "prediction"):
                raise UserInputError(
                    f"stage {stage.index} SQLTransformer '{stage.param('statement', '')}' is not "
                    "supported: the export handles only 'SELECT *, expm1(<prediction>) AS prediction "
                    "FROM __THIS__' after the tree model."
                )
            expm1 = (match.group(1), match.group(2))
        else:
            raise UserInputError(
                f"stage {stage.index} ({name}) is not supported by the ONNX export: supported stages "
                f"are {', '.join(SUPPORTED_STAGES)}."
            )
    if assembler is None or trees is None:
        raise UserInputError(
            "the pipeline needs a VectorAssembler and a tree model (RandomForest, GBT or "
            "DecisionTree regressor or classifier) to be exported."
        )
    features_col = assembler.param("outputCol")
    if tree_stage.param("featuresCol", "features") != features_col:
        raise UserInputError(
            f"the tree model reads '{tree_stage.param('featuresCol')}' but the assembler writes "
            f"'{features_col}': the export needs the assembler's output as the model's features."
        )
    handle = assembler.param("handleInvalid", "error")
    if handle != "error":
        raise UserInputError(f"VectorAssembler handleInvalid='{handle}' is not supported by the export (only 'error').")
    indexed = {output: column for column, (output, _, _) in string_columns.items()}
    raw = [imputed[c][0] if c in imputed else c for c in assembler.param("inputCols") if c not in indexed]
    numeric = list(dict.fromkeys(c for c in raw if c not in indicators))
    unknown = sorted(set(indicators.values()) - set(numeric))
    if unknown:
        raise UserInputError(f"the pipeline flags missing values of {', '.join(unknown)}, which it does not assemble.")
    if trees.num_features not in (-1, len(assembler.param("inputCols"))):
        raise UserInputError("the tree model's feature count does not match the assembler's inputs.")
    prediction_col = tree_stage.param("predictionCol", "prediction")
    missing = tree_stage.param("missing", float("nan"))
    if trees.kind == "xgboost" and missing is not None and missing == missing:  # a number, not NaN
        raise UserInputError(
            "the XGBoost model treats a number (missing=...) as missing: the export supports "
            "only missing=NaN, the default."
        )
    if tree_stage.cls in CLASSIFIER_MODELS:
        if classes is None:
            raise UserInputError(
                "the classifier's class index is not mapped back to the label (IndexToString and a CAST): export "
                "classifiers logged by train."
            )
        num_classes = 2 if trees.kind == "gbt" else int(tree_stage.params.get("numClasses", len(classes)))
        if num_classes != len(classes):
            raise UserInputError(f"the classifier has {num_classes} classes but its labels are {classes}.")
    final = "prediction" if classes is not None else expm1[1] if expm1 else prediction_col
    if final != "prediction":
        raise UserInputError(f"the pipeline's output column is '{final}', not 'prediction'.")
    return PipelinePlan(
        string_columns,
        list(assembler.param("inputCols")),
        features_col,
        trees,
        prediction_col,
        expm1,
        numeric,
        imputed,
        indicators,
        null_labels,
        classes,
        label_type,
    )


def _check_classifier(stage: Stage) -> None:
    if stage.param("thresholds") is not None:
        raise UserInputError(f"stage {stage.index} {stage.short_class} sets thresholds: not supported by the export.")
    if stage.short_class == "GBTClassificationModel" and stage.param("lossType", "logistic") != "logistic":
        raise UserInputError(f"stage {stage.index} GBTClassificationModel: the export supports lossType=logistic.")


def _cast_classes(labels: list[str], label_type: str) -> list:
    """The classes as Spark's CAST of IndexToString's strings gives them: str, bool or int."""
    if label_type == "string":
        return list(labels)
    if label_type == "boolean" and set(labels) <= {"true", "false"}:
        return [label == "true" for label in labels]
    if label_type in INTEGER_TYPES:
        return [int(label) for label in labels]
    raise UserInputError(f"a classifier of a {label_type} label is not supported by the export.")
