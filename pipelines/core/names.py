"""Version names: the one rule for the name of a model version a server loads or serves.

A version name becomes a folder name (``<versions>/<name>/``) and a label of metrics and
request logs, so it is one safe path segment: 1 to 64 letters, digits, ``.``, ``_`` and ``-``,
starting with a letter or digit, never ``..``. The HTTP API's bodies publish the same pattern
(``pipelines.serving.server.schema``). The model registry's version ids (16 lowercase hex
digits, ``pipelines.registry.names``) are a stricter rule inside this one.
"""

from __future__ import annotations

import re

from pipelines.core.errors import InputError

# a version name is one path segment: no separators, no leading dot, bounded length
VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class BadVersionName(InputError):
    """A version name from outside is not one safe path segment."""


def check_version_name(version: object) -> str:
    """``version`` itself when it is a safe folder name.

    Raises:
        BadVersionName: It is empty, too long, or holds characters outside ``A-Za-z0-9._-``
            (a path traversal such as ``../x`` among them).
    """
    if not isinstance(version, str) or not VERSION_NAME.fullmatch(version) or ".." in version:
        raise BadVersionName(
            f"version {str(version)[:80]!r} is not a version name: 1 to 64 characters of "
            "letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    return version
