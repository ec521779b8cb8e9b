"""Convert a fitted Spark ML pipeline, read from its saved files (no JVM), into one ONNX graph.

Raw columns in, ``prediction`` out, computed as Spark computes it:

- SQLTransformer of train's missing-value indicators (``CAST((`c` IS NULL OR isnan(`c`)) AS DOUBLE) AS
  `c_na```): IsNaN of the raw column (a null arrives as NaN) as 0/1.
- ImputerModel (missingValue NaN): its output column is Where(IsNaN(x), surrogate, x), the surrogate
  truncated for an integer column as Spark casts it back to the column's type.
- StringIndexerModel (handleInvalid keep or error): ``ai.onnx.ml.LabelEncoder`` from each label to its
  index; a value not among the labels (unseen, or a null mapped to a sentinel by the caller) gets
  ``len(labels)``, Spark's "keep" bucket. Where train made null a category (``COALESCE(`c`, '__null__')`` in
  its first SQLTransformer, indexed instead of ``c``), the sentinel maps to that category's index.
- VectorAssembler: Concat of the indexed and numeric columns as doubles, in the assembler's order.
- RandomForestRegressionModel / GBTRegressionModel / DecisionTreeRegressionModel: one
  ``ai.onnx.ml.TreeEnsemble`` (opset 5) in double precision. Continuous splits are ``x <= threshold``
  (BRANCH_LEQ) with Spark's double thresholds; categorical splits are set membership of the left
  categories (BRANCH_MEMBER). NaN goes right, as in Spark. Forests average their trees; GBT sums
  tree weight x leaf value.
- SparkXGBRegressorModel (xgboost.spark, objective reg:squarederror): the booster's trees as a float32
  TreeEnsemble, as XGBoost predicts: features cast to float32, ``x < split`` (BRANCH_LT), NaN to the
  node's default side, base_score folded into the first tree's leaves so the float32 sums round alike.
- SQLTransformer ``SELECT *, expm1(<col>) AS prediction FROM __THIS__`` (train's log_label): expm1,
  with its Taylor series near 0 where exp(x) - 1 would lose digits.
- RandomForestClassificationModel / DecisionTreeClassificationModel: the TreeEnsemble gives each row's leaf in
  each tree; a Gather of the leaves' class counts (divided by the leaf's total for a forest) summed over the
  trees is Spark's rawPrediction, divided by its sum the ``probability``. GBTClassificationModel (binary): the
  margin m as for GBT regression, rawPrediction (-m, m), probability 1 / (1 + exp(2m)) and its complement.
  The class is the first largest rawPrediction (ArgMax, as Spark's argmax), then train's IndexToString and
  ``CAST(<label> AS <type>)``: a Gather from the classes in the label's own type (string, boolean, integer).

Which stages and parameters are supported is checked first (sparkmlops.serve.pipeline_plan): anything else is
refused with one line naming it.
"""

from __future__ import annotations

import numpy as np

from sparkmlops.core import mlflow_models
from sparkmlops.data.schema import INTEGER_TYPES
from sparkmlops.serve.pipeline_plan import PipelinePlan, plan_pipeline
from sparkmlops.serve.saved_pipeline import read_stages, spark_model_dir

ML_DOMAIN = "ai.onnx.ml"
ONNX_OPSET = 18
ML_OPSET = 5  # TreeEnsemble
NULL_SENTINEL = "\u0000sparkmlops-null\u0000"  # what the runtime feeds for a null string: never a label


def _tensor(name: str, values, dtype) -> object:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name=name)


def build_onnx(plan: PipelinePlan, graph_name: str = "spark_pipeline"):
    """The ONNX ModelProto for ``plan``: one 1-D input per raw column, output ``prediction`` (double, [N])."""
    from onnx import TensorProto, helper

    nodes, inputs = [], []
    axes = _tensor("axes_1", [1], np.int64)
    columns_2d = {}
    for column, (output, labels, _) in plan.string_columns.items():
        inputs.append(helper.make_tensor_value_info(column, TensorProto.STRING, ["N"]))
        keys, values = list(labels), [float(i) for i in range(len(labels))]
        if plan.null_labels.get(column) in labels:  # a null (fed as NULL_SENTINEL) is a learnt category
            keys.append(NULL_SENTINEL)
            values.append(float(labels.index(plan.null_labels[column])))
        nodes.append(
            helper.make_node(
                "LabelEncoder",
                [column],
                [f"{output}__f"],
                domain=ML_DOMAIN,
                keys_strings=keys,
                values_floats=values,
                default_float=float(len(labels)),
            )
        )
        nodes.append(helper.make_node("Cast", [f"{output}__f"], [f"{output}__d"], to=TensorProto.DOUBLE))
        nodes.append(helper.make_node("Unsqueeze", [f"{output}__d", "axes_1"], [f"{output}__2d"]))
        columns_2d[output] = f"{output}__2d"
    for column in plan.numeric_inputs:
        inputs.append(helper.make_tensor_value_info(column, TensorProto.DOUBLE, ["N"]))
        if column in plan.assembler_inputs:  # not when only its imputed copy is assembled
            nodes.append(helper.make_node("Unsqueeze", [column, "axes_1"], [f"{column}__2d"]))
            columns_2d[column] = f"{column}__2d"
    surrogates = []
    for output, (column, surrogate) in plan.imputed.items():
        # a null arrives as NaN: both become the surrogate, as Spark's Imputer does
        surrogates.append(_tensor(f"{output}__surrogate", surrogate, np.float64))
        nodes.append(helper.make_node("IsNaN", [column], [f"{output}__isnan"]))
        nodes.append(helper.make_node("Where", [f"{output}__isnan", f"{output}__surrogate", column], [output]))
        nodes.append(helper.make_node("Unsqueeze", [output, "axes_1"], [f"{output}__2d"]))
        columns_2d[output] = f"{output}__2d"
    for indicator, column in plan.indicators.items():
        nodes.append(helper.make_node("IsNaN", [column], [f"{indicator}__bool"]))
        nodes.append(helper.make_node("Cast", [f"{indicator}__bool"], [f"{indicator}__d"], to=TensorProto.DOUBLE))
        nodes.append(helper.make_node("Unsqueeze", [f"{indicator}__d", "axes_1"], [f"{indicator}__2d"]))
        columns_2d[indicator] = f"{indicator}__2d"
    nodes.append(
        helper.make_node("Concat", [columns_2d[c] for c in plan.assembler_inputs], [plan.features_col], axis=1)
    )

    trees = plan.trees
    real = np.float32 if trees.float32 else np.float64
    attributes = dict(
        n_targets=trees.n_targets,
        aggregate_function=trees.aggregate,
        post_transform=0,
        tree_roots=trees.roots,
        nodes_featureids=trees.featureids,
        nodes_modes=_tensor("nodes_modes", trees.modes, np.uint8),
        nodes_splits=_tensor("nodes_splits", trees.splits, real),
        nodes_truenodeids=trees.truenodeids,
        nodes_trueleafs=trees.trueleafs,
        nodes_falsenodeids=trees.falsenodeids,
        nodes_falseleafs=trees.falseleafs,
        leaf_targetids=trees.leaf_targets,
        leaf_weights=_tensor("leaf_weights", trees.leaf_weights, real),
    )
    if any(trees.missing_tracks_true):
        attributes["nodes_missing_value_tracks_true"] = trees.missing_tracks_true
    if trees.membership:
        attributes["membership_values"] = _tensor("membership_values", trees.membership, real)
    tree_input = plan.features_col
    if trees.float32:  # XGBoost reads its features as float32
        nodes.append(helper.make_node("Cast", [plan.features_col], ["features_f32"], to=TensorProto.FLOAT))
        tree_input = "features_f32"
    nodes.append(helper.make_node("TreeEnsemble", [tree_input], ["tree_output"], domain=ML_DOMAIN, **attributes))
    initializers = [axes, *surrogates]
    output_nodes, output_initializers = _classifier_nodes(plan) if plan.is_classifier else _regression_nodes(plan)
    nodes += output_nodes
    initializers += output_initializers
    if plan.is_classifier:
        outputs = [
            helper.make_tensor_value_info("prediction", _label_tensor_type(plan.label_type), ["N"]),
            helper.make_tensor_value_info("probability", TensorProto.DOUBLE, ["N", len(plan.classes)]),
        ]
    else:
        outputs = [helper.make_tensor_value_info("prediction", TensorProto.DOUBLE, ["N"])]
    graph = helper.make_graph(nodes, graph_name, inputs, outputs, initializer=initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET), helper.make_opsetid(ML_DOMAIN, ML_OPSET)],
        producer_name="sparkmlops",
    )
    model.ir_version = 10
    return model


def _regression_nodes(plan: PipelinePlan) -> tuple[list, list]:
    """(nodes, initializers) from the ensemble's [N, 1] output to ``prediction`` [N]: Squeeze, then expm1 for a
    log label."""
    from onnx import TensorProto, helper

    nodes = []
    if plan.trees.float32:
        nodes.append(helper.make_node("Cast", ["tree_output"], ["tree_output_f64"], to=TensorProto.DOUBLE))
        nodes.append(helper.make_node("Squeeze", ["tree_output_f64", "axes_1"], ["tree_prediction"]))
    else:
        nodes.append(helper.make_node("Squeeze", ["tree_output", "axes_1"], ["tree_prediction"]))
    if not plan.expm1:
        return [*nodes, helper.make_node("Identity", ["tree_prediction"], ["prediction"])], []
    initializers = [
        _tensor("one", 1.0, np.float64),
        _tensor("half", 0.5, np.float64),
        _tensor("sixth", 1.0 / 6.0, np.float64),
        _tensor("small", 1e-5, np.float64),
    ]
    x = "tree_prediction"
    return nodes + [
        helper.make_node("Exp", [x], ["exp_x"]),
        helper.make_node("Sub", ["exp_x", "one"], ["exp_x_minus_1"]),
        # x + x^2/2 + x^3/6: exact to double precision for |x| < 1e-5, where exp(x) - 1 cancels.
        helper.make_node("Mul", [x, "sixth"], ["x_6"]),
        helper.make_node("Add", ["x_6", "half"], ["x_6_half"]),
        helper.make_node("Mul", [x, "x_6_half"], ["x_poly"]),
        helper.make_node("Add", ["x_poly", "one"], ["x_poly_1"]),
        helper.make_node("Mul", [x, "x_poly_1"], ["taylor"]),
        helper.make_node("Abs", [x], ["abs_x"]),
        helper.make_node("Less", ["abs_x", "small"], ["is_small"]),
        helper.make_node("Where", ["is_small", "taylor", "exp_x_minus_1"], ["prediction"]),
    ], initializers


def _label_tensor_type(label_type: str) -> int:
    from onnx import TensorProto

    return {"string": TensorProto.STRING, "boolean": TensorProto.BOOL}.get(label_type, TensorProto.INT64)


def _classifier_nodes(plan: PipelinePlan) -> tuple[list, list]:
    """From the ensemble's output to ``prediction`` (the class in the label's own type) and ``probability``
    ([N, classes]), as Spark computes rawPrediction, probability and the class."""
    from onnx import TensorProto, helper

    nodes, initializers = [], []
    if plan.trees.kind == "gbt":  # tree_output is the margin m, [N, 1]
        initializers += [_tensor("one", 1.0, np.float64), _tensor("minus_two", -2.0, np.float64)]
        nodes += [
            helper.make_node("Neg", ["tree_output"], ["minus_margin"]),
            helper.make_node("Concat", ["minus_margin", "tree_output"], ["raw_prediction"], axis=1),
            # Spark: p0 = 1 / (1 + exp(-2 * raw0)), p1 = 1 - p0
            helper.make_node("Mul", ["minus_two", "minus_margin"], ["p0_exponent"]),
            helper.make_node("Exp", ["p0_exponent"], ["p0_exp"]),
            helper.make_node("Add", ["one", "p0_exp"], ["p0_denominator"]),
            helper.make_node("Div", ["one", "p0_denominator"], ["p0"]),
            helper.make_node("Sub", ["one", "p0"], ["p1"]),
            helper.make_node("Concat", ["p0", "p1"], ["probability"], axis=1),
        ]
    else:  # tree_output holds each row's leaf number in each tree, [N, trees]
        votes = np.asarray(plan.trees.leaf_votes, dtype=np.float64)
        initializers += [
            _tensor("leaf_votes", votes, np.float64),
            _tensor("zero", 0.0, np.float64),
            _tensor("one", 1.0, np.float64),
        ]
        nodes += [
            helper.make_node("Cast", ["tree_output"], ["leaf_numbers"], to=TensorProto.INT64),
            helper.make_node("Gather", ["leaf_votes", "leaf_numbers"], ["tree_votes"], axis=0),  # [N, trees, K]
            helper.make_node("ReduceSum", ["tree_votes", "axes_1"], ["raw_prediction"], keepdims=0),
            helper.make_node("ReduceSum", ["raw_prediction", "axes_1"], ["vote_total"], keepdims=1),
            # a leaf has training rows, so votes never sum to 0; guarded all the same: a graph never divides by 0
            helper.make_node("Equal", ["vote_total", "zero"], ["no_votes"]),
            helper.make_node("Where", ["no_votes", "one", "vote_total"], ["divisor"]),
            helper.make_node("Div", ["raw_prediction", "divisor"], ["probability"]),
        ]
    classes = np.array(plan.classes, dtype=object if plan.label_type == "string" else None)
    if plan.label_type in INTEGER_TYPES:
        classes = classes.astype(np.int64)
    initializers.append(_tensor("classes", classes, classes.dtype))
    nodes += [
        helper.make_node("ArgMax", ["raw_prediction"], ["class_index"], axis=1, keepdims=0),  # the first largest
        helper.make_node("Gather", ["classes", "class_index"], ["prediction"], axis=0),
    ]
    return nodes, initializers


def convert_saved_pipeline(model_dir: str):
    """(ONNX model, plan) for the Spark pipeline saved in ``model_dir`` (an MLflow Spark model folder)."""
    import onnx

    signature = mlflow_models.local_model_signature(model_dir)
    integers = (
        [spec.name for spec in signature.inputs.inputs if spec.type.name in ("integer", "long")] if signature else []
    )
    plan = plan_pipeline(read_stages(spark_model_dir(model_dir)), tuple(integers))
    model = build_onnx(plan)
    onnx.checker.check_model(model, full_check=True)
    return model, plan
