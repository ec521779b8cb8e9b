"""Where a run's code comes from: the git commit and project folder it ran from, cloned and checked out for the re-run.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from sparkmlops.core.environment import PROJECT_ROOT
from sparkmlops.core.errors import UserInputError


def project_subdirectory(tags: dict[str, str]) -> str:
    """The project's folder in its repository: the run's git_subdirectory tag, else the ``#folder`` of the
    URI `mlflow run` was given (mlflow.source.name)."""
    if "git_subdirectory" in tags:
        return tags["git_subdirectory"]
    source = tags.get("mlflow.source.name", "")
    return source.split("#", 1)[1].strip("/") if "#" in source else ""


def _git(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def _has_commit(repo: str, commit: str) -> bool:
    try:
        return _git("-C", repo, "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_code_source(commit: str, project_uri: str, tags: dict[str, str]) -> str:
    """Where the commit's code can be fetched: project_uri, else this checkout if it has the commit,
    else the repository URL MLflow recorded for the run (a run launched from a git URL)."""

    if project_uri:
        if os.path.isdir(project_uri) and not _has_commit(project_uri, commit):
            raise UserInputError(f"project_uri {project_uri} has no commit {commit[:12]}: pass a clone that has it "
                                 "(git fetch) or the repository's URL.")
        return project_uri
    if _has_commit(str(PROJECT_ROOT), commit):
        # The repository's top, which `git clone` needs: the project may be a subfolder of it.
        top = _git("-C", str(PROJECT_ROOT), "rev-parse", "--show-toplevel")
        return top.stdout.strip() if top.returncode == 0 and top.stdout.strip() else str(PROJECT_ROOT)
    for key in ("mlflow.source.git.repoURL", "mlflow.source.name"):
        url = tags.get(key, "").split("#", 1)[0]
        if re.match(r"^(https?|ssh|git|file)://|^[\w.-]+@[\w.-]+:", url):
            return url
    raise UserInputError(f"commit {commit[:12]} is not in this checkout and the run records no repository URL: "
                         "pass -P project_uri=<git URL or a clone that has the commit>.")


def entry_point_parameters(project_dir: str, commit: str, entry_point: str, subdirectory: str = "") -> list[str]:
    """The parameters the entry point declares in MLproject at ``commit``."""
    import yaml

    mlproject = f"{subdirectory}/MLproject" if subdirectory else "MLproject"
    shown = _git("-C", project_dir, "show", f"{commit}:{mlproject}")
    if shown.returncode != 0:
        raise UserInputError(f"commit {commit[:12]} has no {mlproject} file: it is not a commit of this project.")
    spec = yaml.safe_load(shown.stdout) or {}
    entry = (spec.get("entry_points") or {}).get(entry_point)
    if entry is None:
        raise UserInputError(f"MLproject at commit {commit[:12]} has no entry point '{entry_point}'.")
    return list((entry.get("parameters") or {}).keys())


def clone_at(source: str, commit: str, into: Path) -> str:
    """A fresh clone of ``source`` with ``commit`` checked out: never the user's working tree (MLflow's
    own ``version=`` checks a local project out in place, and refuses a version with a subfolder)."""
    target = into / "project"
    cloned = _git("clone", "--quiet", "--no-checkout", source, str(target))
    if cloned.returncode != 0:
        raise UserInputError(f"cannot clone {source}: {' '.join(cloned.stderr.split())[:300]}")
    if not _has_commit(str(target), commit):
        raise UserInputError(f"{source} has no commit {commit[:12]}: pass -P project_uri=<a repository that has it>.")
    checked_out = _git("-C", str(target), "checkout", "--quiet", "--detach", commit)
    if checked_out.returncode != 0:
        raise RuntimeError(f"git checkout {commit[:12]} failed: {' '.join(checked_out.stderr.split())[:300]}")
    return str(target)
