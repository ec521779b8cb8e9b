"""Where a run's code comes from: the git commit and project folder it ran from, cloned and checked out for the re-run.

Anyone who can tag runs in the tracking store can rewrite where a run says its code is, and reproduce runs that
code: a source is checked before git sees it (https, ssh or a local repository only; from the run's tags only
when trusted), and git itself is held to those transports while it fetches.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.parse
from pathlib import Path

from sparkmlops.core.environment import PROJECT_ROOT
from sparkmlops.core.errors import UserInputError


def project_subdirectory(tags: dict[str, str]) -> str:
    """The project's folder in its repository: the run's git_subdirectory tag, else the ``#folder`` of the
    URI `mlflow run` was given (mlflow.source.name)."""
    if "git_subdirectory" in tags:
        folder = tags["git_subdirectory"]
    else:
        source = tags.get("mlflow.source.name", "")
        folder = source.split("#", 1)[1].strip("/") if "#" in source else ""
    # Tags anyone with write access can set: the folder must stay inside the clone.
    if folder.startswith(("/", "\\")) or ".." in folder.replace("\\", "/").split("/"):
        raise UserInputError(
            f"the run's project folder '{folder}' (from its tags) leaves the repository: a "
            "project folder is a relative path inside it."
        )
    return folder


# http is unencrypted, git:// unauthenticated, ext:: and other remote helpers run commands.
ALLOWED_TRANSPORTS = ("https", "ssh", "file")
TRUST_ANY = "any"
# Whatever git fetches on the way (a redirect, a URL its configuration rewrites, a submodule) uses these only;
# GIT_ALLOW_PROTOCOL too, as a user's own value of it would override the protocol.* settings.
_FETCH_PROTOCOLS = (
    "-c",
    "protocol.allow=never",
    "-c",
    "protocol.https.allow=always",
    "-c",
    "protocol.ssh.allow=always",
    "-c",
    "protocol.file.allow=always",
)
_FETCH_ENV = {"GIT_ALLOW_PROTOCOL": ":".join(ALLOWED_TRANSPORTS)}


def _git(*args: str, cwd: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=600, env={**os.environ, **env} if env else None
    )


def _has_commit(repo: str, commit: str) -> bool:
    try:
        return _git("-C", repo, "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def transport(source: str) -> str:
    """The transport git uses for ``source``, read as git reads it: ``<scheme>://``, ``<helper>::`` (a remote
    helper), scp-like ``[user@]host:path`` (a colon before any slash: ssh), else a local path (file)."""
    named = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)(://|::)", source)
    if named:
        return named.group(1).lower()
    return "ssh" if ":" in source.split("/", 1)[0] else "file"


def check_source(source: str, origin: str = "") -> None:
    """Refuse, in one line, a source git would read as an option or fetch over another transport than
    https, ssh or file."""
    named = f"code source {source}" + (f" ({origin})" if origin else "")
    if source.startswith("-"):
        raise UserInputError(
            f"{named} starts with '-', which git would read as an option: reproduce fetches code "
            "only from an https or ssh URL or a local path."
        )
    used = transport(source)
    if used not in ALLOWED_TRANSPORTS:
        raise UserInputError(
            f"{named} uses {used}: reproduce fetches code only over https, ssh or from a local path (file)."
        )


def _normalised(source: str) -> str | None:
    """``source`` comparable with a trusted one: a local path (or file:// URL) resolved, a URL without its
    trailing ``/`` and ``.git``. None for a URL with a ``.`` or ``..`` segment, which the server would
    resolve out of the folder the URL seems to be in."""
    if transport(source) == "file":
        path = urllib.parse.unquote(urllib.parse.urlsplit(source).path) if "://" in source else source
        return os.path.realpath(path)
    if {".", ".."} & set(re.split(r"[/:]", urllib.parse.unquote(source))):
        return None
    return source.rstrip("/").removesuffix(".git").rstrip("/")


def _under(source: str, prefix: str) -> bool:
    """At a path boundary: https://host/org covers https://host/org/repo, not https://host/org-evil/repo."""
    return source == prefix or source.startswith(prefix if prefix.endswith(("/", ":")) else prefix + "/")


def checkout_sources(checkout: Path = PROJECT_ROOT) -> list[str]:
    """What a run's tags may name by default: this checkout's folder, its git top level, and the URLs of its
    git remotes (the repository its own code came from)."""
    sources = [str(checkout)]
    top = _git("-C", str(checkout), "rev-parse", "--show-toplevel")
    if top.returncode == 0 and top.stdout.strip():
        sources.append(top.stdout.strip())
    remotes = _git("-C", str(checkout), "remote", "-v")  # "<name>\t<url> (fetch)", and (push)
    if remotes.returncode == 0:
        sources += [line.split("\t", 1)[1].rsplit(" (", 1)[0] for line in remotes.stdout.splitlines() if "\t" in line]
    return sources


def is_trusted(source: str, trusted_sources: str = "", checkout: Path = PROJECT_ROOT) -> bool:
    """Whether a source named by a run's tags may be fetched: one of ``checkout_sources`` (exactly), under a
    comma-separated prefix of ``trusted_sources``, or anything when it is ``any``."""
    prefixes = [entry.strip() for entry in trusted_sources.split(",") if entry.strip()]
    if TRUST_ANY in (prefix.lower() for prefix in prefixes):
        return True
    normal = _normalised(source)
    if normal is None:
        return False
    if normal in {_normalised(known) for known in checkout_sources(checkout)}:
        return True
    return any(prefix is not None and _under(normal, prefix) for prefix in map(_normalised, prefixes))


def find_code_source(
    commit: str, project_uri: str, tags: dict[str, str], trusted_sources: str = "", checkout: Path = PROJECT_ROOT
) -> str:
    """Where the commit's code can be fetched: project_uri (the user's choice), else this checkout if it has
    the commit, else the repository URL MLflow recorded for the run (a run launched from a git URL) when it is
    trusted (``is_trusted``). Every source must use an allowed transport (``check_source``)."""

    if project_uri:
        check_source(project_uri, "project_uri")
        if os.path.isdir(project_uri) and not _has_commit(project_uri, commit):
            raise UserInputError(
                f"project_uri {project_uri} has no commit {commit[:12]}: pass a clone that has it "
                "(git fetch) or the repository's URL."
            )
        return project_uri
    if _has_commit(str(checkout), commit):
        # The repository's top, which `git clone` needs: the project may be a subfolder of it.
        top = _git("-C", str(checkout), "rev-parse", "--show-toplevel")
        return top.stdout.strip() if top.returncode == 0 and top.stdout.strip() else str(checkout)
    for key in ("mlflow.source.git.repoURL", "mlflow.source.name"):
        url = tags.get(key, "").split("#", 1)[0].strip()
        # mlflow.source.name is the script's own path for a `python <script>.py` run: only a URL there names
        # a repository.
        if not url or (key == "mlflow.source.name" and transport(url) == "file" and "://" not in url):
            continue
        check_source(url, f"the run's tag {key}")
        if not is_trusted(url, trusted_sources, checkout):
            raise UserInputError(
                f"code source {url} comes from the run's tag {key} and is not trusted: it is not this checkout or one "
                f"of its git remotes{f', nor under trusted_sources {trusted_sources}' if trusted_sources else ''}. "
                f"If you trust it to run its code, pass -P trusted_sources=<its URL or a prefix of it> or "
                f"-P project_uri={url}."
            )
        return url
    raise UserInputError(
        f"commit {commit[:12]} is not in this checkout and the run records no repository URL: "
        "pass -P project_uri=<git URL or a clone that has the commit>."
    )


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
    check_source(source)
    target = into / "project"
    cloned = _git(*_FETCH_PROTOCOLS, "clone", "--quiet", "--no-checkout", "--", source, str(target), env=_FETCH_ENV)
    if cloned.returncode != 0:
        raise UserInputError(f"cannot clone {source}: {' '.join(cloned.stderr.split())[:300]}")
    if not _has_commit(str(target), commit):
        raise UserInputError(f"{source} has no commit {commit[:12]}: pass -P project_uri=<a repository that has it>.")
    # A checkout can fetch too (submodules, with submodule.recurse set): the same transports only.
    checked_out = _git(*_FETCH_PROTOCOLS, "-C", str(target), "checkout", "--quiet", "--detach", commit, env=_FETCH_ENV)
    if checked_out.returncode != 0:
        raise RuntimeError(f"git checkout {commit[:12]} failed: {' '.join(checked_out.stderr.split())[:300]}")
    return str(target)
