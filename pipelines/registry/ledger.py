"""The promotion ledger: append-only, one entry per alias change, in the store of record.

Entry ``n`` is the object ``ledger/<n:012d>.json``, created with ``IfNoneMatch='*'``: two
writers can never take the same number (the loser retries with the next one), and nothing ever
overwrites an entry. Each entry holds the sha256 of the entry before it, so a changed or
removed entry breaks the chain. Nothing in the ledger follows the newest entry, so its hash is
kept outside it: each alias object records the number and sha256 of the entry of the change that
set it (an :class:`Anchor`), in the cloud of that alias. Every reader checks the chain and the
anchors it is given (:func:`entries`) and refuses a ledger that fails, naming the first bad
entry; :func:`chain_problems` lists every problem, for ``recflow registry verify``.

An entry says when, which alias in which cloud, from which version to which, who or which run,
why (the gate's verdict, a canary decision, a manual rollback with its reason), and the hashes
of the evidence. The entries of one alias in one cloud answer "what served where and when".
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pipelines.registry.errors import (
    ChecksumMismatch,
    ConditionFailed,
    LedgerBroken,
    NothingToRollBack,
    RegistryError,
)
from pipelines.registry.names import ledger_key, ledger_seq
from pipelines.registry.stores.base import Store

FORMAT = 1
APPEND_ATTEMPTS = 50
RECENT = 8  # entries of one alias searched for a change already recorded


def parse_time(text: str) -> dt.datetime:
    """An ISO date or date-time as an aware UTC date-time (a naive one is taken as UTC).

    Raises:
        RegistryError: ``text`` is neither.
    """
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise RegistryError(f"{text!r} is not an ISO date or date-time") from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def make_change(
    *,
    cloud: str,
    alias: str,
    from_version: str | None,
    to_version: str,
    action: str,
    reason: str,
    actor: str,
    at: dt.datetime,
    run: dict[str, Any] | None = None,
    evidence: dict[str, Any] | None = None,
    rolls_back: int | None = None,
) -> dict[str, Any]:
    """The record of one alias change, as the alias object and the ledger entry carry it."""
    return {
        "id": uuid.uuid4().hex,
        "at": at.astimezone(dt.UTC).isoformat(),
        "cloud": cloud,
        "alias": alias,
        "from_version": from_version,
        "to_version": to_version,
        "action": action,
        "reason": reason,
        "actor": actor,
        "run": run,
        "evidence": evidence or {},
        "rolls_back": rolls_back,
    }


@dataclass(frozen=True)
class LedgerEntry:
    """One entry: its number, the change, the previous entry's hash and its own."""

    seq: int
    change: dict[str, Any]
    prev_sha256: str | None
    sha256: str

    @property
    def at(self) -> dt.datetime:
        return parse_time(str(self.change["at"]))

    @property
    def cloud(self) -> str:
        return str(self.change["cloud"])

    @property
    def alias(self) -> str:
        return str(self.change["alias"])

    @property
    def version(self) -> str:
        return str(self.change["to_version"])

    @property
    def action(self) -> str:
        return str(self.change["action"])

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, **self.change, "prev_sha256": self.prev_sha256}


@dataclass(frozen=True)
class Anchor:
    """A ledger entry as recorded outside the ledger: its number and its sha256.

    Attributes:
        seq: The entry's number.
        sha256: The sha256 of the entry's bytes.
        by: What records it, for messages (``alias 'production' in 'public'``).
    """

    seq: int
    sha256: str
    by: str


def _parse(seq: int, data: bytes, where: str) -> LedgerEntry:
    try:
        document = json.loads(data)
        change = {k: v for k, v in document.items() if k not in ("format", "seq", "prev_sha256")}
        for required in ("id", "at", "cloud", "alias", "to_version", "action"):
            if required not in change:
                raise KeyError(required)
        parse_time(str(change["at"]))
        if document["seq"] != seq:
            raise ValueError(f"it says it is entry {document['seq']}")
    except (ValueError, KeyError, TypeError, RegistryError) as exc:
        raise ChecksumMismatch(f"ledger entry {where} is malformed: {exc}") from None
    return LedgerEntry(seq, change, document.get("prev_sha256"), hashlib.sha256(data).hexdigest())


def _numbers(store: Store) -> list[int]:
    return sorted(n for n in (ledger_seq(k) for k in store.list_keys("ledger/")) if n is not None)


def read_entry(store: Store, seq: int) -> LedgerEntry:
    """Entry ``seq``, verified against its recorded sha256."""
    key = ledger_key(seq)
    data, _ = store.read(key)
    return _parse(seq, data, store.where(key))


def entries(
    store: Store, *, physical: bool = False, anchors: Iterable[Anchor] = ()
) -> list[LedgerEntry]:
    """The entries of the ledger in ``store``, in order, checked against their chain and
    ``anchors``.

    A change is recorded once; if a writer and a repairer (``record_pending``) both appended
    it at the same moment, the later copy is left out. ``physical`` asks for every object as
    stored, unchecked (for :func:`chain_problems`, which lists every problem).

    Args:
        store: The store of record.
        physical: Every object as stored, unchecked.
        anchors: The anchors of the ledger's entries, read before the ledger (an anchor read
            after it may name an entry appended since).

    Raises:
        LedgerBroken: An entry was changed or removed; the message names the first.
        ChecksumMismatch: An entry does not match its recorded sha256, or is malformed.
    """
    found = [read_entry(store, n) for n in _numbers(store)]
    if physical:
        return found
    check(store, found, anchors)
    seen: set[str] = set()
    unique = []
    for entry in found:
        if entry.change["id"] not in seen:
            seen.add(entry.change["id"])
            unique.append(entry)
    return unique


def append(store: Store, change: dict[str, Any], anchors: Iterable[Anchor] = ()) -> LedgerEntry:
    """Append ``change`` as the next entry, linked to the newest one once it is checked against
    ``anchors`` (a new entry linked to an edited one would make the edit look intact).

    Args:
        store: The store of record.
        change: The change (:func:`make_change`).
        anchors: The anchors of the ledger's entries, read before this call.

    Raises:
        LedgerBroken: The newest entry was changed, or an anchored one removed; nothing was
            appended.
        RegistryError: Other writers kept taking the next number.
    """
    anchors = list(anchors)
    for _ in range(APPEND_ATTEMPTS):
        numbers = _numbers(store)
        found = _recorded(store, numbers, change)
        if found is not None:
            return found  # a repairer recorded this change already
        last = numbers[-1] if numbers else 0
        newest = _checked_head(store, last, anchors)
        prev = newest.sha256 if newest else None
        seq = last + 1
        document = {"format": FORMAT, "seq": seq, "prev_sha256": prev, **change}
        data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")
        try:
            store.put_bytes(ledger_key(seq), data, "ledger", if_none_match=True)
        except ConditionFailed:
            continue  # another writer took this number: the next one
        return LedgerEntry(seq, change, prev, hashlib.sha256(data).hexdigest())
    raise RegistryError(
        f"could not append to the ledger in {store.name!r} in {APPEND_ATTEMPTS} tries"
    )


def _checked_head(store: Store, last: int, anchors: list[Anchor]) -> LedgerEntry | None:
    """Entry ``last``, the newest, if no anchor says it was changed or a later one removed."""
    newest = [read_entry(store, last)] if last else []
    problems = [p for seq, p in _anchor_problems(newest, anchors) if seq >= last]
    if problems:
        raise LedgerBroken(
            f"the ledger in {store.where('ledger/')} is not intact, so nothing is added to it: "
            f"{problems[0]}"
        )
    return newest[0] if newest else None


def check_head(store: Store, anchors: Iterable[Anchor]) -> None:
    """Refuse to build on the ledger in ``store`` if its newest entry disagrees with
    ``anchors`` (read before this call), or an anchored entry after it was removed.

    Raises:
        LedgerBroken: Naming the entry.
    """
    numbers = _numbers(store)
    _checked_head(store, numbers[-1] if numbers else 0, list(anchors))


def recorded(store: Store, change: dict[str, Any]) -> LedgerEntry | None:
    """The entry of ``change`` if the ledger holds it already."""
    return _recorded(store, _numbers(store), change)


def _recorded(store: Store, numbers: list[int], change: dict[str, Any]) -> LedgerEntry | None:
    # changes of one alias are serialized by its compare-and-set: the one asked about is among
    # the newest few of its alias (a raced duplicate may sit after it); a miss only costs a
    # duplicate, which the ledger reads once
    seen = 0
    for seq in reversed(numbers):
        entry = read_entry(store, seq)
        if entry.cloud != change["cloud"] or entry.alias != change["alias"]:
            continue
        if entry.change["id"] == change["id"]:
            return entry
        seen += 1
        if seen >= RECENT:
            return None
    return None


def _anchor_problems(
    all_entries: Iterable[LedgerEntry], anchors: Iterable[Anchor]
) -> list[tuple[int, str]]:
    """(entry number, problem) for each anchor that the entries do not bear out."""
    by_seq = {entry.seq: entry for entry in all_entries}
    problems = []
    for anchor in anchors:
        entry = by_seq.get(anchor.seq)
        if entry is None:
            problems.append(
                (
                    anchor.seq,
                    f"ledger entry {anchor.seq} is missing ({anchor.by} records it, "
                    f"sha256 {anchor.sha256[:12]}…)",
                )
            )
        elif entry.sha256 != anchor.sha256:
            problems.append(
                (
                    anchor.seq,
                    f"ledger entry {anchor.seq} was changed: it hashes to sha256 "
                    f"{entry.sha256[:12]}…, {anchor.by} records {anchor.sha256[:12]}…",
                )
            )
    return problems


def chain_problems(all_entries: Iterable[LedgerEntry], anchors: Iterable[Anchor] = ()) -> list[str]:
    """Gaps, broken links and entries that disagree with their anchors, in the order of the
    entries they name; empty when the ledger is intact.

    Args:
        all_entries: Every entry as stored (``entries(store, physical=True)``).
        anchors: The anchors of the entries.
    """
    found = list(all_entries)
    problems: list[tuple[int, str]] = []
    previous: LedgerEntry | None = None
    for entry in found:
        expected_seq = previous.seq + 1 if previous else 1
        if entry.seq != expected_seq:
            problems.append(
                (expected_seq, f"ledger entry {expected_seq} is missing (next is {entry.seq})")
            )
        elif previous is None and entry.prev_sha256 is not None:
            problems.append((1, "ledger entry 1 was changed: it names an entry before it"))
        elif previous is not None and entry.prev_sha256 != previous.sha256:
            problems.append(
                (
                    previous.seq,
                    f"ledger entry {previous.seq} was changed: it hashes to sha256 "
                    f"{previous.sha256[:12]}…, entry {entry.seq} records "
                    f"{str(entry.prev_sha256)[:12]}…",
                )
            )
        previous = entry
    problems += _anchor_problems(found, anchors)
    return [problem for _, problem in sorted(problems, key=lambda p: p[0])]


def check(store: Store, all_entries: Iterable[LedgerEntry], anchors: Iterable[Anchor]) -> None:
    """Refuse the ledger of ``store`` unless its entries are intact (:func:`chain_problems`).

    Raises:
        LedgerBroken: Naming the first bad entry.
    """
    problems = chain_problems(all_entries, anchors)
    if problems:
        more = f" ({len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise LedgerBroken(
            f"the ledger in {store.where('ledger/')} is not intact, so it is not used: "
            f"{problems[0]}{more}; `recflow registry verify` lists every problem"
        )


def select(
    all_entries: Iterable[LedgerEntry], alias: str | None = None, cloud: str | None = None
) -> list[LedgerEntry]:
    """The entries of ``alias`` (any if None) in ``cloud`` (any if None), in order."""
    return [
        e
        for e in all_entries
        if (alias is None or e.alias == alias) and (cloud is None or e.cloud == cloud)
    ]


def serving_at(
    all_entries: Iterable[LedgerEntry], alias: str, cloud: str, at: dt.datetime
) -> LedgerEntry | None:
    """The entry that set what ``alias`` named in ``cloud`` at ``at`` (None: nothing yet)."""
    current = None
    for entry in select(all_entries, alias, cloud):
        if entry.at <= at:
            current = entry
    return current


def last_known_good(all_entries: Iterable[LedgerEntry], alias: str, cloud: str) -> tuple[str, int]:
    """Where a rollback of ``alias`` in ``cloud`` goes: the version of the latest entry before
    the current one that was not itself rolled back.

    Each change pushes its version; a rollback pops the change it undid. The top of the stack
    is what serves now, the one below it is the last known good.

    Returns:
        The version to roll back to, and the number of the entry being rolled back.

    Raises:
        NothingToRollBack: No earlier known-good version.
    """
    stack: list[LedgerEntry] = []
    for entry in select(all_entries, alias, cloud):
        if entry.action == "rollback":
            undone = entry.change.get("rolls_back")
            stack = [e for e in stack if e.seq != undone]
        else:
            stack.append(entry)
    if len(stack) < 2:
        raise NothingToRollBack(
            f"the ledger holds no earlier known-good version of {alias!r} in {cloud!r} to roll "
            "back to"
        )
    return stack[-2].version, stack[-1].seq
