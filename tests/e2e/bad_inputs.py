"""The catalogue of broken inputs, as data: each case, the entry points that read data, and what each
(case, entry point) pair must give. tests/e2e/test_bad_inputs.py runs every pair; docs/bad-input.md is
generated from this file (``python tests/e2e/bad_inputs.py`` rewrites it; a test fails while it differs).

Outcomes:
- ``OK``: exit 0, run FINISHED, and for scorers an output with one prediction per input row;
- ``DRIFT``: check_drift's exit 3, run FINISHED;
- ``refused("phrase")``: exit 2, the last line of stderr is ``error: ...phrase...``, the run FAILED, and
  nothing at the output path;
- ``NA``: the case does not apply (an output path for an entry point that writes none).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

OK, DRIFT, NA = "ok", "drift", "n/a"


def refused(phrase: str) -> str:
    return f"refused: {phrase}"


@dataclass(frozen=True)
class Case:
    id: str
    description: str


CASES = [
    Case("empty", "0 rows, the right schema"),
    Case("null_numeric_feature", "a numeric feature (`accommodates`) null in every row"),
    Case("null_string_feature", "a string feature (`property_type`) null in every row"),
    Case("null_label", "the label (`price`) null in every row"),
    Case("wrong_type", "a column of the wrong type (`accommodates` as text)"),
    Case("missing_column", "a missing column (`accommodates` dropped)"),
    Case("extra_column", "an extra column (`scraped_at`)"),
    Case("nan_inf", "NaN, +inf and -inf in a numeric feature (`bedrooms`, 40% of rows)"),
    Case("unseen_category", "a category never seen (`neighbourhood_cleansed` = Atlantis, 10% of rows)"),
    Case("long_category", "a 10,000-character category (`property_type`, 1% of rows)"),
    Case("non_ascii_category", "a non-ASCII category (`property_type` = Café — 日本の家, 1% of rows)"),
    Case("corrupt_file", "a corrupt parquet file among good ones"),
    Case("no_parquet_files", "a folder with no parquet files (a README and a JSON file)"),
    Case("header_only_csv", "a CSV with only a header"),
    Case("odd_path", 'a path with spaces and quotes (`my data/it\'s "q".parquet`)'),
    Case("output_inside_input", "the output path inside the input folder"),
    Case("output_parent_is_file", "an output path whose parent is a file"),
]

ENTRY_POINTS = [
    "train",
    "train_sklearn",
    "tune_hyperopt_mllib",
    "tune_hyperopt_sklearn",
    "tune_optuna",
    "tune_grid",
    "train_per_group",
    "score_batch",
    "score_stream",
    "score_pandas_udf",
    "score_per_group",
    "promote",
    "export_onnx",
    "check_drift",
    "reproduce",
    "pipeline",
]
TRAINERS = ENTRY_POINTS[:7]
SCORERS = ["score_batch", "score_stream", "score_pandas_udf", "score_per_group"]
# What each entry point reads from the case: its data (train), input (score_*), evaluation data
# (promote), parity data (export_onnx), current data (check_drift), the original run's data (reproduce).
READS = {
    **{e: "data_path" for e in TRAINERS},
    **{e: "input_path" for e in SCORERS},
    "promote": "data_path",
    "export_onnx": "parity_data_path",
    "check_drift": "current_path",
    "reproduce": "the original run's data_path_resolved",
    "pipeline": "data_path",
}

_CORRUPT = refused("not readable parquet")
_NO_ROWS = refused("has no rows")
_NO_PARQUET = refused("has no parquet files")
_HEADER_ONLY = refused("only a header")
_NON_FINITE = refused("infinite values in bedrooms")
_CHANGED = refused("data changed since run")


def _row(default: str, **overrides: str) -> dict[str, str]:
    return {e: overrides.get(e, default) for e in ENTRY_POINTS}


def _training(outcome: str, **overrides: str) -> dict[str, str]:
    """``outcome`` for the trainers and promote (which evaluates on labelled data), ``overrides`` else."""
    return {**{e: outcome for e in TRAINERS + ["promote"]}, **overrides}


EXPECTED: dict[str, dict[str, str]] = {
    "empty": _row(_NO_ROWS, score_stream=OK),
    # a stream checks values row by row as they arrive (no look-ahead): it stops at the first bad one
    # every trainer's model imputes (docs/your-data.md): what uses them scores the nulls; the trainers have
    # nothing to impute a column missing in every row from
    "null_numeric_feature": _row(
        OK,
        **{e: refused("null or NaN in every row") for e in TRAINERS},
        check_drift=DRIFT,
    ),
    "null_string_feature": _row(OK, **_training(refused("null in every row")), check_drift=DRIFT),
    "null_label": _row(OK, **_training(refused("with a non-null 'price'")), check_drift=DRIFT),
    "wrong_type": _row(
        refused("does not match the model's signature"), **_training(refused("wrong type")), check_drift=DRIFT
    ),
    "missing_column": _row(
        refused("missing columns accommodates"),
        **_training(OK, promote=refused("missing columns accommodates")),
        check_drift=refused("lacks 1 column"),
    ),
    "extra_column": _row(OK),
    "nan_inf": _row(_NON_FINITE, score_stream=refused("has an infinite bedrooms"), check_drift=DRIFT),
    "unseen_category": _row(OK, check_drift=DRIFT),
    "long_category": _row(OK),
    "non_ascii_category": _row(OK),
    "corrupt_file": _row(_CORRUPT),
    "no_parquet_files": _row(_NO_PARQUET),
    "header_only_csv": _row(_HEADER_ONLY, score_stream=refused("is a file: a stream reads a folder")),
    "odd_path": _row(OK),
    "output_inside_input": _row(NA, **{e: refused("inside the input folder") for e in SCORERS}),
    "output_parent_is_file": _row(NA, **{e: refused("is a file, not a folder") for e in SCORERS}),
}

# reproduce meets a case in the one way it can: data train accepts was trained on by the original run, which
# is re-run on it and reproduced; data train refuses cannot have been trained on, so the original run trained
# on the good rows, and the data at its path changed since (reproduce refuses it, naming what changed).
for _outcomes in EXPECTED.values():
    if _outcomes["train"] != NA:
        _outcomes["reproduce"] = OK if _outcomes["train"] == OK else _CHANGED
    _outcomes["pipeline"] = _outcomes["train"]  # its first steps are train's checks and train itself


def pairs(entry_points: list[str] | None = None) -> list[tuple[str, str]]:
    """Every (case, entry point) pair that applies (of ``entry_points``, default all)."""
    return [
        (case.id, entry) for case in CASES for entry in entry_points or ENTRY_POINTS if EXPECTED[case.id][entry] != NA
    ]


# ----------------------------------------------------------------------------------------------
# Classification: the same good rows with `room_type` as the label (task=classification), against the entry
# points that fit, tune, gate, score or watch a classifier (a room_type classifier trained on the good rows)

CLASS_CASES = [
    Case("one_class", "the label (`room_type`) one class in every row"),
    Case("unseen_class", "a class absent in training (`room_type` = Hotel room, 10% of rows)"),
    Case("nearly_one_class", "the label 99.9% one class (1 row of 1,200 another)"),
    Case("float_label", "a fractional label (`room_type` as 0.5, 1.5, 2.5) with task=classification"),
]
CLASS_ENTRY_POINTS = ["train", "tune_hyperopt_mllib", "tune_optuna", "score_batch", "promote", "check_drift"]
CLASS_TRAINERS = CLASS_ENTRY_POINTS[:3]
_ONE_CLASS = refused("needs at least two classes")
_FRACTIONAL = refused("classification needs a string, boolean or integer label")


def _class_row(default: str, **overrides: str) -> dict[str, str]:
    return {e: overrides.get(e, default) for e in CLASS_ENTRY_POINTS}


CLASS_EXPECTED: dict[str, dict[str, str]] = {
    # the features are the good rows': scoring sees nothing wrong; check_drift compares every column of the
    # model's training data, the label's included, and each case moves the label's distribution or type
    "one_class": _class_row(OK, **{e: _ONE_CLASS for e in CLASS_TRAINERS}, check_drift=DRIFT),
    # a fourth class trains; the model trained on three cannot be gated on rows of a class it never learnt
    "unseen_class": _class_row(OK, promote=refused("never learnt"), check_drift=DRIFT),
    "nearly_one_class": _class_row(OK, check_drift=DRIFT),
    "float_label": _class_row(OK, **{e: _FRACTIONAL for e in CLASS_TRAINERS}, promote=_FRACTIONAL, check_drift=DRIFT),
}


def class_pairs() -> list[tuple[str, str]]:
    return [(case.id, entry) for case in CLASS_CASES for entry in CLASS_ENTRY_POINTS]


def make_class_case(spark, case_id: str, base_path: str, folder: Path) -> str:
    """Write classification case ``case_id``'s input from the good rows at ``base_path``; return its path."""
    from pyspark.sql import functions as F

    base = spark.read.parquet(base_path)
    target = str(folder / f"{case_id}.parquet")
    bucket = F.abs(F.xxhash64(*[F.col(c) for c in base.columns], F.lit(11))) % 100
    if case_id == "one_class":
        changed = base.withColumn("room_type", F.lit("Entire home/apt"))
    elif case_id == "unseen_class":
        changed = base.withColumn("room_type", F.when(bucket < 10, F.lit("Hotel room")).otherwise(F.col("room_type")))
    elif case_id == "nearly_one_class":
        rows = base.unionByName(base).unionByName(base).withColumn("row", F.monotonically_increasing_id())
        first = rows.agg(F.min("row")).first()[0]
        label = F.when(F.col("row") == first, F.lit("Shared room")).otherwise(F.lit("Entire home/apt"))
        changed = rows.withColumn("room_type", label).drop("row")
    elif case_id == "float_label":
        changed = base.withColumn("room_type", (bucket % 3).cast("double") + F.lit(0.5))
    else:
        raise KeyError(case_id)
    changed.coalesce(1).write.parquet(target)
    return target


# ----------------------------------------------------------------------------------------------
# Building the broken datasets from a good one


def make_case(spark, case_id: str, base_path: str, folder: Path) -> str:
    """Write case ``case_id``'s input, derived from the good dataset at ``base_path``, under ``folder``;
    return its path (a parquet folder unless the case says otherwise)."""
    from pyspark.sql import functions as F

    base = spark.read.parquet(base_path)
    target = folder / f"{case_id}.parquet"

    def write(df, path: Path = target) -> str:
        df.coalesce(1).write.parquet(str(path))
        return str(path)

    def some_rows(share_percent: int):
        return F.abs(F.xxhash64(*[F.col(c) for c in base.columns], F.lit(7))) % 100 < share_percent

    if case_id == "empty":
        return write(base.limit(0))
    if case_id == "null_numeric_feature":
        return write(base.withColumn("accommodates", F.lit(None).cast("double")))
    if case_id == "null_string_feature":
        return write(base.withColumn("property_type", F.lit(None).cast("string")))
    if case_id == "null_label":
        return write(base.withColumn("price", F.lit(None).cast("double")))
    if case_id == "wrong_type":
        return write(base.withColumn("accommodates", F.col("accommodates").cast("string")))
    if case_id == "missing_column":
        return write(base.drop("accommodates"))
    if case_id == "extra_column":
        return write(base.withColumn("scraped_at", F.lit("2019-07-08")))
    if case_id == "nan_inf":
        bucket = F.abs(F.xxhash64(*[F.col(c) for c in base.columns])) % 10
        value = (
            F.when(bucket < 2, F.lit(float("nan")))
            .when(bucket == 2, F.lit(float("inf")))
            .when(bucket == 3, F.lit(float("-inf")))
            .otherwise(F.col("bedrooms"))
        )
        return write(base.withColumn("bedrooms", value))
    if case_id == "unseen_category":
        return write(
            base.withColumn(
                "neighbourhood_cleansed",
                F.when(some_rows(10), F.lit("Atlantis")).otherwise(F.col("neighbourhood_cleansed")),
            )
        )
    if case_id == "long_category":
        return write(
            base.withColumn(
                "property_type", F.when(some_rows(1), F.lit("x" * 10_000)).otherwise(F.col("property_type"))
            )
        )
    if case_id == "non_ascii_category":
        return write(
            base.withColumn(
                "property_type", F.when(some_rows(1), F.lit("Café — 日本の家")).otherwise(F.col("property_type"))
            )
        )
    if case_id == "corrupt_file":
        path = write(base.repartition(3))
        (Path(path) / "part-99999-corrupt.snappy.parquet").write_bytes(b"PAR1" + b"\0garbage" * 64)
        return path
    if case_id == "no_parquet_files":
        target.mkdir()
        (target / "README.txt").write_text("listings are uploaded here nightly\n")
        (target / "listings.json").write_text('{"price": 100}\n')
        return str(target)
    if case_id == "header_only_csv":
        path = folder / "header_only.csv"
        path.write_text(",".join(base.columns) + "\n")
        return str(path)
    if case_id == "odd_path":
        odd = folder / "my data" / 'it\'s "q".parquet'
        odd.parent.mkdir(parents=True)
        return write(base, odd)
    if case_id in ("output_inside_input", "output_parent_is_file"):
        return write(base)  # good input (a copy); the output path is what is wrong
    raise KeyError(case_id)


def output_path_for(case_id: str, input_path: str, folder: Path) -> str:
    if case_id == "output_inside_input":
        return str(Path(input_path) / "scores")
    if case_id == "output_parent_is_file":
        blocker = folder / "a-file"
        blocker.write_text("not a folder\n")
        return str(blocker / "scores")
    return str(folder / "scores")


# ----------------------------------------------------------------------------------------------
# The documentation page, generated from the tables above

DOC = Path(__file__).resolve().parents[2] / "docs" / "bad-input.md"


def render_doc() -> str:
    lines = [
        "# Bad input: what every entry point does with broken data",
        "",
        "<!-- Generated by `python tests/e2e/bad_inputs.py` from the catalogue in tests/e2e/bad_inputs.py; "
        "tests/e2e/test_bad_inputs.py runs every pair and fails while this page differs. Do not edit by hand. -->",
        "",
        "Every entry point that reads data meets the same broken inputs. Each pair gets a right result (`ok`: "
        "exit 0, run FINISHED, one prediction per input row for scorers), `drift (3)` from `check_drift` (exit 3, "
        "run FINISHED), or a refusal: exit 2, one line `error: ...` containing the phrase shown, the run FAILED, "
        "and nothing at the output path. Checks on paths and files (existence, parquet footers, row counts, CSV "
        "header, output location) run before Spark starts; checks on values take one pass over the data.",
        "",
        "What each entry point reads: " + "; ".join(f"`{e}`: {READS[e]}" for e in ENTRY_POINTS) + ".",
        "`tune_hyperopt_mllib` and `tune_hyperopt_sklearn` are `tune_hyperopt` with `engine=mllib` and "
        "`engine=sklearn`; `tune_optuna` runs with `engine=mllib` (both engines read and check the data "
        "before the engine is chosen, as tune_hyperopt's do).",
        "",
        "Rules behind the table:",
        "",
        "- No rows is bad input for every batch entry point (an upstream job failed); a stream scores an empty "
        "file as an empty micro-batch.",
        "- Every trainer's model imputes numeric nulls and NaN inside the model (docs/your-data.md): what uses "
        "them (`score_batch`, `score_stream`, `score_pandas_udf`, `score_per_group`, `promote`, `export_onnx`) "
        "scores such rows. The trainers and tuners refuse a feature missing in every row (nothing to impute it "
        "from). Infinities "
        "are refused wherever a model is fitted or applied. `check_drift` counts null and NaN as missing values "
        "and rows its model cannot score (an infinity) as unscorable.",
        "- A string feature may hold nulls and unseen categories: the Spark pipelines index unseen categories as "
        '(`StringIndexer(handleInvalid="keep")`) one extra category, and nulls too unless `train` saw nulls in '
        "that column (then null is a category of its own, docs/your-data.md). A string feature null in every "
        "row is refused for training: it is a broken column, not a feature.",
        "- Columns named as in the SF Airbnb (or IoT) schema must have its kind, number or text; scorers check "
        "the model's signature instead. Extra columns are ignored by models and kept in scored output.",
        "- `check_drift` calls drift on PSI >= `threshold`, on a missing-value rate that moved by 0.1 or more, "
        "and on a changed type; the drift table's `drift_reason` column says which.",
        "- `reproduce`: on data `train` accepts, the original run trained on that very data, and reproduce re-runs "
        "it at its commit (paths with spaces and quotes included) and finds the same metrics (`ok`). Data `train` "
        "refuses cannot have been trained on: there the original run trained on the good rows, the data at its "
        "path changed since, and reproduce refuses it, naming what changed; `-P allow_data_change=true` re-runs "
        "anyway.",
        "- `score_stream` checks, at every start, each file's columns against the model's signature from the "
        "parquet footers. A file that arrives while it runs and cannot be scored (corrupt, a column of another "
        "type, an infinite numeric value, or a null or NaN one where the model does not impute) stops the "
        "stream with one line naming the "
        "file (exit 2, run FAILED); committed micro-batches stay as they are. Remove or fix the file and run the "
        "same command again: it resumes after the last committed batch, every row exactly once "
        "(tests/score/test_score_stream.py).",
        "- Remote paths (`s3a://`, `hdfs://`, ...) skip the checks made on local files before Spark; Spark's "
        "own read errors are then reworded into the one line.",
        "",
        *_table(CASES, ENTRY_POINTS, EXPECTED),
        "",
        "## Classification",
        "",
        "The same good rows with `room_type` as the label (`-P label_col=room_type -P task=classification`), "
        "against the entry points that fit, tune, gate, score or watch a classifier; `score_batch`, `promote` "
        "(`bad_inputs_room_type`) and `check_drift` (`-P model_uri=`) use a room_type classifier `train` fitted on "
        "the good rows.",
        "",
        *_table(CLASS_CASES, CLASS_ENTRY_POINTS, CLASS_EXPECTED),
    ]
    total = len(pairs()) + len(class_pairs())
    lines += ["", f"{total} (case, entry point) pairs, each run by tests/e2e/test_bad_inputs.py.", ""]
    return "\n".join(lines)


def _table(cases: list[Case], entry_points: list[str], expected: dict[str, dict[str, str]]) -> list[str]:
    """A markdown table: one row per case, one column per entry point, the outcome in each cell."""
    short = {OK: "ok", DRIFT: "drift (3)", NA: "–"}
    lines = ["| case | " + " | ".join(f"`{e}`" for e in entry_points) + " |", "|---|" + "---|" * len(entry_points)]
    for case in cases:
        cells = [
            short.get(outcome) or "2: " + outcome.removeprefix("refused: ")
            for outcome in (expected[case.id][entry] for entry in entry_points)
        ]
        lines.append(f"| {case.description} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render_doc())
    print(f"wrote {DOC}", file=sys.stderr)
