"""The hybrid-cloud policy: what may be written to a replica store, and pseudonyms.

:meth:`CrossingPolicy.check` runs inside the one method through which every store write
passes (``Store._write``), before any byte is sent. A replica (the public cloud) receives only
the kinds ``registry.crossing.allow`` lists; raw events, validated batches, prepared
sequences, user ids and secrets never cross, whatever the list says; a Parquet file crosses
only as one of the two kinds of Parquet a version holds, each with its own columns and nothing
else (:func:`parquet_refusal`); and a JSON document crosses only if every user or session id
field in it holds a pseudonym.

A pseudonym is a keyed hash (HMAC-SHA256) of the id; the key lives in the private store
(``secrets/pseudonym.key``), so the public cloud cannot reverse or recompute it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, get_args

from pipelines.core.params import FEATURE_NAMES, NEVER_CROSS, CrossingConfig, ObjectKind
from pipelines.registry.errors import PolicyViolation

KINDS: frozenset[str] = frozenset(get_args(ObjectKind))
# the columns of a served bundle's item table (pipelines/serving/items.py): catalog facts only
ITEM_TABLE_COLUMNS = frozenset(
    {"item_idx", "item_id", "category", "price", "popularity_rank", "popularity"}
)
# the Parquet files of a version's monitoring reference (pipelines/monitoring/reference.py), by
# their path in the version, and their columns: the features of held-out requests, and how
# often each item id occurs in their histories with its popularity bucket; no user id, no event
MONITORING_PARQUET: dict[str, frozenset[str]] = {
    "monitoring/reference.parquet": frozenset(FEATURE_NAMES),
    "monitoring/popularity.parquet": frozenset({"item_id", "count", "bucket"}),
}
PSEUDONYM = re.compile(r"anon-[0-9a-f]{24}")
_PARQUET_MAGIC = b"PAR1"
_JSON_LIMIT = 64 * 2**20  # larger JSON documents are not models' metadata: refused on a replica


def pseudonymize(value: object, key: bytes) -> str:
    """The pseudonym of a user or session id: ``anon-`` and 24 hex digits of its HMAC-SHA256."""
    digest = hmac.new(key, str(value).encode("utf-8"), hashlib.sha256).hexdigest()
    return f"anon-{digest[:24]}"


def _id_values(document: Any, fields: frozenset[str], where: str = "") -> Iterator[tuple[str, Any]]:
    """(field path, value) of every id field in a JSON document; lists give one value each."""
    if isinstance(document, dict):
        for name, value in document.items():
            path = f"{where}.{name}" if where else str(name)
            if str(name).lower() in fields:
                values = value if isinstance(value, list) else [value]
                for item in values:
                    yield path, item
            else:
                yield from _id_values(value, fields, path)
    elif isinstance(document, list):
        for index, item in enumerate(document):
            yield from _id_values(item, fields, f"{where}[{index}]")


def _id_fields(names: Iterable[str]) -> frozenset[str]:
    lowered = {name.lower() for name in names}
    return frozenset(lowered | {f"{name}s" for name in lowered})


def raw_ids(document: Any, fields: Iterable[str]) -> list[str]:
    """Field paths in a JSON document whose user or session id is not a pseudonym."""
    return [
        path
        for path, value in _id_values(document, _id_fields(fields))
        if value is not None and not (isinstance(value, str) and PSEUDONYM.fullmatch(value))
    ]


def pseudonymize_json(document: Any, key: bytes, fields: Iterable[str]) -> tuple[Any, int]:
    """A copy of ``document`` with every id field's values replaced by pseudonyms.

    Returns:
        The new document and how many values were replaced (already pseudonymous ones stay).
    """
    names = _id_fields(fields)
    count = 0

    def swap(value: Any) -> Any:
        nonlocal count
        if isinstance(value, str) and PSEUDONYM.fullmatch(value):
            return value
        if value is None:
            return None
        count += 1
        return pseudonymize(value, key)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for name, value in node.items():
                if str(name).lower() in names:
                    out[name] = [swap(v) for v in value] if isinstance(value, list) else swap(value)
                else:
                    out[name] = walk(value)
            return out
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(document), count


class CrossingPolicy:
    """Decides, before a write, whether an object may go to a store of a given role."""

    def __init__(self, cfg: CrossingConfig) -> None:
        self.allow = frozenset(cfg.allow)
        self.id_fields = tuple(cfg.id_fields)

    def check_kind(self, store: str, role: str, key: str, kind: str) -> None:
        """Refuse an object of ``kind`` for a store of ``role`` (without looking at its bytes).

        Raises:
            PolicyViolation: The kind is unknown, or may not cross.
        """
        if kind not in KINDS:
            raise PolicyViolation(f"unknown object kind {kind!r} for {key}")
        if role == "record":
            return
        refused = f"refused to write {key} ({kind}) to store {store!r} (a replica): "
        if kind in NEVER_CROSS:
            raise PolicyViolation(refused + f"{kind} never leaves the private cloud")
        if kind not in self.allow:
            raise PolicyViolation(refused + f"{kind} is not in registry.crossing.allow")

    def check(self, store: str, role: str, key: str, kind: str, payload: bytes | Path) -> None:
        """Refuse the write of ``payload`` as ``kind`` at ``key`` in ``store`` if it may not go.

        Args:
            store: The store's name, for the message.
            role: ``record`` (everything may be written) or ``replica``.
            key: The object's key.
            kind: What the object is (one of :data:`KINDS`).
            payload: Its bytes, or the file holding them.

        Raises:
            PolicyViolation: The kind is unknown, or the object may not cross; nothing was sent.
        """
        self.check_kind(store, role, key, kind)
        if role == "record":
            return
        refused = f"refused to write {key} ({kind}) to store {store!r} (a replica): "
        if is_parquet(payload):
            refusal = parquet_refusal(key, kind, payload)
            if refusal is not None:
                raise PolicyViolation(refused + refusal)
            return
        if key.endswith(".json"):
            self._check_json(refused, payload)

    def _check_json(self, refused: str, payload: bytes | Path) -> None:
        size = len(payload) if isinstance(payload, bytes) else payload.stat().st_size
        if size > _JSON_LIMIT:
            raise PolicyViolation(refused + f"a {size} byte JSON document is too large to check")
        raw = payload if isinstance(payload, bytes) else payload.read_bytes()
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PolicyViolation(
                refused + f"it is not valid JSON, so its ids cannot be checked: {exc}"
            ) from None
        found = raw_ids(document, self.id_fields)
        if found:
            # the field names only: the values are the private data
            fields = ", ".join(sorted(set(found))[:5])
            raise PolicyViolation(
                refused + f"{len(found)} user or session id(s) not pseudonymized in {fields}"
            )


def is_parquet(payload: bytes | Path) -> bool:
    """Whether ``payload`` (bytes, or the file holding them) starts as a Parquet file does."""
    if isinstance(payload, bytes):
        return payload[:4] == _PARQUET_MAGIC
    with open(payload, "rb") as handle:
        return handle.read(4) == _PARQUET_MAGIC


def _version_path(key: str) -> str:
    """The path in its version of a version file's key (``versions/<id>/files/<path>``); any
    other key or path as it is."""
    parts = key.split("/", 3)
    if len(parts) == 4 and parts[0] == "versions" and parts[2] == "files":
        return parts[3]
    return key


def parquet_refusal(key: str, kind: str, payload: bytes | Path) -> str | None:
    """Why the Parquet file ``payload`` may not be kept as ``kind`` at ``key``; None: it may.

    A version holds two kinds of Parquet, each only with its own columns: the item table (the
    catalog facts of the model's item indices, :data:`ITEM_TABLE_COLUMNS`) and the monitoring
    reference's two files, only at their paths under ``monitoring/``
    (:data:`MONITORING_PARQUET`). Any other Parquet file is data, and data is not a model.

    Args:
        key: The object's key (``versions/<id>/files/<path>``) or its path in the version.
        kind: The kind it is written as.
        payload: Its bytes, or the file holding them.
    """
    if kind == "item_table":
        allowed, what = ITEM_TABLE_COLUMNS, "an item table holds only catalog columns"
    elif kind == "monitoring_reference":
        path = _version_path(key)
        if path not in MONITORING_PARQUET:
            return (
                f"a monitoring reference's Parquet files are {' and '.join(MONITORING_PARQUET)} "
                f"only, not {path}"
            )
        allowed = MONITORING_PARQUET[path]
        what = f"{path} holds only the columns {', '.join(sorted(allowed))}"
    else:
        return (
            "it is a Parquet data file: data is not a model, and event data never leaves the "
            "private cloud"
        )

    import pyarrow as pa
    import pyarrow.parquet as pq

    source = pa.BufferReader(payload) if isinstance(payload, bytes) else str(payload)
    try:
        columns = set(pq.read_schema(source).names)
    except (pa.ArrowException, OSError) as exc:
        return f"its Parquet schema is unreadable: {exc}"
    extra = sorted(columns - allowed)
    if extra:
        return f"{what}, not {', '.join(extra)}"
    return None
