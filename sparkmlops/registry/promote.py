"""The promotion gate: score a candidate version and the current ``@champion`` on the same held-out rows,
move ``@champion`` only when the candidate is better, and roll back by forcing an older version.

Held-out rows are rows neither model trained on. When the evaluation data is the data a version was
trained on (same content digest as its run's ``data_digest``), that run's test split is rebuilt from its
logged seed and train_fraction, checked against the run's logged test digest, and only rows in every
such test split are scored. Data neither version saw is used whole.

The registry changes last, after every check and the evaluation, so a failure leaves it as it was; and
only if ``@champion`` is still the version the promotion started from (else exit 1, nothing changed).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from sparkmlops.core import choices, model_registry, tracking
from sparkmlops.core.entry_points import EntryPoint, param
from sparkmlops.core.errors import JobFailed, UserInputError
from sparkmlops.data import digests, generators, parameters, splits, validation
from sparkmlops.data import schema as data_schema
from sparkmlops.fitting import metrics as model_metrics
from sparkmlops.fitting import spark_pipeline
from sparkmlops.fitting.metrics import LOWER_IS_BETTER, METRIC_CHOICES
from sparkmlops.inference import resolve, scoring

MIN_HELDOUT_ROWS = 10


@dataclass(frozen=True)
class PromoteParams:
    """The `promote` entry point's parameters."""

    model_name: str = param("", "Registered model name.", required=True)
    version: str = param("", "Candidate: a version number or an alias; empty = the newest version.")
    data_path: str = parameters.data_path()
    metric: str = param("auto", "{choices}, on the held-out rows.", choices=METRIC_CHOICES)
    min_improvement: float = param(0.0, "Relative gain over @champion needed to promote, in [0, 1).")
    force: bool = param(False, "Make --version @champion without evaluating (rollback).")

    def validate(self) -> Plan:
        """Every check that needs only the registry, before Spark starts; returns what to compare."""
        if not self.model_name:
            raise UserInputError("model_name is empty: pass -P model_name=<registered model>.")
        model_registry.check_model_name(self.model_name, "model_name")
        choices.check("metric", self.metric, METRIC_CHOICES)
        if not 0.0 <= self.min_improvement < 1.0:
            raise UserInputError(
                f"min_improvement is a relative gain in [0, 1) (0.05 = 5% better than "
                f"@champion), got {self.min_improvement}."
            )
        if self.force and not self.version.strip():
            raise UserInputError(
                "force=true moves @champion without the gate, so it needs the version: pass "
                "-P version=<N> (for a rollback, the older version to restore)."
            )
        if self.data_path:
            validation.check_input_path(self.data_path)
        candidate = model_registry.find_version(self.model_name, self.version)
        if self.force:  # no evaluation: any model serving reads from @champion may be put there (an export)
            candidate_model = resolve.resolve_model(f"models:/{self.model_name}/{candidate.version}", require_flavor="")
        else:
            candidate_model = spark_model_of(self.model_name, candidate, "the candidate")
        champion = model_registry.alias_version(self.model_name, model_registry.CHAMPION)
        champion_model = None
        if champion is not None and str(champion.version) != str(candidate.version) and not self.force:
            champion_model = spark_model_of(self.model_name, champion, "the current @champion")
        return Plan(self, candidate, candidate_model, champion, champion_model).checked()

    def as_dict(self) -> dict:
        return asdict(self)


def spark_model_of(name: str, version, role: str) -> resolve.ResolvedModel:
    """The version's model, refused (one line) unless it is a Spark model."""
    resolved = resolve.resolve_model(f"models:/{name}/{version.version}", require_flavor="")
    if "spark" not in resolved.flavors:
        hint = (
            "point @champion at a Spark version first with -P version=<N> -P force=true"
            if "champion" in role
            else "pass -P version=<N> of a model logged by train or tune_hyperopt (engine=mllib)"
        )
        raise UserInputError(
            f"version {version.version} of '{name}' ({role}) is not a Spark model (flavors: "
            f"{', '.join(resolved.flavors)}): promote compares Spark pipelines; {hint}."
        )
    return resolved


@dataclass
class Plan:
    params: PromoteParams
    candidate: object  # mlflow ModelVersion
    candidate_model: resolve.ResolvedModel
    champion: object | None
    champion_model: resolve.ResolvedModel | None

    @property
    def needs_evaluation(self) -> bool:
        return not self.params.force and not self.is_champion_already

    @property
    def is_champion_already(self) -> bool:
        return self.champion is not None and str(self.champion.version) == str(self.candidate.version)

    @property
    def task(self) -> str:
        return self.candidate_model.task

    @property
    def metric(self) -> str:
        """The gate's metric: the one asked for, or the task's default (rmse; log_loss for a classifier)."""
        return model_metrics.metric_for(self.params.metric, self.task, len(self.candidate_model.classes))

    def checked(self) -> Plan:
        """The versions predict the same thing and the metric fits it; one line otherwise (before Spark)."""
        champion = self.champion_model
        if champion is not None and (champion.task, champion.classes) != (self.task, self.candidate_model.classes):
            raise UserInputError(
                f"v{self.candidate.version} is a {self.task} model"
                + (f" of classes {self.candidate_model.classes}" if self.candidate_model.classes else "")
                + f" but @champion v{self.champion.version} is a {champion.task} model"
                + (f" of classes {champion.classes}" if champion.classes else "")
                + ": versions of one registered model must predict the same thing; register it under another name."
            )
        model_metrics.metric_for(self.params.metric, self.task, len(self.candidate_model.classes))  # or one line
        return self


@dataclass
class PromotionResult:
    decision: str  # promoted | promoted_first | rejected | unchanged | forced
    model_name: str
    candidate_version: str
    previous_champion_version: str  # '' when there was none
    champion_version: str  # after the decision
    metrics: dict = field(default_factory=dict)  # candidate_<m>, champion_<m>, improvement, heldout_rows
    run_id: str = ""

    def line(self, metric: str) -> str:
        name, m = self.model_name, self.metrics
        head = f"promote: {name} v{self.candidate_version}"
        if f"candidate_{metric}" in m:
            head += f" {metric}={m[f'candidate_{metric}']:.4f}"
        if f"champion_{metric}" in m:
            head += (
                f" vs @champion v{self.previous_champion_version} {metric}={m[f'champion_{metric}']:.4f} "
                f"(improvement {m['improvement']:+.2%}, {int(m['heldout_rows'])} held-out rows)"
            )
        outcome = {
            "promoted": f"promoted: @champion -> v{self.champion_version}",
            "promoted_first": f"no champion yet: @champion -> v{self.champion_version}",
            "rejected": f"rejected: @champion stays v{self.champion_version}, v{self.candidate_version} is @challenger",
            "unchanged": f"v{self.candidate_version} is already @champion: nothing changed",
            "forced": (
                f"forced: @champion -> v{self.champion_version}"
                + (f" (was v{self.previous_champion_version})" if self.previous_champion_version else "")
            ),
        }[self.decision]
        return f"{head}: {outcome} (run {self.run_id})"


# ----------------------------------------------------------------------------------------------
# The gate


def relative_improvement(metric: str, candidate: float, champion: float) -> float:
    """How much better the candidate is, relative to the champion (> 0 = better), for any metric."""
    gain = (champion - candidate) if LOWER_IS_BETTER[metric] else (candidate - champion)
    if champion == 0:
        return 0.0 if gain == 0 else math.copysign(math.inf, gain)
    return gain / abs(champion)


def beats(improvement: float, min_improvement: float) -> bool:
    """Strictly better and by at least ``min_improvement``: a tie keeps the champion (no churn)."""
    return improvement > 0 and improvement >= min_improvement


# ----------------------------------------------------------------------------------------------
# Held-out rows


@dataclass(frozen=True)
class TrainingSplit:
    run_id: str
    seed: int
    train_fraction: float
    label_col: str
    data_digest: str
    test_digest: str


def training_split(version) -> TrainingSplit | None:
    """How the version's training run split its data: from the tags ``register_model`` wrote, else from
    the run (a version registered by hand); None when neither says (not produced by this project)."""
    tags = dict(version.tags or {})
    known = {
        "seed": tags.get("param.seed"),
        "train_fraction": tags.get("param.train_fraction"),
        "label_col": tags.get("param.label_col"),
        "data_digest": tags.get("data_digest"),
        "test_digest": tags.get("test_digest"),
    }
    if None in (known["seed"], known["train_fraction"], known["data_digest"]) and version.run_id:
        run = tracking.get_run(version.run_id)
        if run is None:
            return None
        params = tracking.run_parameters(run)
        known.update(
            {
                "seed": params.get("seed"),
                "train_fraction": params.get("train_fraction"),
                "label_col": params.get("label_col"),
                "data_digest": run.data.tags.get("data_digest"),
            }
        )
        logged = tracking.dataset_digests(run)
        if "testing" in logged:
            known["test_digest"] = logged["testing"]
    if None in (known["seed"], known["train_fraction"], known["data_digest"]):
        return None
    label_col = known["label_col"] or data_schema.DEFAULT_LABEL
    return TrainingSplit(
        version.run_id or "",
        int(known["seed"]),
        float(known["train_fraction"]),
        label_col,
        known["data_digest"],
        known["test_digest"] or "",
    )


def label_col_of(plan: Plan) -> str:
    """The label both versions predict (their training runs say it; price otherwise)."""
    labels = {}
    for role, version in (("candidate", plan.candidate), ("@champion", plan.champion)):
        if version is not None:
            split = training_split(version)
            labels[role] = split.label_col if split else data_schema.DEFAULT_LABEL
    if len(set(labels.values())) > 1:
        raise UserInputError(
            f"the candidate predicts '{labels['candidate']}' but @champion predicts "
            f"'{labels['@champion']}': versions of one registered model must predict the same label."
        )
    return labels["candidate"]


def heldout_rows(data: splits.LabelledData, versions: list, data_path: str):
    """Rows of ``data`` no version in ``versions`` ((role, ModelVersion)) trained on, and how they were found."""
    heldout, notes, seen = data.df, [], set()
    for role, version in versions:
        split = training_split(version)
        if split is None:
            notes.append(f"{role} v{version.version}: no training run of this project, all rows kept")
            continue
        if split.data_digest != data.digest:
            notes.append(f"{role} v{version.version}: trained on other data (digest {split.data_digest})")
            continue
        key = (split.seed, split.train_fraction)
        if key not in seen:
            _, test = splits.split_train_test(data.df, split.train_fraction, split.seed)
            if split.test_digest and digests.content_digest(test) != split.test_digest:
                raise UserInputError(
                    f"cannot rebuild the test split of {role} version {version.version} (run {split.run_id}) from "
                    f"'{data_path}': Spark partitioned the files differently than when it trained, so its training "
                    "rows cannot be excluded; pass labelled rows neither version trained on with -P data_path=..."
                )
            heldout = test if not seen else heldout.intersectAll(test)
            seen.add(key)
        notes.append(
            f"{role} v{version.version}: its test split (seed {split.seed}, train_fraction {split.train_fraction})"
        )
    return heldout, notes


def evaluate(spark, plan: Plan, data_path: str) -> dict:
    """Score the candidate (and @champion) on the held-out rows: metrics prefixed by role, and row count."""
    label_col = label_col_of(plan)
    models = [m for m in (plan.candidate_model, plan.champion_model) if m is not None]
    # the model's own columns only: a column its training left out may hold anything (one missing from the data
    # is refused by the signature check below, naming it)
    present = set(validation.read_dataset(spark, data_path).columns)
    features = tuple(c for c, _ in plan.candidate_model.input_columns() if c in present)
    choice = data_schema.ColumnChoice(plan.task, features=features, can_classify=True)
    data = splits.load_labelled(
        spark, data_path, label_col, choice, imputes_missing=all(m.imputes_missing for m in models), for_training=False
    )
    try:
        versions = [("candidate", plan.candidate)]
        if plan.champion_model is not None:
            versions.append(("@champion", plan.champion))
        heldout, notes = heldout_rows(data, versions, data_path)
        heldout = heldout.cache()
        digest, rows = digests.digest_and_count(heldout)
        if rows < MIN_HELDOUT_ROWS:
            raise UserInputError(
                f"only {rows} rows of '{data_path}' are held out from both versions' training: "
                f"need {MIN_HELDOUT_ROWS}; pass more labelled data with -P data_path=..."
            )
        tracking.set_tags({"heldout": "; ".join(notes), "label_col": label_col})
        tracking.log_spark_dataset(heldout, data_path, "heldout", "evaluation", digest, label_col, rows)
        results = {"heldout_rows": float(rows)}
        for role, resolved in (("candidate", plan.candidate_model), ("champion", plan.champion_model)):
            if resolved is None:
                continue
            if plan.task == "classification":
                metrics = classifier_metrics(resolved, heldout, label_col, data.spec)
            else:
                scored = scoring.score_frame(scoring.load_spark_model(resolved), heldout, resolved)
                metrics = model_metrics.regression_metrics(scored, label_col)
            results.update({f"{role}_{k}": v for k, v in metrics.items()})
        heldout.unpersist()
        return results
    finally:
        data.cached.unpersist()


def classifier_metrics(model: resolve.ResolvedModel, heldout, label_col: str, spec) -> dict[str, float]:
    """A classifier's metrics on the held-out rows; refused when they hold a class the model never learnt."""
    from pyspark.sql import functions as F

    model_spec = replace(spec, classes=tuple(model.classes))
    unknown = (
        heldout.select(F.col(label_col).cast("string").alias("c"))
        .filter(~F.col("c").isin(spark_pipeline.label_strings(model_spec)))
        .distinct()
        .limit(5)
        .collect()
    )
    if unknown:
        raise UserInputError(
            f"the held-out rows of '{label_col}' hold class(es) {', '.join(r.c for r in unknown)} that the model "
            f"never learnt (its classes: {', '.join(map(str, model.classes))}): its accuracy on them is undefined; "
            "pass -P data_path= labelled rows of the model's classes, or retrain on data with every class."
        )
    checked = resolve.check_input_against_signature(heldout, model)
    metrics, predictions = spark_pipeline.evaluate(scoring.load_spark_model(model), checked, model_spec)
    predictions.unpersist()
    return metrics


def check_champion_unchanged(plan: Plan) -> None:
    """Refuse to move anything when ``@champion`` moved since the plan read it (another promotion or a
    rollback finished meanwhile): the candidate was compared with a champion that no longer is, so the
    decision is void. Read just before the first registry write; MLflow has no compare-and-set for
    aliases, so two promotions can still both pass this check if they reach it within the same moment."""
    name = plan.params.model_name
    now = model_registry.alias_version(name, model_registry.CHAMPION)
    before = str(plan.champion.version) if plan.champion is not None else ""
    after = str(now.version) if now is not None else ""
    if after != before:
        shown = {"": "none"}
        raise JobFailed(
            f"@champion of '{name}' moved from {shown.get(before, 'v' + before)} to "
            f"{shown.get(after, 'v' + after)} while this promotion of v{plan.candidate.version} ran "
            "(another promote or a rollback): nothing was changed; run promote again to compare "
            "with the new champion."
        )


def promote_and_log(spark, plan: Plan) -> PromotionResult:
    """Decide, log the decision and its numbers to the active run and the version, then move aliases."""
    params, name = plan.params, plan.params.model_name
    candidate, champion = str(plan.candidate.version), (str(plan.champion.version) if plan.champion else "")
    result = PromotionResult("", name, candidate, champion, champion, run_id=tracking.active_run_id())
    tracking.set_tags({"model_name": name, "candidate_version": candidate, "previous_champion_version": champion})
    if plan.is_champion_already:
        result.decision = "unchanged"
    elif params.force:
        result.decision, result.champion_version = "forced", candidate
    else:
        data_path = params.data_path or generators.ensure_default_data(spark)
        result.metrics = evaluate(spark, plan, data_path)
        if plan.champion is None:
            result.decision, result.champion_version = "promoted_first", candidate
        else:
            improvement = relative_improvement(
                plan.metric, result.metrics[f"candidate_{plan.metric}"], result.metrics[f"champion_{plan.metric}"]
            )
            result.metrics["improvement"] = improvement
            if beats(improvement, params.min_improvement):
                result.decision, result.champion_version = "promoted", candidate
            else:
                result.decision = "rejected"
        tracking.log_metrics({k: v for k, v in result.metrics.items() if math.isfinite(v)})

    if result.decision != "unchanged":
        # The re-read and the champion's move are the first registry calls, back to back: the window in
        # which another promotion can slip between them is one round trip to the registry.
        check_champion_unchanged(plan)
        if result.champion_version != champion:
            model_registry.move_champion(name, candidate, plan.champion, result.run_id)
        if not params.force:
            model_registry.set_alias(name, model_registry.CHALLENGER, candidate)
        version_tags = {
            "promotion_decision": result.decision,
            "promotion_run_id": result.run_id,
            "promotion_metric": plan.metric,
            "promotion_min_improvement": params.min_improvement,
            "promotion_previous_champion": champion or "none",
        }
        version_tags.update({f"promotion_{k}": v for k, v in result.metrics.items()})
        model_registry.set_version_tags(name, candidate, version_tags)
    tracking.set_tags({"decision": result.decision, "champion_version": result.champion_version})
    print(result.line(plan.metric), flush=True)
    return result


def _run_name(params: PromoteParams) -> str:
    version = params.version
    shown = "v" + version if version.isdigit() else version or "newest"
    return f"promote {params.model_name} {shown}" + (" force" if params.force else "")


PROMOTE = EntryPoint(
    name="promote",
    script="promote.py",
    summary="Gate a registered model version into @champion.",
    params=PromoteParams,
    job=lambda spark, params, plan: promote_and_log(spark, plan),
    run_name=_run_name,
    needs_spark=lambda plan: plan.needs_evaluation,  # a rollback or a no-op touches only the registry
)
