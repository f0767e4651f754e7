"""What can go wrong in the registry, each with a message a person can act on."""

from __future__ import annotations

from pipelines.core.errors import RecflowError


class RegistryError(RecflowError):
    """A registry operation was refused or failed; nothing was half done."""


class BadName(RegistryError):
    """A version, alias, cloud or object name from outside does not match its strict pattern."""


class UnknownVersion(RegistryError):
    """No version of that id in the store (or only a half-written one, which does not count)."""


class UnknownAlias(RegistryError):
    """The alias is not set in that cloud."""


class AliasConflict(RegistryError):
    """Another writer changed the alias between our read and our write; ours was not applied."""

    exit_code = 75  # EX_TEMPFAIL: read the new state and decide again


class MissingReference(RegistryError):
    """The version holds no monitoring reference (it was registered before versions kept one)."""


class NothingToRollBack(RegistryError):
    """The ledger holds no earlier known-good version for the alias."""


class PolicyViolation(RegistryError):
    """An object may not be written to that store (it would leave the private cloud)."""


class StoreError(RegistryError):
    """A store failed or refused an operation."""


class ObjectMissing(StoreError):
    """An object the registry expects is not in the store."""


class ChecksumMismatch(StoreError):
    """An object's bytes do not match its recorded sha256: tampered with or corrupted."""


class LedgerBroken(ChecksumMismatch):
    """The ledger's hash chain is broken, or an entry disagrees with the anchor that records it:
    an entry was changed or removed. The message names the first such entry."""


class ConditionFailed(StoreError):
    """A conditional write found the object other than expected (HTTP 412)."""


class StoreUnreachable(StoreError):
    """The store's endpoint did not answer within the bounded retries."""


class BucketMissing(StoreError):
    """The store's bucket does not exist."""


class AccessDenied(StoreError):
    """The store refused the credentials, or there are none."""


class StoreFull(StoreError):
    """No room left on the file store's volume."""


class TransferInterrupted(StoreError):
    """An upload or download stopped part-way; no partial object was left visible."""
