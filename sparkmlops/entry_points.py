"""Every entry point of the project, in MLproject's order: the declarations the scripts' commands, MLproject
and docs/parameters.md are made from (tools/declarations.py writes the two files; tests fail while they
differ). `main` is `train`."""

from __future__ import annotations

from sparkmlops.data.generate_data import GENERATE_DATA
from sparkmlops.monitor.check_drift import CHECK_DRIFT
from sparkmlops.pipeline.pipeline import PIPELINE
from sparkmlops.registry.promote import PROMOTE
from sparkmlops.reproduce.reproduce import REPRODUCE
from sparkmlops.score.score_batch import SCORE_BATCH
from sparkmlops.score.score_pandas_udf import SCORE_PANDAS_UDF
from sparkmlops.score.score_per_group import SCORE_PER_GROUP
from sparkmlops.score.score_stream import SCORE_STREAM
from sparkmlops.serve.export_onnx import EXPORT_ONNX
from sparkmlops.serve.serve import SERVE
from sparkmlops.train.train import TRAIN
from sparkmlops.train.train_per_group import TRAIN_PER_GROUP
from sparkmlops.train.train_sklearn import TRAIN_SKLEARN
from sparkmlops.tune.tune_grid import TUNE_GRID
from sparkmlops.tune.tune_hyperopt import TUNE_HYPEROPT
from sparkmlops.tune.tune_optuna import TUNE_OPTUNA

ENTRY_POINTS = (
    TRAIN,
    GENERATE_DATA,
    SCORE_BATCH,
    SCORE_STREAM,
    TUNE_HYPEROPT,
    TUNE_OPTUNA,
    TUNE_GRID,
    PROMOTE,
    EXPORT_ONNX,
    SERVE,
    TRAIN_SKLEARN,
    SCORE_PANDAS_UDF,
    TRAIN_PER_GROUP,
    SCORE_PER_GROUP,
    CHECK_DRIFT,
    REPRODUCE,
    PIPELINE,
)
MAIN = TRAIN
