"""Which paths are the driver's own filesystem: the one definition the reader, the validator and the
writer share."""

from __future__ import annotations

import os
from urllib.parse import urlparse


def is_local_path(path: str) -> bool:
    """A path on this machine's filesystem: no scheme, ``file:``, or a Windows drive letter."""
    scheme = urlparse(path).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def local_path(path: str) -> str:
    """The filesystem path of a local path (``file:///a/b`` -> ``/a/b``)."""
    return urlparse(path).path if path.startswith("file:") else path
