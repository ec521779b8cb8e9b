"""The one place that talks to the MLflow Model Registry: registering a run's model, finding versions
and aliases with clear errors, and moving aliases.

Aliases replace the deprecated stages (MLflow >= 2.9): ``@champion`` is the book's Production,
``@challenger`` its Staging, and a version that lost ``@champion`` (tagged ``demoted_by_version``)
its Archived. Nothing here uses the stage APIs.
"""

from __future__ import annotations

import time

from sparkmlops.core import environment, tracking
from sparkmlops.core.errors import UserInputError

CHAMPION = "champion"
CHALLENGER = "challenger"
MAX_TAG_VALUE = 5000
_REGISTER_HELP = "register one with: mlflow run . -e train -P register_as=<name>"


def check_model_name(name: str, what: str = "register_as") -> str:
    """MLflow's rules for registered model names, checked before any work."""
    if name != name.strip() or not name:
        raise UserInputError(
            f"{what} '{name}' is not a valid registered model name: it must be non-empty, "
            "without leading or trailing spaces."
        )
    if any(c in name for c in "/:@"):
        raise UserInputError(
            f"{what} '{name}' is not a valid registered model name: it cannot contain "
            "'/', ':' or '@'; use letters, digits, '-', '_' or '.'."
        )
    return name


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def _tag_value(value) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    return text[:MAX_TAG_VALUE]


def register_model(
    model_uri: str,
    name: str,
    *,
    run_id: str,
    entry_point: str,
    params: dict,
    metrics: dict[str, float],
    digests: dict[str, str],
    data_path: str,
) -> object:
    """Make ``model_uri`` a new version of ``name``, tagged with what produced it; return the version.

    Tags: run_id, entry_point, git_commit/git_dirty, data_digest (+ train/test split digests), data_path,
    ``param.<name>`` for every parameter and ``metric.<name>`` for every test metric.
    """
    import mlflow

    git = environment.git_state()
    tags = {
        "run_id": run_id,
        "entry_point": entry_point,
        **git,
        "data_path": data_path,
        "data_digest": digests.get("full", ""),
        "train_digest": digests.get("train", ""),
        "test_digest": digests.get("test", ""),
    }
    tags.update({f"param.{k}": v for k, v in params.items() if k != "register_as"})
    tags.update({f"metric.{k}": v for k, v in metrics.items()})
    version = mlflow.register_model(model_uri, name, tags={k: _tag_value(v) for k, v in tags.items()})
    shown = ", ".join(f"{k}={_tag_value(v)}" for k, v in sorted(metrics.items()))
    changed = [k for k in ("num_trees", "max_depth", "max_bins", "log_label") if k in params]
    description = (
        f"{entry_point} run {run_id} at git commit {git['git_commit'][:12]}"
        f"{' (dirty tree)' if git['git_dirty'] == 'true' else ''}; data {data_path} "
        f"(digest {digests.get('full', '?')}); " + ", ".join(f"{k}={params[k]}" for k in changed) + f"; test {shown}."
    )
    _client().update_model_version(name, version.version, description=description)
    return version


# ----------------------------------------------------------------------------------------------
# Finding versions (every miss is one clear line)


def registered_model(name: str):
    """The registered model ``name``; when it does not exist, say which ones do."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if not tracking.is_missing(exc):
            raise
    names = sorted(m.name for m in client.search_registered_models(max_results=50))
    if not names:
        raise UserInputError(f"no registered model '{name}': the model registry is empty; {_REGISTER_HELP}.")
    raise UserInputError(
        f"no registered model '{name}' (registered models: {', '.join(names[:10])}"
        f"{', ...' if len(names) > 10 else ''}); {_REGISTER_HELP}."
    )


def versions_of(name: str) -> list:
    """Every version of ``name``, newest first."""
    escaped = name.replace("'", "\\'")
    found = _client().search_model_versions(f"name='{escaped}'", max_results=10000)
    return sorted(found, key=lambda v: int(v.version), reverse=True)


def find_version(name: str, ref: str = ""):
    """Version ``ref`` of ``name``: '' = the newest, a number, or an alias (``champion`` or ``@champion``)."""
    model = registered_model(name)
    versions = versions_of(name)
    if not versions:
        raise UserInputError(f"registered model '{name}' has no versions; {_REGISTER_HELP.replace('<name>', name)}.")
    ref = ref.strip()
    if not ref:
        chosen = versions[0]
    elif ref.isdigit():
        chosen = next((v for v in versions if str(v.version) == str(int(ref))), None)
        if chosen is None:
            raise UserInputError(
                f"registered model '{name}' has no version {ref} (versions: "
                f"{', '.join(str(v.version) for v in reversed(versions[:20]))})."
            )
    else:
        alias = ref.lstrip("@")
        aliases = dict(model.aliases or {})
        if alias not in aliases:
            known = ", ".join(f"@{a} -> {v}" for a, v in sorted(aliases.items())) or "none"
            raise UserInputError(
                f"registered model '{name}' has no alias '@{alias}' (aliases: {known}): "
                "pass a version number or an existing alias."
            )
        chosen = next(v for v in versions if str(v.version) == str(aliases[alias]))
    chosen = _client().get_model_version(name, str(chosen.version))  # full record, version as str
    if chosen.status != "READY":
        raise UserInputError(
            f"version {chosen.version} of '{name}' is {chosen.status}, not READY: wait for its "
            "registration to finish or pick another version."
        )
    return chosen


def alias_target(name: str, alias: str) -> str | None:
    """The version number ``alias`` points at now (one registry call: cheap enough to poll), or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client().get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if tracking.is_missing(exc):
            return None
        raise


def version_run_id(name: str, version: str) -> str | None:
    """The run ``version`` of ``name`` was registered from, or None when there is no such version now (a
    pipeline reuses a registration only while that version still holds its train run's model)."""
    from mlflow.exceptions import MlflowException

    if not name or not version:
        return None
    try:
        return _client().get_model_version(name, version).run_id
    except MlflowException as exc:
        if tracking.is_missing(exc):
            return None
        raise


def alias_version(name: str, alias: str):
    """The version ``alias`` points at, or None."""
    aliases = dict(registered_model(name).aliases or {})
    if alias not in aliases:
        return None
    return _client().get_model_version(name, str(aliases[alias]))


# ----------------------------------------------------------------------------------------------
# Changing aliases and tags


def set_version_tags(name: str, version: str, tags: dict) -> None:
    client = _client()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, _tag_value(value))


def set_alias(name: str, alias: str, version: str) -> None:
    _client().set_registered_model_alias(name, alias, version)


def move_champion(name: str, version: str, previous, promotion_run_id: str) -> None:
    """Point ``@champion`` at ``version``; the version it leaves is tagged (the book's Archived)."""
    set_alias(name, CHAMPION, version)
    if previous is not None and str(previous.version) != str(version):
        set_version_tags(
            name,
            previous.version,
            {
                "demoted_by_version": version,
                "demoted_by_run_id": promotion_run_id,
                "demoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )


def register_result(name: str, entry_point: str, model_uri: str, model_params: dict, metrics: dict, prepared) -> str:
    """Register the run's logged model as a new version of ``name``; tag the run with it; return the version.

    ``prepared`` is the run's data (data.splits.PreparedData): its digests and path are tagged on the version."""
    run_id = tracking.active_run_id()
    version = register_model(
        model_uri,
        name,
        run_id=run_id,
        entry_point=entry_point,
        params=model_params,
        metrics=metrics,
        digests=prepared.digests,
        data_path=prepared.data_path,
    )
    tracking.set_tags({"registered_model": name, "registered_model_version": str(version.version)})
    print(f"{entry_point}: registered models:/{name}/{version.version}", flush=True)
    return str(version.version)


def version_of_uri(model_uri: str, run_id: str) -> tuple[str, str, str]:
    """(name, version, run id) of a ``models:/<name>@<alias>`` or ``models:/<name>/<n>`` URI; the version is
    empty for "latest" or a legacy stage, which MLflow resolves itself."""
    body = model_uri[len("models:/") :]
    client = _client()
    if "@" in body:
        name, alias = body.split("@", 1)
        mv = client.get_model_version_by_alias(name, alias)
    else:
        name, _, ref = body.partition("/")
        mv = client.get_model_version(name, ref) if ref.isdigit() else None
        if mv is None:
            return name, "", run_id
    return name, str(mv.version), mv.run_id or run_id
