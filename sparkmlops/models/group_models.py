"""What train_per_group writes and score_per_group reads: the group column, the table of per-group models and the fallback model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sparkmlops.core.errors import UserInputError
from sparkmlops.data import schema as data_schema

GROUP_TABLE = "group_models.csv"


FALLBACK_MODEL = "fallback_model"


MAX_LISTED = 20


def check_group_col(df, group_col: str) -> None:
    """The group column exists and is a string column (from the schema: no Spark job)."""
    dtypes = dict(df.dtypes)
    if group_col not in dtypes:
        strings = [c for c, t in df.dtypes if t == "string"]
        raise UserInputError(f"group_col '{group_col}' is not in the data: pass -P group_col=<one of "
                             f"{', '.join(strings) or 'its string columns'}>.")
    if dtypes[group_col] != "string":
        raise UserInputError(f"group_col '{group_col}' is {dtypes[group_col]}, not a string column: group by a "
                             "string column (cast an id column to string first).")


def group_spec(spec: data_schema.FeatureSpec, group_col: str) -> data_schema.FeatureSpec:
    """A group's features: the data's, without the group column (constant within a group)."""
    return replace(spec, categorical_cols=[c for c in spec.categorical_cols if c != group_col])


def group_value(frame, group_col: str):
    import pandas as pd

    value = frame[group_col].iloc[0]
    return None if pd.isna(value) else str(value)


def listed(values: list, limit: int = MAX_LISTED) -> str:
    shown = ", ".join("(null)" if v is None else str(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


@dataclass(frozen=True)
class GroupModels:
    """A train_per_group run's models: group value -> model URI, and the fallback's URI."""

    group_col: str
    by_group: dict
    fallback_uri: str


def load_group_models(run_id: str) -> GroupModels:
    """Read a train_per_group run's table of models (no Spark); one clear line when it is not one."""
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not run_id:
        raise UserInputError("run_id is empty: pass -P run_id=<id of a train_per_group run>.")
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException as exc:
        raise UserInputError(f"run '{run_id}' not found in {mlflow.get_tracking_uri()}: pass the id of a "
                             "train_per_group run (see its parent run in the MLflow UI).") from exc
    group_col = run.data.tags.get("group_col")
    if not group_col:
        raise UserInputError(f"run '{run_id}' is not a train_per_group run (no group_col tag): pass the parent "
                             "run of a train_per_group run.")
    if run.info.status != "FINISHED":
        raise UserInputError(f"run '{run_id}' ended {run.info.status}: score with a train_per_group run that "
                             "FINISHED.")
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=GROUP_TABLE)
    table = pd.read_csv(path, keep_default_na=False, na_values={"run_id": [""], "model_uri": [""]},
                        dtype={"group": str})
    trained = table[table["status"] == "trained"]
    return GroupModels(group_col, dict(zip(trained["group"], trained["model_uri"])), f"runs:/{run_id}/{FALLBACK_MODEL}")
