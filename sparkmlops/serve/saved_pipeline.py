"""Reading a fitted Spark ML pipeline from its saved files (metadata JSON and parquet), with no JVM: its stages and
tree ensembles."""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field

import numpy as np

from sparkmlops.core.errors import UserInputError

BRANCH_LEQ, BRANCH_LT, BRANCH_MEMBER = 0, 1, 6


AGGREGATE_AVERAGE, AGGREGATE_SUM = 0, 1


TREE_MODELS = {
    "org.apache.spark.ml.regression.RandomForestRegressionModel": "random_forest",
    "org.apache.spark.ml.regression.GBTRegressionModel": "gbt",
    "org.apache.spark.ml.regression.DecisionTreeRegressionModel": "decision_tree",
    "xgboost.spark.estimator.SparkXGBRegressorModel": "xgboost",
}
CLASSIFIER_MODELS = {
    "org.apache.spark.ml.classification.RandomForestClassificationModel": "random_forest",
    "org.apache.spark.ml.classification.GBTClassificationModel": "gbt",
    "org.apache.spark.ml.classification.DecisionTreeClassificationModel": "decision_tree",
}


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
        raise UserInputError(
            f"the model is a {meta['class'].rsplit('.', 1)[-1]}, not a PipelineModel: export "
            "models logged by train or tune_hyperopt (engine=mllib)."
        )
    stages = []
    for i, uid in enumerate(meta["paramMap"]["stageUids"]):
        path = os.path.join(sparkml_dir, "stages", f"{i}_{uid}")
        stage_meta = _read_metadata(path)
        stages.append(Stage(i, stage_meta["class"], uid, stage_meta, path))
    return stages


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
    leaf_targets: list[int] = field(default_factory=list)
    missing_tracks_true: list[int] = field(default_factory=list)
    n_targets: int = 1
    # A forest or tree classifier: the ensemble gives each row's leaf number in each tree (one target per tree),
    # and leaf_votes[leaf] is what that leaf adds to the class votes (Spark's predictRaw).
    leaf_votes: list[list[float]] = field(default_factory=list)

    @property
    def n_trees(self) -> int:
        return len(self.roots)

    def add_tree(self, nodes: dict[int, dict], weight: float) -> None:
        """Append one Spark tree (node id -> nodeData) with its leaves scaled by ``weight``."""
        self._add_spark_tree(nodes, lambda node: node["prediction"] * weight, target=0)

    def add_voting_tree(self, nodes: dict[int, dict], normalize: bool) -> None:
        """Append one tree of a Spark classifier: its leaves give their number (target: the tree's position) and
        their class counts go to ``leaf_votes``, divided by the leaf's total for a forest (as Spark sums them)."""

        def leaf_number(node) -> float:
            counts = np.asarray(node["impurityStats"], dtype=np.float64)
            total = counts.sum()
            self.leaf_votes.append(list(counts / total if normalize and total != 0 else counts))
            return float(len(self.leaf_votes) - 1)

        self._add_spark_tree(nodes, leaf_number, target=self.n_trees)

    def _add_spark_tree(self, nodes: dict[int, dict], leaf_value, target: int) -> None:
        root_id = min(nodes)  # Spark numbers nodes in pre-order from the root

        def leaf(node) -> int:
            self.leaf_weights.append(leaf_value(node))
            self.leaf_targets.append(target)
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
            raise UserInputError(
                "the XGBoost model has categorical splits (enable_categorical): not supported by "
                "the export; train without them (train's pipeline indexes strings itself)."
            )

        def leaf(nid) -> int:
            self.leaf_weights.append(float(np.float32(values[nid]) + np.float32(offset)))
            self.leaf_targets.append(0)
            return len(self.leaf_weights) - 1

        def subtree(nid) -> int:
            position = self._node(
                int(features[nid]),
                BRANCH_LT,
                float(np.float32(values[nid])),
                None,
                (0, 0),
                (0, 0),
                missing_true=int(default_left[nid]),
            )
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
    base_score = float(
        np.float32(
            json.loads(learner["learner_model_param"]["base_score"].replace("E", "e"))[0]
            if learner["learner_model_param"]["base_score"].startswith("[")
            else float(learner["learner_model_param"]["base_score"])
        )
    )
    num_features = int(learner["learner_model_param"]["num_feature"])
    spec = TreeEnsembleSpec("xgboost", num_features, AGGREGATE_SUM, float32=True)
    for i, tree in enumerate(model["trees"]):
        # XGBoost starts each row's sum at base_score and adds the trees in order, in float32.
        spec.add_xgboost_tree(tree, base_score if i == 0 else 0.0)
    if not model["trees"]:
        raise UserInputError("the XGBoost model has no trees.")
    return spec


def _spark_trees(stage: Stage, kind: str) -> dict[int, dict[int, dict]]:
    """tree id -> (node id -> nodeData) of a saved Spark tree model."""
    rows = _read_parquet(os.path.join(stage.path, "data"))
    if kind == "decision_tree":
        return {0: {r["id"]: r for r in rows}}
    trees: dict[int, dict[int, dict]] = {}
    for row in rows:
        trees.setdefault(row["treeID"], {})[row["nodeData"]["id"]] = row["nodeData"]
    return trees


def read_tree_ensemble(stage: Stage) -> TreeEnsembleSpec:
    """A regressor's trees, or a classifier's: GBT's margin (binary), a forest's or a tree's leaf numbers."""
    kind = TREE_MODELS.get(stage.cls) or CLASSIFIER_MODELS[stage.cls]
    if kind == "xgboost":
        return read_xgboost(stage)
    num_features = int(stage.params.get("numFeatures", -1))
    trees = _spark_trees(stage, kind)
    if stage.cls in CLASSIFIER_MODELS and kind != "gbt":
        spec = TreeEnsembleSpec(kind, num_features, AGGREGATE_SUM, n_targets=len(trees))
        for tree_id in sorted(trees):
            spec.add_voting_tree(trees[tree_id], normalize=kind == "random_forest")
        return spec
    if kind == "decision_tree":
        spec = TreeEnsembleSpec(kind, num_features, AGGREGATE_SUM)
        spec.add_tree(trees[0], 1.0)
        return spec
    weights = {r["_1"]: float(r["_3"]) for r in _read_parquet(os.path.join(stage.path, "treesMetadata"))}
    if kind == "random_forest":  # Spark: sum of the trees' predictions / numTrees
        spec = TreeEnsembleSpec(kind, num_features, AGGREGATE_AVERAGE)
        for tree_id in sorted(trees):
            spec.add_tree(trees[tree_id], 1.0)
    else:  # GBT: sum of treeWeight x tree prediction
        spec = TreeEnsembleSpec(kind, num_features, AGGREGATE_SUM)
        for tree_id in sorted(trees):
            spec.add_tree(trees[tree_id], weights[tree_id])
    return spec
