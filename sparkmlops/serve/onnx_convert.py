"""Convert a fitted Spark ML pipeline, read from its saved files (no JVM), into one ONNX graph.

Raw columns in, ``prediction`` out, computed as Spark computes it:

- StringIndexerModel (handleInvalid keep or error): ``ai.onnx.ml.LabelEncoder`` from each label to its
  index; a value not among the labels (unseen, or a null mapped to a sentinel by the caller) gets
  ``len(labels)``, Spark's "keep" bucket.
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

Any other stage, or a parameter the graph cannot honour, is refused with one line naming it.
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass, field

import numpy as np

from sparkmlops.errors import UserInputError

ML_DOMAIN = "ai.onnx.ml"
ONNX_OPSET = 18
ML_OPSET = 5  # TreeEnsemble
BRANCH_LEQ, BRANCH_LT, BRANCH_MEMBER = 0, 1, 6
AGGREGATE_AVERAGE, AGGREGATE_SUM = 0, 1
NULL_SENTINEL = "\u0000sparkmlops-null\u0000"  # what the runtime feeds for a null string: never a label
EXPM1_STATEMENT = re.compile(r"^\s*SELECT\s+\*\s*,\s*expm1\(\s*(\w+)\s*\)\s+AS\s+(\w+)\s+FROM\s+__THIS__\s*$",
                             re.IGNORECASE)
_TREE_MODELS = {
    "org.apache.spark.ml.regression.RandomForestRegressionModel": "random_forest",
    "org.apache.spark.ml.regression.GBTRegressionModel": "gbt",
    "org.apache.spark.ml.regression.DecisionTreeRegressionModel": "decision_tree",
    "xgboost.spark.estimator.SparkXGBRegressorModel": "xgboost",
}
SUPPORTED_STAGES = ("StringIndexerModel", "VectorAssembler", "RandomForestRegressionModel", "GBTRegressionModel",
                    "DecisionTreeRegressionModel", "SparkXGBRegressorModel (reg:squarederror)",
                    "SQLTransformer (expm1 of the prediction)")


# ----------------------------------------------------------------------------------------------
# Reading Spark's saved pipeline (metadata JSON + parquet data)

@dataclass
class Stage:
    index: int
    cls: str
    uid: str
    params: dict
    path: str

    @property
    def short_class(self) -> str:
        return self.cls.rsplit(".", 1)[-1]

    def param(self, name: str, default=None):
        return self.params.get("paramMap", {}).get(name, self.params.get("defaultParamMap", {}).get(name, default))


def _read_metadata(path: str) -> dict:
    files = sorted(glob.glob(os.path.join(path, "metadata", "part-*")))
    if not files:
        raise UserInputError(f"'{path}' is not a saved Spark ML stage (no metadata folder).")
    with open(files[0]) as f:
        return json.loads(f.readline())


def _read_parquet(path: str) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def spark_model_dir(model_dir: str) -> str:
    """The Spark ML folder inside an MLflow Spark model folder (``sparkml``), or the folder itself."""
    inner = os.path.join(model_dir, "sparkml")
    return inner if os.path.isdir(inner) else model_dir


def read_stages(sparkml_dir: str) -> list[Stage]:
    meta = _read_metadata(sparkml_dir)
    if meta["class"] not in ("org.apache.spark.ml.PipelineModel", "pyspark.ml.pipeline.PipelineModel"):
        raise UserInputError(f"the model is a {meta['class'].rsplit('.', 1)[-1]}, not a PipelineModel: export "
                             "models logged by train or tune_hyperopt (engine=mllib).")
    stages = []
    for i, uid in enumerate(meta["paramMap"]["stageUids"]):
        path = os.path.join(sparkml_dir, "stages", f"{i}_{uid}")
        stage_meta = _read_metadata(path)
        stages.append(Stage(i, stage_meta["class"], uid, stage_meta, path))
    return stages


# ----------------------------------------------------------------------------------------------
# Trees

@dataclass
class TreeEnsembleSpec:
    kind: str
    num_features: int
    aggregate: int
    float32: bool = False  # XGBoost: float features, thresholds and sums
    # nodes_* and leaf_* in TreeEnsemble's encoding
    roots: list[int] = field(default_factory=list)
    featureids: list[int] = field(default_factory=list)
    modes: list[int] = field(default_factory=list)
    splits: list[float] = field(default_factory=list)
    truenodeids: list[int] = field(default_factory=list)
    trueleafs: list[int] = field(default_factory=list)
    falsenodeids: list[int] = field(default_factory=list)
    falseleafs: list[int] = field(default_factory=list)
    membership: list[float] = field(default_factory=list)
    leaf_weights: list[float] = field(default_factory=list)
    missing_tracks_true: list[int] = field(default_factory=list)

    @property
    def n_trees(self) -> int:
        return len(self.roots)

    def add_tree(self, nodes: dict[int, dict], weight: float) -> None:
        """Append one Spark tree (node id -> nodeData) with its leaves scaled by ``weight``."""
        root_id = min(nodes)  # Spark numbers nodes in pre-order from the root

        def leaf(node) -> int:
            self.leaf_weights.append(node["prediction"] * weight)
            return len(self.leaf_weights) - 1

        if nodes[root_id]["leftChild"] < 0:  # a tree that is one leaf: one node, both branches to it
            index = leaf(nodes[root_id])
            self.roots.append(self._node(0, BRANCH_LEQ, 0.0, None, (index, 1), (index, 1)))
            return
        self.roots.append(self._add_subtree(nodes, root_id, leaf))

    def _node(self, feature, mode, split, members, true, false, missing_true: int = 0) -> int:
        self.missing_tracks_true.append(missing_true)
        self.featureids.append(feature)
        self.modes.append(mode)
        self.splits.append(split)
        if members is not None:
            self.membership.extend([*members, float("nan")])
        self.truenodeids.append(true[0])
        self.trueleafs.append(true[1])
        self.falsenodeids.append(false[0])
        self.falseleafs.append(false[1])
        return len(self.featureids) - 1

    def _add_subtree(self, nodes, node_id, leaf) -> int:
        node = nodes[node_id]
        split = node["split"]
        if split["numCategories"] < 0:  # continuous: left when x <= threshold
            (threshold,) = split["leftCategoriesOrThreshold"]
            mode, value, members = BRANCH_LEQ, float(threshold), None
        else:  # categorical: left when x is one of the left categories
            mode, value, members = BRANCH_MEMBER, 0.0, [float(c) for c in split["leftCategoriesOrThreshold"]]
        position = self._node(split["featureIndex"], mode, value, members, (0, 0), (0, 0))
        for side, child_id in (("true", node["leftChild"]), ("false", node["rightChild"])):
            child = nodes[child_id]
            if child["leftChild"] < 0:
                target, is_leaf = leaf(child), 1
            else:
                target, is_leaf = self._add_subtree(nodes, child_id, leaf), 0
            getattr(self, f"{side}nodeids")[position] = target
            getattr(self, f"{side}leafs")[position] = is_leaf
        return position


    def add_xgboost_tree(self, tree: dict, offset: float) -> None:
        """Append one tree of an XGBoost JSON model; ``offset`` (float32) is added to its leaves."""
        left, right = tree["left_children"], tree["right_children"]
        values, features, default_left = tree["split_conditions"], tree["split_indices"], tree["default_left"]
        if tree.get("categories_nodes"):
            raise UserInputError("the XGBoost model has categorical splits (enable_categorical): not supported by "
                                 "the export; train without them (train's pipeline indexes strings itself).")

        def leaf(nid) -> int:
            self.leaf_weights.append(float(np.float32(values[nid]) + np.float32(offset)))
            return len(self.leaf_weights) - 1

        def subtree(nid) -> int:
            position = self._node(int(features[nid]), BRANCH_LT, float(np.float32(values[nid])), None, (0, 0), (0, 0),
                                  missing_true=int(default_left[nid]))
            for side, child in (("true", left[nid]), ("false", right[nid])):
                target, is_leaf = (leaf(child), 1) if left[child] < 0 else (subtree(child), 0)
                getattr(self, f"{side}nodeids")[position] = target
                getattr(self, f"{side}leafs")[position] = is_leaf
            return position

        if left[0] < 0:
            index = leaf(0)
            self.roots.append(self._node(0, BRANCH_LT, 0.0, None, (index, 1), (index, 1)))
        else:
            self.roots.append(subtree(0))


def read_xgboost(stage: Stage) -> TreeEnsembleSpec:
    files = sorted(glob.glob(os.path.join(stage.path, "model", "part-*")))
    with open(files[0]) as f:
        booster = json.load(f)
    learner = booster["learner"]
    objective = learner["objective"]["name"]
    if objective != "reg:squarederror":
        raise UserInputError(f"the XGBoost model's objective is {objective}: the export supports reg:squarederror.")
    model = learner["gradient_booster"]["model"]
    if learner["gradient_booster"].get("name", "gbtree") != "gbtree":
        raise UserInputError("the XGBoost model is not a gbtree booster: not supported by the export.")
    base_score = float(np.float32(json.loads(learner["learner_model_param"]["base_score"].replace("E", "e"))[0]
                                  if learner["learner_model_param"]["base_score"].startswith("[")
                                  else float(learner["learner_model_param"]["base_score"])))
    num_features = int(learner["learner_model_param"]["num_feature"])
    spec = TreeEnsembleSpec("xgboost", num_features, AGGREGATE_SUM, float32=True)
    for i, tree in enumerate(model["trees"]):
        # XGBoost starts each row's sum at base_score and adds the trees in order, in float32.
        spec.add_xgboost_tree(tree, base_score if i == 0 else 0.0)
    if not model["trees"]:
        raise UserInputError("the XGBoost model has no trees.")
    return spec


def read_tree_ensemble(stage: Stage) -> TreeEnsembleSpec:
    kind = _TREE_MODELS[stage.cls]
    if kind == "xgboost":
        return read_xgboost(stage)
    num_features = int(stage.params.get("numFeatures", -1))
    rows = _read_parquet(os.path.join(stage.path, "data"))
    if kind == "decision_tree":
        spec = TreeEnsembleSpec(kind, num_features, AGGREGATE_SUM)
        spec.add_tree({r["id"]: r for r in rows}, 1.0)
        return spec
    weights = {r["_1"]: float(r["_3"]) for r in _read_parquet(os.path.join(stage.path, "treesMetadata"))}
    trees: dict[int, dict[int, dict]] = {}
    for row in rows:
        trees.setdefault(row["treeID"], {})[row["nodeData"]["id"]] = row["nodeData"]
    if kind == "random_forest":  # Spark: sum of the trees' predictions / numTrees
        spec = TreeEnsembleSpec(kind, num_features, AGGREGATE_AVERAGE)
        for tree_id in sorted(trees):
            spec.add_tree(trees[tree_id], 1.0)
    else:  # GBT: sum of treeWeight x tree prediction
        spec = TreeEnsembleSpec(kind, num_features, AGGREGATE_SUM)
        for tree_id in sorted(trees):
            spec.add_tree(trees[tree_id], weights[tree_id])
    return spec


# ----------------------------------------------------------------------------------------------
# The pipeline as a plan, then as a graph

@dataclass
class PipelinePlan:
    string_columns: dict[str, tuple[str, list[str], str]]  # input -> (output col, labels, handleInvalid)
    assembler_inputs: list[str]
    features_col: str
    trees: TreeEnsembleSpec
    tree_prediction_col: str
    expm1: tuple[str, str] | None = None  # (input col, output col)
    numeric_inputs: list[str] = field(default_factory=list)

    @property
    def input_columns(self) -> list[tuple[str, str]]:
        """(column, 'string' | 'double') the graph takes, strings first then numerics (assembler order)."""
        return [(c, "string") for c in self.string_columns] + [(c, "double") for c in self.numeric_inputs]


def plan_pipeline(stages: list[Stage]) -> PipelinePlan:
    """Check every stage is supported and collect what the graph needs; refuse anything else."""
    string_columns, assembler, trees, tree_stage, expm1 = {}, None, None, None, None
    for stage in stages:
        name = stage.short_class
        if name == "StringIndexerModel":
            handle = stage.param("handleInvalid", "error")
            if handle not in ("keep", "error"):
                raise UserInputError(f"stage {stage.index} StringIndexerModel has handleInvalid='{handle}': the export "
                                     "supports 'keep' and 'error' (Spark drops rows with 'skip', a graph cannot).")
            inputs = stage.param("inputCols") or [stage.param("inputCol")]
            outputs = stage.param("outputCols") or [stage.param("outputCol")]
            labels = _read_parquet(os.path.join(stage.path, "data"))[0]
            labels_array = labels.get("labelsArray") or [labels.get("labels")]
            for column, output, column_labels in zip(inputs, outputs, labels_array):
                string_columns[column] = (output, list(column_labels), handle)
        elif name == "VectorAssembler":
            if assembler is not None:
                raise UserInputError(f"stage {stage.index}: a second VectorAssembler is not supported by the export.")
            assembler = stage
        elif stage.cls in _TREE_MODELS:
            if trees is not None:
                raise UserInputError(f"stage {stage.index}: a second tree model is not supported by the export.")
            trees, tree_stage = read_tree_ensemble(stage), stage
        elif name == "SQLTransformer":
            match = EXPM1_STATEMENT.match(stage.param("statement", ""))
            if not match or tree_stage is None or match.group(1) != tree_stage.param("predictionCol", "prediction"):
                raise UserInputError(f"stage {stage.index} SQLTransformer '{stage.param('statement', '')}' is not "
                                     "supported: the export handles only 'SELECT *, expm1(<prediction>) AS prediction "
                                     "FROM __THIS__' after the tree model.")
            expm1 = (match.group(1), match.group(2))
        else:
            raise UserInputError(f"stage {stage.index} ({name}) is not supported by the ONNX export: supported stages "
                                 f"are {', '.join(SUPPORTED_STAGES)}.")
    if assembler is None or trees is None:
        raise UserInputError("the pipeline needs a VectorAssembler and a tree model (RandomForest, GBT or "
                             "DecisionTree regressor) to be exported.")
    features_col = assembler.param("outputCol")
    if tree_stage.param("featuresCol", "features") != features_col:
        raise UserInputError(f"the tree model reads '{tree_stage.param('featuresCol')}' but the assembler writes "
                             f"'{features_col}': the export needs the assembler's output as the model's features.")
    handle = assembler.param("handleInvalid", "error")
    if handle != "error":
        raise UserInputError(f"VectorAssembler handleInvalid='{handle}' is not supported by the export (only 'error').")
    indexed = {output: column for column, (output, _, _) in string_columns.items()}
    numeric = [c for c in assembler.param("inputCols") if c not in indexed]
    if trees.num_features not in (-1, len(assembler.param("inputCols"))):
        raise UserInputError("the tree model's feature count does not match the assembler's inputs.")
    prediction_col = tree_stage.param("predictionCol", "prediction")
    missing = tree_stage.param("missing", float("nan"))
    if trees.kind == "xgboost" and missing is not None and missing == missing:  # a number, not NaN
        raise UserInputError("the XGBoost model treats a number (missing=...) as missing: the export supports "
                             "only missing=NaN, the default.")
    final = expm1[1] if expm1 else prediction_col
    if final != "prediction":
        raise UserInputError(f"the pipeline's output column is '{final}', not 'prediction'.")
    return PipelinePlan(string_columns, list(assembler.param("inputCols")), features_col, trees, prediction_col,
                        expm1, numeric)


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
        nodes.append(helper.make_node("LabelEncoder", [column], [f"{output}__f"], domain=ML_DOMAIN,
                                      keys_strings=labels, values_floats=[float(i) for i in range(len(labels))],
                                      default_float=float(len(labels))))
        nodes.append(helper.make_node("Cast", [f"{output}__f"], [f"{output}__d"], to=TensorProto.DOUBLE))
        nodes.append(helper.make_node("Unsqueeze", [f"{output}__d", "axes_1"], [f"{output}__2d"]))
        columns_2d[output] = f"{output}__2d"
    for column in plan.numeric_inputs:
        inputs.append(helper.make_tensor_value_info(column, TensorProto.DOUBLE, ["N"]))
        nodes.append(helper.make_node("Unsqueeze", [column, "axes_1"], [f"{column}__2d"]))
        columns_2d[column] = f"{column}__2d"
    nodes.append(helper.make_node("Concat", [columns_2d[c] for c in plan.assembler_inputs], [plan.features_col], axis=1))

    trees = plan.trees
    real = np.float32 if trees.float32 else np.float64
    attributes = dict(
        n_targets=1, aggregate_function=trees.aggregate, post_transform=0, tree_roots=trees.roots,
        nodes_featureids=trees.featureids, nodes_modes=_tensor("nodes_modes", trees.modes, np.uint8),
        nodes_splits=_tensor("nodes_splits", trees.splits, real), nodes_truenodeids=trees.truenodeids,
        nodes_trueleafs=trees.trueleafs, nodes_falsenodeids=trees.falsenodeids, nodes_falseleafs=trees.falseleafs,
        leaf_targetids=[0] * len(trees.leaf_weights), leaf_weights=_tensor("leaf_weights", trees.leaf_weights, real))
    if any(trees.missing_tracks_true):
        attributes["nodes_missing_value_tracks_true"] = trees.missing_tracks_true
    if trees.membership:
        attributes["membership_values"] = _tensor("membership_values", trees.membership, real)
    tree_input = plan.features_col
    if trees.float32:  # XGBoost reads its features as float32
        nodes.append(helper.make_node("Cast", [plan.features_col], ["features_f32"], to=TensorProto.FLOAT))
        tree_input = "features_f32"
    nodes.append(helper.make_node("TreeEnsemble", [tree_input], ["tree_output"], domain=ML_DOMAIN, **attributes))
    if trees.float32:
        nodes.append(helper.make_node("Cast", ["tree_output"], ["tree_output_f64"], to=TensorProto.DOUBLE))
        nodes.append(helper.make_node("Squeeze", ["tree_output_f64", "axes_1"], ["tree_prediction"]))
    else:
        nodes.append(helper.make_node("Squeeze", ["tree_output", "axes_1"], ["tree_prediction"]))
    initializers = [axes]
    if plan.expm1:
        initializers += [_tensor("one", 1.0, np.float64), _tensor("half", 0.5, np.float64),
                         _tensor("sixth", 1.0 / 6.0, np.float64), _tensor("small", 1e-5, np.float64)]
        x = "tree_prediction"
        nodes += [
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
        ]
    else:
        nodes.append(helper.make_node("Identity", ["tree_prediction"], ["prediction"]))
    output = helper.make_tensor_value_info("prediction", TensorProto.DOUBLE, ["N"])
    graph = helper.make_graph(nodes, graph_name, inputs, [output], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET),
                                                    helper.make_opsetid(ML_DOMAIN, ML_OPSET)],
                              producer_name="sparkmlops")
    model.ir_version = 10
    return model


def convert_saved_pipeline(model_dir: str):
    """(ONNX model, plan) for the Spark pipeline saved in ``model_dir`` (an MLflow Spark model folder)."""
    import onnx

    plan = plan_pipeline(read_stages(spark_model_dir(model_dir)))
    model = build_onnx(plan)
    onnx.checker.check_model(model, full_check=True)
    return model, plan
