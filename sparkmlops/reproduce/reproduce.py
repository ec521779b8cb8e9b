"""Reproduce a logged run: same code (its git commit), same parameters, same data, then compare metrics.

What breaks reproducibility, and what this checks for each:
- code: the run must come from a clean git tree at a known commit (tags ``git_commit``/``git_dirty``);
  the re-run is ``mlflow.projects.run`` on a fresh clone checked out at the commit, never the user's tree,
  cloned only from a source ``code_source`` allows (a run's tags are anyone's to edit);
- data: the data the run trained on must still have the run's content digest (tag ``data_digest``),
  checked before anything is re-run; otherwise the rows/columns/schema changes are reported;
- libraries: the versions the run logged are compared with the reproduction's;
- nondeterminism (parallel sums, execution order): shows up as metric differences, compared against
  ``tolerance``. Timing metrics (``*_seconds``) are reported, never compared.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sparkmlops.core import choices, environment, tracking
from sparkmlops.core.entry_points import EntryPoint, param
from sparkmlops.core.errors import NotReproduced, UserInputError
from sparkmlops.data import schema as data_schema
from sparkmlops.data import splits, validation
from sparkmlops.reproduce.code_source import (
    clone_at,
    entry_point_parameters,
    find_code_source,
    project_subdirectory,
)

ENV_MANAGERS = {"local": "this environment", "uv": "a new one built from the commit's pins"}
# Entry points whose run is a pure function of code, parameters and data: they read data_path, train
# and log metrics. The others write outputs (scoring, generate_data), move aliases (promote) or read
# other runs (reproduce, check_drift), so running them again is not a reproduction.
REPRODUCIBLE_ENTRY_POINTS = (
    "main",
    "train",
    "train_sklearn",
    "tune_hyperopt",
    "tune_optuna",
    "tune_grid",
    "train_per_group",
)
LIBRARY_TAGS = ("python_version", "pyspark_version", "mlflow_version", "pandas_version", "java_version")
# Wall-clock measurements differ on every run; they are listed in the report, not compared. So does
# `trial_id`, MLflow's Optuna storage's trial numbering on a tune_optuna run (hashes of the trials' run ids).
_UNCOMPARED_METRIC = re.compile(r"(^|_)seconds$|per_second|_ms$|^trial_id$")


@dataclass(frozen=True)
class OriginalRun:
    """What the reproduction needs from the original run, read and checked without Spark."""

    run_id: str
    experiment_id: str
    entry_point: str
    commit: str
    source: str  # local git repository or git URL holding the commit
    subdirectory: str  # the project's folder in that repository ("" = its top)
    parameters: dict[str, str]  # the entry point's declared parameters, as the original got them
    metrics: dict[str, float]
    tags: dict[str, str]
    data_path: str  # data_path_resolved: what the run read
    label_col: str
    data_digest: str
    data_rows: int | None  # labelled rows the run split (train_rows + test_rows)
    data_schema: dict[str, str] = field(default_factory=dict)  # column -> MLflow type, from its dataset input


@dataclass(frozen=True)
class ReproduceParams:
    run_id: str = param("", "The run to reproduce.", required=True)
    env_manager: str = param("local", "Where the re-run runs:", choices=ENV_MANAGERS)
    tolerance: float = param(0.0, "Largest allowed |reproduced - original| per metric; 0 = bit-identical.")
    allow_data_change: bool = param(
        False, "Re-run even when the data no longer has the run's digest (the changes are reported)."
    )
    project_uri: str = param(
        "",
        "Git URL or clone holding the run's commit; empty = this checkout, else the repository URL MLflow "
        "recorded for the run.",
    )
    trusted_sources: str = param(
        "",
        "Where the code may be fetched from when the run's tags name the repository: comma-separated URL "
        "prefixes (https, ssh or local paths), or 'any'; empty = only this checkout and its git remotes. "
        "project_uri is always allowed.",
    )

    def as_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> OriginalRun:
        """Everything that needs no Spark: the run, its entry point, commit, clean tree and code source."""
        if not self.run_id:
            raise UserInputError(
                "run_id is empty: pass -P run_id=<id of the run to reproduce> (the UI shows it on the run's page)."
            )
        choices.check("env_manager", self.env_manager, ENV_MANAGERS)
        if not (self.tolerance >= 0 and math.isfinite(self.tolerance)):
            raise UserInputError(
                f"tolerance must be >= 0 (largest allowed |reproduced - original| per metric; "
                f"0 = bit-identical), got {self.tolerance}."
            )
        return read_original_run(self.run_id, self.project_uri, self.trusted_sources)


def read_original_run(run_id: str, project_uri: str = "", trusted_sources: str = "") -> OriginalRun:
    run = tracking.get_run(run_id)
    if run is None:
        raise UserInputError(
            f"run '{run_id}' not found in the tracking store {tracking.tracking_uri()}: check "
            "the id and MLFLOW_TRACKING_URI."
        )

    tags, params = run.data.tags, tracking.run_parameters(run)
    entry_point = tags.get("entry_point") or tags.get("mlflow.project.entryPoint") or tags.get("mlflow.runName", "")
    if entry_point not in REPRODUCIBLE_ENTRY_POINTS:
        raise UserInputError(
            f"run {run_id} is a run of '{entry_point or 'unknown'}', which reproduce does not "
            f"re-run: it reproduces runs of {', '.join(REPRODUCIBLE_ENTRY_POINTS)}."
        )
    commit = tags.get("git_commit") or tags.get("mlflow.source.git.commit") or ""
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise UserInputError(
            f"run {run_id} has no git commit on record (git_commit={commit or 'missing'}): it was "
            "not made from a git checkout, so its code cannot be checked out again."
        )
    dirty = tags.get("git_dirty", "unknown")
    if dirty != "false":
        raise UserInputError(
            f"run {run_id} was made from a git tree with uncommitted changes (git_dirty={dirty}) "
            f"at commit {commit[:12]}: that code exists nowhere. Commit the changes, run again, "
            "and reproduce that run."
        )
    subdirectory = project_subdirectory(tags)
    source = find_code_source(commit, project_uri, tags, trusted_sources)
    if run.info.status != "FINISHED":
        raise UserInputError(
            f"run {run_id} is {run.info.status}, not FINISHED: there are no final metrics to reproduce."
        )
    data_path, digest = params.get("data_path_resolved", ""), tags.get("data_digest", "")
    if not data_path or not digest:
        raise UserInputError(
            f"run {run_id} has no data_path_resolved parameter or data_digest tag: the data it "
            "trained on is unknown, so a reproduction could not be checked."
        )
    rows = [run.data.metrics.get(name) for name in ("train_rows", "test_rows")]
    return OriginalRun(
        run_id=run_id,
        experiment_id=run.info.experiment_id,
        entry_point=entry_point,
        commit=commit,
        source=source,
        subdirectory=subdirectory,
        parameters=params,
        metrics=dict(run.data.metrics),
        tags=dict(tags),
        data_path=data_path,
        label_col=params.get("label_col", "price"),
        data_digest=digest,
        data_rows=int(sum(rows)) if None not in rows else None,
        data_schema=_logged_schema(run),
    )


def _logged_schema(run) -> dict[str, str]:
    """Column -> MLflow type of the run's training dataset input (MLflow records its schema)."""
    for dataset_input in run.inputs.dataset_inputs if run.inputs else []:
        try:
            spec = json.loads(dataset_input.dataset.schema or "{}").get("mlflow_colspec") or []
        except ValueError:
            continue
        if spec:
            return {column["name"]: column["type"] for column in spec}
    return {}


# ----------------------------------------------------------------------------------------------
# Checks before re-running


@dataclass(frozen=True)
class DataCheck:
    unchanged: bool
    changes: list[str]
    digest: str  # the data's digest now ("" when it could not be read)


def check_data(spark, original: OriginalRun) -> DataCheck:
    """Does the run's data still have its logged content digest? If not, say what changed."""
    try:
        validation.check_input_path(original.data_path)
        data = splits.load_labelled(
            spark,
            original.data_path,
            original.label_col,
            data_schema.choice_of_run(original.parameters),
            imputes_missing=True,  # every trainer's model imputes (a run from before read data without nulls)
        )
    except UserInputError as exc:
        return DataCheck(False, [f"{original.data_path} can no longer be read as the run's data: {exc}"], "")
    if data.digest == original.data_digest:
        data.cached.unpersist()
        return DataCheck(True, [], data.digest)
    changes = []
    rows = data.profile["rows"] - data.profile["null_labels"]
    if original.data_rows is not None and rows != original.data_rows:
        changes.append(f"rows {original.data_rows} -> {rows}")
    if original.data_schema:
        now = tracking.dataset_schema(data.df, original.data_path)
        before = original.data_schema
        added = [c for c in now if c not in before]
        removed = [c for c in before if c not in now]
        retyped = [f"{c} {before[c]} -> {now[c]}" for c in before if c in now and before[c] != now[c]]
        for label, names in (("columns added", added), ("columns removed", removed), ("types changed", retyped)):
            if names:
                changes.append(f"{label}: {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}")
    if not changes:
        changes.append("same rows count and schema, different values")
    data.cached.unpersist()
    return DataCheck(
        False,
        [f"{original.data_path} changed (digest {original.data_digest} -> {data.digest}): " + "; ".join(changes)],
        data.digest,
    )


def library_differences(original_tags: dict[str, str], current: dict[str, str]) -> list[tuple[str, str, str]]:
    """(library, original, now) for every logged library version that differs."""
    return [
        (tag.removesuffix("_version"), original_tags.get(tag, "unknown"), current.get(tag, "unknown"))
        for tag in LIBRARY_TAGS
        if original_tags.get(tag, "unknown") != current.get(tag, "unknown")
    ]


def _format_differences(differences: list[tuple[str, str, str]]) -> str:
    return ", ".join(f"{name} {before} -> {now}" for name, before, now in differences)


# ----------------------------------------------------------------------------------------------
# Re-running and comparing


def reproduction_parameters(original: OriginalRun, declared: list[str]) -> dict[str, str]:
    """The original's values of the declared parameters; a reproduction never registers a model."""
    parameters = {name: original.parameters[name] for name in declared if name in original.parameters}
    if "register_as" in parameters:
        parameters["register_as"] = ""
    return parameters


def compare_metrics(original: dict[str, float], reproduced: dict[str, float], tolerance: float):
    """One row per metric of either run: original, reproduced, difference, compared, within_tolerance."""
    import pandas as pd

    rows = []
    for name in sorted(set(original) | set(reproduced)):
        before, after = original.get(name), reproduced.get(name)
        compared = not _UNCOMPARED_METRIC.search(name)
        if before is None or after is None:
            difference, within = None, not compared
        else:
            difference = after - before
            same_nan = math.isnan(before) and math.isnan(after)
            within = (not compared) or same_nan or abs(difference) <= tolerance
        rows.append(
            {
                "metric": name,
                "original": before,
                "reproduced": after,
                "difference": difference,
                "compared": compared,
                "within_tolerance": within,
            }
        )
    return pd.DataFrame(
        rows, columns=["metric", "original", "reproduced", "difference", "compared", "within_tolerance"]
    )


@dataclass
class ReproduceResult:
    reproduced_run_id: str
    report: object  # pandas DataFrame from compare_metrics
    data_changes: list[str]
    library_differences: list[tuple[str, str, str]]
    reproduced: bool
    verdict: str


def _run_project(
    project_dir: str, original: OriginalRun, parameters: dict[str, str], env_manager: str, reproduce_run_id: str
) -> str:
    """``mlflow.projects.run`` of the entry point at the commit; returns the new run's id once it ended."""
    # local: MLflow runs `python <script>` from PATH, so make that this environment's Python; uv: the
    # `uv` executable is found on PATH too (make setup installs it next to this Python).
    env = {"PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    if not original.parameters.get("data_path"):
        # The run used the generated default data: read the very same cached file, not a new one in the clone.
        env["SPARKMLOPS_DATA_CACHE"] = str(Path(original.data_path).parent)
    # The run goes to the original's experiment (experiment_id); MLflow's launcher refuses a name set too.
    unset = ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID")
    saved = {key: os.environ.get(key) for key in (*env, *unset)}
    os.environ.update(env)
    for key in unset:
        os.environ.pop(key, None)
    try:
        # The clone is at the commit already; MLflow records it from the folder's git state.
        # storage_dir: MLflow makes a temp folder there for every run (for path parameters), never removed:
        # inside the clone's temporary folder, it goes with it.
        submitted = tracking.run_project(
            os.path.join(project_dir, original.subdirectory),
            entry_point=original.entry_point,
            parameters=parameters,
            env_manager=env_manager,
            experiment_id=original.experiment_id,
            storage_dir=os.path.join(os.path.dirname(project_dir), "mlflow-storage"),
        )
        tracking.set_run_tags(submitted.run_id, {"reproduction_of": original.run_id, "reproduced_by": reproduce_run_id})
        ok = submitted.wait()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if not ok:
        raise RuntimeError(
            f"the reproduction run {submitted.run_id} of {original.entry_point} failed: see its "
            "output above and its error tag."
        )
    return submitted.run_id


def reproduce_and_log(spark, params: ReproduceParams, original: OriginalRun) -> ReproduceResult:
    import pandas as pd

    tracking.set_tags(
        {
            "original_run_id": original.run_id,
            "original_entry_point": original.entry_point,
            "original_git_commit": original.commit,
        }
    )
    check = check_data(spark, original)
    if not check.unchanged:
        if not params.allow_data_change:
            raise UserInputError(
                f"data changed since run {original.run_id}: {'; '.join(check.changes)}. Restore it, "
                "or pass -P allow_data_change=true to re-run on the data as it is now."
            )
        print(f"reproduce: warning: {'; '.join(check.changes)} (allow_data_change=true)", flush=True)
        tracking.set_tags({"data_changes": "; ".join(check.changes)[:5000]})
    if params.env_manager == "local":
        before = library_differences(original.tags, environment.library_versions())
        if before:
            print(
                f"reproduce: warning: this environment differs from the run's: {_format_differences(before)}",
                flush=True,
            )

    # Said before anything is fetched: the code that is about to run, and where it came from.
    print(f"reproduce: code from {original.source} at commit {original.commit}", flush=True)
    tracking.set_tags({"code_source": original.source[:5000]})
    with tempfile.TemporaryDirectory(prefix="sparkmlops-reproduce-") as tmp:
        project_dir = clone_at(original.source, original.commit, Path(tmp))
        declared = entry_point_parameters(project_dir, original.commit, original.entry_point, original.subdirectory)
        parameters = reproduction_parameters(original, declared)
        tracking.log_dict(
            {
                "entry_point": original.entry_point,
                "commit": original.commit,
                "source": original.source,
                "parameters": parameters,
            },
            "reproduction/command.json",
        )
        new_run_id = _run_project(project_dir, original, parameters, params.env_manager, tracking.active_run_id())

    reproduced = tracking.get_run(new_run_id)
    libraries = library_differences(original.tags, reproduced.data.tags)
    report = compare_metrics(original.metrics, reproduced.data.metrics, params.tolerance)
    tracking.log_dataframe_csv(report, "reproduction/metrics.csv")
    tracking.log_dataframe_csv(
        pd.DataFrame(
            [
                (
                    tag.removesuffix("_version"),
                    original.tags.get(tag, "unknown"),
                    reproduced.data.tags.get(tag, "unknown"),
                )
                for tag in LIBRARY_TAGS
            ],
            columns=["library", "original", "reproduced"],
        ),
        "reproduction/library_versions.csv",
    )
    compared = report[report["compared"]]
    failing = compared[~compared["within_tolerance"]]
    differences = compared["difference"].dropna().abs()
    tracking.log_metrics(
        {
            "metrics_compared": len(compared),
            "metrics_differing": len(failing),
            "max_abs_difference": float(differences.max()) if len(differences) else 0.0,
        }
    )
    if len(failing):
        shown = ", ".join(f"{r.metric} {r.original} vs {r.reproduced}" for r in failing.head(5).itertuples())
        verdict = (
            f"not reproduced: {len(failing)} of {len(compared)} metrics differ by more than tolerance "
            f"{params.tolerance} ({shown})"
        )
    else:
        kind = "bit-identical" if params.tolerance == 0 else f"within {params.tolerance}"
        verdict = f"reproduced: {len(compared)} metrics {kind}"
    if libraries:
        verdict += f"; library versions differ: {_format_differences(libraries)}"
    tracking.set_tags({"reproduced_run_id": new_run_id, "reproduction_verdict": verdict[:5000]})
    tracking.set_run_tags(new_run_id, {"reproduction_verdict": verdict[:5000]})
    result = ReproduceResult(new_run_id, report, check.changes, libraries, not len(failing), verdict)
    if not result.reproduced:
        raise NotReproduced(f"{verdict}; see reproduction/metrics.csv of this run and run {new_run_id}.")
    return result


REPRODUCE = EntryPoint(
    name="reproduce",
    script="reproduce.py",
    summary="Reproduce a logged run and compare its metrics.",
    params=ReproduceParams,
    job=reproduce_and_log,
    run_name=lambda p: f"reproduce {p.run_id[:8]}",
    report=lambda p, result: f"reproduce: {result.verdict} (run {result.reproduced_run_id})",
)
