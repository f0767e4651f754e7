"""Strict names and the key layout of a registry store.

Every name that comes from outside (the command line, an alias object, a marker) is checked
against a strict pattern before it becomes part of a key, so a version called ``../x`` or
``prod\\n`` never reaches a store.

Layout under a store's root::

    versions/<id>/files/<path>      the version's files (immutable)
    versions/<id>/version.json      its marker, written last: a version exists once this does
    aliases/<alias>.json            this cloud's aliases
    ledger/<seq:012d>.json          the promotion ledger (the store of record only)
    ledger-head.json                the ledger's newest entry, carried from the store of record
                                    (replicas only: its number, sha256, alias and version)
    secrets/pseudonym.key           the HMAC key of pseudonyms (never leaves the private cloud)
"""

from __future__ import annotations

import re

from pipelines.registry.errors import BadName

VERSION_ID = re.compile(r"[0-9a-f]{16}")
ALIAS = re.compile(r"[a-z][a-z0-9-]{0,31}")
CLOUDS = ("private", "public")
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")

PSEUDONYM_KEY = "secrets/pseudonym.key"
MARKER = "version.json"


def _why(text: str) -> str:
    if ".." in text or "/" in text or "\\" in text:
        return " (path separators and '..' are not allowed)"
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return " (control characters are not allowed)"
    return ""


def check_version_id(text: object) -> str:
    """``text`` if it is a version id (16 lowercase hex digits).

    Raises:
        BadName: It is not; the message shows it escaped.
    """
    return _matching(text, VERSION_ID, "a version id (16 lowercase hex digits)")


def check_alias(text: object) -> str:
    """``text`` if it is an alias name (``production``, ``canary``, ``previous``, ...).

    Raises:
        BadName: It is not.
    """
    return _matching(text, ALIAS, f"an alias name ({ALIAS.pattern})")


def _matching(text: object, pattern: re.Pattern[str], what: str) -> str:
    """``text`` if it is a string that ``pattern`` matches whole, else BadName naming ``what``."""
    if not isinstance(text, str) or not pattern.fullmatch(text):
        why = _why(text) if isinstance(text, str) else ""
        raise BadName(f"{repr(text)[:80]} is not {what}{why}")
    return text


def check_cloud(text: object) -> str:
    """``text`` if it names a cloud (``private`` or ``public``).

    Raises:
        BadName: It does not.
    """
    if text not in CLOUDS:
        raise BadName(f"{repr(text)[:80]} is not a cloud; the clouds are {', '.join(CLOUDS)}")
    return str(text)


def check_key(key: str) -> str:
    """``key`` if every segment is a plain name: no '..', no empty or hidden segment.

    Raises:
        BadName: A segment is not.
    """
    parts = key.split("/")
    if not key or not all(_SEGMENT.fullmatch(p) for p in parts):
        raise BadName(f"object key {key[:120]!r} is not a plain relative path{_why(key)}")
    return key


def version_prefix(version: str) -> str:
    """The prefix of every object of ``version``."""
    return f"versions/{check_version_id(version)}/"


def file_key(version: str, path: str) -> str:
    """The key of file ``path`` (relative, ``/``-separated) of ``version``."""
    return check_key(f"{version_prefix(version)}files/{path}")


def marker_key(version: str) -> str:
    """The key of ``version``'s marker."""
    return f"{version_prefix(version)}{MARKER}"


def alias_key(alias: str) -> str:
    """The key of an alias object."""
    return f"aliases/{check_alias(alias)}.json"


def ledger_key(seq: int) -> str:
    """The key of ledger entry ``seq``."""
    if seq < 1 or seq >= 10**12:
        raise BadName(f"ledger sequence {seq} is out of range")
    return f"ledger/{seq:012d}.json"


def ledger_seq(key: str) -> int | None:
    """The sequence number of a ledger key, None for any other key."""
    match = re.fullmatch(r"ledger/(\d{12})\.json", key)
    return int(match.group(1)) if match else None
