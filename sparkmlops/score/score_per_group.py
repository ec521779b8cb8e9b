"""Entry point `score_per_group`: each group's rows scored by its own model (``groupBy + applyInPandas``), unknown
groups handled as asked."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sparkmlops.core import choices, tracking
from sparkmlops.core.entry_points import EntryPoint, param
from sparkmlops.core.errors import UserInputError
from sparkmlops.data import parameters
from sparkmlops.inference import resolve, scoring
from sparkmlops.inference.group_models import (
    SCORED_WITH_COL,
    GroupModels,
    check_group_col,
    listed,
    load_group_models,
    score_groups,
)

UNKNOWN_GROUPS = {
    "fallback": "scored by the fallback model",
    "null": "no prediction",
    "error": "refuse the input, listing them",
}


@dataclass(frozen=True)
class ScorePerGroupParams:
    """The `score_per_group` entry point's parameters."""

    run_id: str = param("", "The parent run of a train_per_group run.", required=True)
    input_path: str = parameters.input_path()
    output_path: str = parameters.output_path()
    unknown_groups: str = param("fallback", "Rows of a group without a model:", choices=UNKNOWN_GROUPS)
    mode: str = parameters.output_mode()

    def validate(self) -> tuple[GroupModels, resolve.ResolvedModel]:
        choices.check("unknown_groups", self.unknown_groups, UNKNOWN_GROUPS)
        scoring.check_batch_paths(self.input_path, self.output_path, self.mode)
        group_models = load_group_models(self.run_id)
        fallback = resolve.resolve_model(group_models.fallback_uri, require_flavor="python_function")
        return group_models, fallback

    def as_dict(self) -> dict:
        return asdict(self)


def score_per_group(spark, params: ScorePerGroupParams, checked: tuple[GroupModels, resolve.ResolvedModel]) -> dict:
    """The `score_per_group` job: checked input, atomic output, unknown groups counted and handled."""
    from pyspark.sql import functions as F

    group_models, fallback = checked
    counts: dict = {}

    def score(input_df):
        check_group_col(input_df, group_models.group_col)
        scoring.check_no_prediction_column(input_df, (*scoring.output_columns(fallback), SCORED_WITH_COL))
        group_rows = input_df.groupBy(group_models.group_col).agg(F.count(F.lit(1)).alias("rows")).collect()
        unknown = sorted(
            ((r[0], r["rows"]) for r in group_rows if r[0] not in group_models.by_group),
            key=lambda item: (item[0] is None, str(item[0])),
        )
        counts.update(
            groups=len(group_rows), unknown_groups=len(unknown), rows_unknown_group=sum(n for _, n in unknown)
        )
        if unknown and params.unknown_groups == "error":
            raise UserInputError(
                f"{len(unknown)} groups of '{group_models.group_col}' have no model: "
                f"{listed([g for g, _ in unknown])} (unseen in training, or skipped there for too few rows or "
                "one class); pass -P unknown_groups=fallback (the fallback model) or null."
            )
        if unknown:
            print(
                f"score_per_group: {counts['rows_unknown_group']} rows in {len(unknown)} groups without a model "
                f"({params.unknown_groups}): {listed([g for g, _ in unknown])}",
                flush=True,
            )
        return score_groups(spark, input_df, group_models, params.unknown_groups, fallback)

    summary = scoring.score_input_to_output(
        spark,
        params,
        fallback,
        score,
        tags={
            "group_col": group_models.group_col,
            "per_group_run_id": params.run_id,
            "unknown_groups": params.unknown_groups,
        },
    )
    tracking.log_metrics(counts)
    return {**summary, **counts}


SCORE_PER_GROUP = EntryPoint(
    name="score_per_group",
    script="score_per_group.py",
    summary="Score with one model per group.",
    params=ScorePerGroupParams,
    job=score_per_group,
    run_name=lambda p: f"score_per_group {p.run_id[:8]}",
    report=lambda p, summary: (
        f"score_per_group: {summary['rows_scored']} rows -> {p.output_path} in {summary['seconds']:.1f} s; "
        f"{summary['unknown_groups']} groups without a model ({summary['rows_unknown_group']} rows, "
        f"{p.unknown_groups})"
    ),
    needs_spark_context="addPyFile for the per-group function",
)
