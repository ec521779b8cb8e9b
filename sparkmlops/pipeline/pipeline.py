"""Entry point `pipeline`: the chain in one command, one process and one SparkSession - check the data, train,
evaluate against thresholds, register, promote, score a batch, export to ONNX - each step a run nested
under the pipeline's run, and reused when a FINISHED run of the step has the same key (step_keys).

Which steps run is decided before Spark starts: a rerun with nothing changed links the earlier runs and
starts no JVM. A step that runs makes the steps that use its result run too (USES): a new threshold
reruns evaluate alone, a new model everything after train. A failed step ends the pipeline with its exit
code and run status; the steps before it stay reusable, so the same command resumes after the fix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from sparkmlops.core import model_registry, tracking
from sparkmlops.core.entry_points import EntryPoint, param
from sparkmlops.core.errors import UserInputError
from sparkmlops.core.spark import declared_master, will_use_connect
from sparkmlops.data.generators import default_data_identity
from sparkmlops.inference import scoring
from sparkmlops.pipeline import exclusive, step_keys
from sparkmlops.pipeline.steps import STEP_JOBS, tune_module
from sparkmlops.train.train import TrainParams

STEPS = ("check_data", "train", "evaluate", "register", "promote", "score_batch", "export_onnx")
# The steps whose results each step uses: its key includes theirs, and it runs whenever one of them runs.
# (evaluate only gates register: a new threshold that still passes registers nothing new.)
USES = {
    "check_data": (),
    "train": ("check_data",),
    "evaluate": ("train",),
    "register": ("train",),
    "promote": ("register",),
    "score_batch": ("promote", "train"),  # the champion when there is a registry, else the trained model
    "export_onnx": ("train",),
}
SEARCHES = ("", "hyperopt", "optuna")
NEEDS_SPARK = {"check_data", "train", "promote", "score_batch", "export_onnx"}


@dataclass(frozen=True)
class PipelineParams(TrainParams):
    """`train`'s parameters (each passes through to the train step), and what the chain does after it."""

    min_r2: float = param(0.0, "Regression: a model whose test r2 is below this is not registered.")
    min_accuracy: float = param(0.0, "Classification: a model whose test accuracy is below this is not registered.")
    min_improvement: float = param(0.0, "promote's gate: relative gain over @champion needed, in [0, 1).")
    score_input_path: str = param("", "Parquet (or .csv) to score with the promoted model; empty = no scoring.")
    score_output_path: str = param("", "Where the scores go (a new parquet folder); needed with score_input_path.")
    export_onnx: bool = param(False, "Export the trained model to ONNX (with its parity check).")
    rerun: str = param(
        "", "Steps to run even when reusable, comma-separated (with the steps that use their results), or all."
    )
    search: str = param(
        "", "The train step as a search instead: hyperopt or optuna (that tuner, engine mllib); empty = train."
    )
    max_evals: int = param(16, "With search: the number of trials.")
    search_space: str = param("default", "With search: the tuner's search_space (default, wide or smoke).")

    def validate(self) -> PipelinePlan:
        """Every check that needs no Spark, then the plan: each step's key and the run it may reuse."""
        self.train_params().validate()
        if self.search not in SEARCHES:
            raise UserInputError(f"search is hyperopt, optuna or empty (train), got '{self.search}'.")
        if self.search:
            self.tune_params().validate()
            if will_use_connect():
                raise UserInputError(
                    f"search={self.search} needs a classic Spark session (broadcasts and RDD partition counts), "
                    "which Spark Connect does not provide: unset SPARK_REMOTE, or train without search."
                )
        if self.register_as:
            model_registry.check_model_name(self.register_as)
        steps = self.steps()
        forced = {s.strip() for s in self.rerun.split(",") if s.strip()}
        unknown = forced - set(STEPS) - {"all"}
        if unknown:
            raise UserInputError(
                f"rerun names no step: {', '.join(sorted(unknown))}: name steps of {', '.join(STEPS)}, or all."
            )
        if not 0.0 <= self.min_improvement < 1.0:
            raise UserInputError(f"min_improvement is a relative gain in [0, 1), got {self.min_improvement}.")
        if bool(self.score_input_path) != bool(self.score_output_path):
            raise UserInputError("score_input_path and score_output_path go together: pass both, or neither.")
        if self.score_input_path:  # the pipeline's own scores: each run that scores replaces them
            scoring.check_batch_paths(self.score_input_path, self.score_output_path, "overwrite")
        return plan_steps(self, steps, forced)

    def steps(self) -> tuple[str, ...]:
        """The steps these parameters ask for, in order."""
        wanted = {"check_data", "train", "evaluate"}
        if self.register_as:
            wanted |= {"register", "promote"}
        if self.score_input_path:
            wanted.add("score_batch")
        if self.export_onnx:
            wanted.add("export_onnx")
        return tuple(s for s in STEPS if s in wanted)

    def train_params(self) -> TrainParams:
        """The train step's parameters: train's own, registration left to the register step."""
        own = {f.name for f in fields(TrainParams)}
        return TrainParams(**{k: v for k, v in asdict(self).items() if k in own and k != "register_as"})

    def tune_params(self):
        """With search: the tuner's parameters, a tune.search.TuneParams (the data, task and split as
        train's; registration left to the register step)."""
        TuneParams = tune_module("search").TuneParams  # noqa: N806 (a class)
        same = {"data_path", "label_col", "task", "features", "exclude", "seed", "train_fraction"}
        return TuneParams(
            **{k: getattr(self, k) for k in same}, max_evals=self.max_evals, search_space=self.search_space
        )

    def trainer(self) -> tuple[str, dict]:
        """(the entry point the train step is, its parameters)."""
        if self.search:
            return f"tune_{self.search}", self.tune_params().as_dict()
        return "train", self.train_params().as_dict()

    def as_dict(self) -> dict:
        """The parameters as the run logs them."""
        return asdict(self)


@dataclass(frozen=True)
class StepPlan:
    name: str
    key: str | None
    reused: object = None  # the FINISHED run (mlflow Run) standing in for this step, or None: the step runs


@dataclass
class PipelinePlan:
    params: PipelineParams
    steps: list[StepPlan]
    lock: exclusive.Lease | None = None  # held from planning to the last step

    @property
    def needs_spark(self) -> bool:
        return any(s.reused is None and s.name in NEEDS_SPARK for s in self.steps)


def _step_inputs(params: PipelineParams, step: str) -> tuple[dict, dict]:
    """(parameters, data identities) a step's result depends on, besides the code and the steps before it."""
    if step == "check_data":
        data = params.data_path or ""
        identity = step_keys.data_identity(data) if data else default_data_identity()
        choice = {k: getattr(params, k) for k in ("data_path", "label_col", "task", "features", "exclude")}
        return choice, {"data_path": identity}
    if step == "train":
        entry_point, own = params.trainer()
        return {"entry_point": entry_point, **{k: str(v) for k, v in own.items()}}, {}
    if step == "evaluate":
        return {"min_r2": params.min_r2, "min_accuracy": params.min_accuracy}, {}
    if step == "register":
        return {"register_as": params.register_as}, {}
    if step == "promote":
        return {"register_as": params.register_as, "min_improvement": params.min_improvement}, {}
    if step == "score_batch":
        return {"output_path": params.score_output_path}, {
            "input_path": step_keys.data_identity(params.score_input_path)
        }
    return {}, {}  # export_onnx: the model (train's key) is all


def plan_steps(params: PipelineParams, steps: tuple[str, ...], forced: set[str]) -> PipelinePlan:
    client, experiment = tracking.client(), tracking.target_experiment_id()
    lock = exclusive.hold(tracking.tracking_uri(), experiment, params.register_as)
    try:
        return PipelinePlan(params, _planned_steps(client, experiment, params, steps, forced), lock)
    except BaseException:
        lock.release()
        raise


def _planned_steps(client, experiment: str, params: PipelineParams, steps: tuple[str, ...], forced: set[str]):
    # the code, and where it runs: the master's parallelism decides the partitions, hence the split
    code = f"{step_keys.code_identity()}|{declared_master()}"
    planned: dict[str, StepPlan] = {}
    for step in steps:
        used = [planned[u] for u in USES[step] if u in planned]
        step_params, data = _step_inputs(params, step)
        key = step_keys.step_key(step, code, step_params, data, {u.name: u.key or "" for u in used})
        runs = step in forced or "all" in forced or any(u.reused is None for u in used)
        reused = None if runs else step_keys.reusable_run(client, experiment, step, key)
        if reused is not None and not _still_valid(step, reused, params, planned):
            reused = None
        planned[step] = StepPlan(step, key, reused)
    return list(planned.values())


def _still_valid(step: str, run, params: PipelineParams, planned: dict[str, StepPlan]) -> bool:
    """What a finished run left outside MLflow's run store is still as it left it: the version it registered
    (still holding the train run's model), a @champion (promote's run stands even when the alias was moved
    since: a rollback by hand is not undone), the scores it wrote with the version @champion names now."""
    tags = run.data.tags
    if step == "register":
        trained = planned["train"].reused
        version = tags.get("registered_model_version", "")
        return trained is not None and model_registry.version_run_id(params.register_as, version) == trained.info.run_id
    if step == "promote":  # a champion moved since stands; no champion at all (deleted) is promoted again
        return model_registry.alias_target(params.register_as, model_registry.CHAMPION) is not None
    if step == "score_batch":
        if params.register_as:  # scored with @champion: only while it names the version scored with
            champion = model_registry.alias_target(params.register_as, model_registry.CHAMPION)
            if champion != tags.get("model_version"):
                return False
        return step_keys.data_identity(params.score_output_path) == tags.get("output_identity")
    return True


# Steps whose run is the entry point's own kind of run (its tags and parameters), so that every consumer
# of such a run (reproduce, promote's held-out rows, the UI's filters) takes it as it takes that entry point's.
ENTRY_POINT_OF = {"train": "train", "promote": "promote", "score_batch": "score_batch", "export_onnx": "export_onnx"}


def _step_params(params: PipelineParams, step: str) -> dict:
    """The parameters a step's run logs: an entry point's own (its job's parameters object) for the steps
    that are one, logged by the step itself; the key's parameters for the others."""
    if step == "train":
        return params.trainer()[1]
    return {} if step in ENTRY_POINT_OF else _step_inputs(params, step)[0]


def run_pipeline(spark, plan: PipelinePlan) -> dict[str, str]:
    """Run or reuse each planned step in order; returns {step: its line}. Stops after a failed gate."""
    try:
        return _run_steps(spark, plan)
    finally:
        if plan.lock is not None:
            plan.lock.release()


def _run_steps(spark, plan: PipelinePlan) -> dict[str, str]:
    params, runs, lines = plan.params, {}, {}
    pipeline_run_id = tracking.active_run_id()
    for step in plan.steps:
        if step.reused is not None:
            run, lines[step.name] = step.reused, f"{step.name}: reused run {step.reused.info.run_id}"
            tracking.set_tags({f"step.{step.name}.run_id": run.info.run_id, f"step.{step.name}.reused": "true"})
        else:
            tags = {
                **tracking.environment_tags(),
                step_keys.STEP_KEY_TAG: step.key or "",
                "pipeline_step": step.name,
                "entry_point": params.trainer()[0]
                if step.name == "train"
                else ENTRY_POINT_OF.get(step.name, f"pipeline.{step.name}"),
            }
            with tracking.nested_run(step.name, tags) as nested:
                # linked before the step runs, so that a failed step's run is found from the pipeline's
                step_tags = {f"step.{step.name}.run_id": nested.info.run_id, f"step.{step.name}.reused": "false"}
                tracking.set_run_tags(pipeline_run_id, step_tags)
                tracking.log_params(_step_params(params, step.name))
                lines[step.name] = STEP_JOBS[step.name](spark, params, runs)
            run = tracking.get_run(nested.info.run_id)
        runs[step.name] = run
        if step.reused is not None or step.name != "promote":  # promote prints its own line
            print(f"pipeline: {lines[step.name]}", flush=True)
        if run.data.tags.get("gate_passed") == "false":
            tracking.set_tags({"stopped_at": step.name})
            break
    tracking.log_metrics(
        {
            "steps_run": sum(s.reused is None for s in plan.steps if s.name in runs),
            "steps_reused": sum(s.reused is not None for s in plan.steps if s.name in runs),
        }
    )
    return lines


def _report(params: PipelineParams, lines: dict[str, str]) -> str:
    return f"pipeline: {len(lines)} steps ({', '.join(lines)})"


PIPELINE = EntryPoint(
    name="pipeline",
    script="pipeline.py",
    summary="Check, train, evaluate, register, promote, score and export in one run; unchanged steps reused.",
    params=PipelineParams,
    job=lambda spark, params, plan: run_pipeline(spark, plan),
    run_name=lambda p: "pipeline " + (p.register_as or p.model_type),
    report=_report,
    needs_spark=lambda plan: plan.needs_spark,
)
