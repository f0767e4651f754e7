"""Names from outside are checked against strict patterns before they become keys."""

from __future__ import annotations

import pytest

from pipelines.registry.errors import BadName
from pipelines.registry.names import (
    check_alias,
    check_cloud,
    check_key,
    check_version_id,
    file_key,
    ledger_key,
    ledger_seq,
)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../../etc/passwd", "path separators and '..' are not allowed"),
        ("0123456789abcdef/..", "path separators and '..' are not allowed"),
        ("abc/def", "path separators and '..' are not allowed"),
        ("0123456789abcde\n", "control characters are not allowed"),
        ("0123456789abcd\x00f", "control characters are not allowed"),
        ("0123456789ABCDEF", "is not a version id"),
        ("0123", "is not a version id"),
        ("", "is not a version id"),
    ],
)
def test_bad_version_ids_are_refused_with_the_reason(name: str, message: str) -> None:
    with pytest.raises(BadName, match="is not a version id") as caught:
        check_version_id(name)
    assert message in str(caught.value)
    # shown escaped: a control character never reaches the terminal raw
    assert "\n" not in str(caught.value) and "\x00" not in str(caught.value)


def test_a_version_id_passes() -> None:
    assert check_version_id("0123456789abcdef") == "0123456789abcdef"


@pytest.mark.parametrize("alias", ["Production", "prod/../x", "", "a" * 40, "canary\t", "-x"])
def test_bad_alias_names_are_refused(alias: str) -> None:
    with pytest.raises(BadName, match="is not an alias name"):
        check_alias(alias)


@pytest.mark.parametrize("alias", ["production", "canary", "previous", "eu-west-canary"])
def test_alias_names_pass(alias: str) -> None:
    assert check_alias(alias) == alias


def test_unknown_cloud_is_refused() -> None:
    with pytest.raises(BadName, match="the clouds are private, public"):
        check_cloud("azure")


@pytest.mark.parametrize(
    "key", ["versions/../x", "/abs", "a//b", ".meta/x", "a/.hidden", "a/b\x7f", "a\\b"]
)
def test_keys_must_be_plain_relative_paths(key: str) -> None:
    with pytest.raises(BadName, match="is not a plain relative path"):
        check_key(key)


def test_file_keys_refuse_traversal_inside_a_version() -> None:
    with pytest.raises(BadName):
        file_key("0123456789abcdef", "../../aliases/production.json")


def test_ledger_keys_round_trip() -> None:
    assert ledger_key(7) == "ledger/000000000007.json"
    assert ledger_seq("ledger/000000000007.json") == 7
    assert ledger_seq("ledger/7.json") is None
    with pytest.raises(BadName):
        ledger_key(0)
