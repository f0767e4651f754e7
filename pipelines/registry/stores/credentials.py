"""Where a store's credentials come from: the environment, an AWS profile, or an Airflow
connection exported as ``AIRFLOW_CONN_<ID>`` (Airflow's own convention for connections in the
environment; this module never imports Airflow). Never from ``params.yaml``.

:func:`redact` removes the credentials' values from any text before it is logged or raised.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
from botocore.exceptions import BotoCoreError, ProfileNotFound

from pipelines.core.params import StoreConfig
from pipelines.registry.errors import AccessDenied

ENDPOINT_ENV = "RECFLOW_STORE_{name}_ENDPOINT_URL"


def endpoint_env(name: str) -> str:
    """The environment variable that overrides store ``name``'s endpoint URL."""
    return ENDPOINT_ENV.format(name=name.upper())


def _connection(conn_id: str) -> dict[str, Any]:
    """Login, password and extras of the Airflow connection ``conn_id`` from the environment."""
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"
    raw = os.environ.get(variable)
    if not raw:
        raise AccessDenied(
            f"Airflow connection {conn_id!r} is not in the environment ({variable} is not set)"
        )
    if raw.lstrip().startswith("{"):
        try:
            document = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise AccessDenied(f"{variable} is not valid JSON (line {exc.lineno})") from None
        extra = document.get("extra") or {}
        if isinstance(extra, str):
            extra = json.loads(extra or "{}")
        return {"login": document.get("login"), "password": document.get("password"), **extra}
    parts = urlsplit(raw)
    extra = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    return {
        "login": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        **extra,
    }


def session_for(name: str, cfg: StoreConfig) -> tuple[boto3.Session, str | None]:
    """A boto3 session with store ``name``'s credentials, and its endpoint URL.

    The endpoint is, in this order: ``RECFLOW_STORE_<NAME>_ENDPOINT_URL``, the config's
    ``endpoint_url``, the Airflow connection's ``endpoint_url`` extra; None means AWS.

    Raises:
        AccessDenied: The profile or connection named in the config does not exist.
    """
    endpoint = os.environ.get(endpoint_env(name)) or cfg.endpoint_url
    if cfg.connection is not None:
        conn = _connection(cfg.connection)
        session = boto3.Session(
            aws_access_key_id=conn.get("login") or conn.get("aws_access_key_id"),
            aws_secret_access_key=conn.get("password") or conn.get("aws_secret_access_key"),
            aws_session_token=conn.get("aws_session_token"),
            region_name=cfg.region or conn.get("region_name"),
        )
        return session, endpoint or conn.get("endpoint_url")
    try:
        return boto3.Session(profile_name=cfg.profile, region_name=cfg.region), endpoint
    except ProfileNotFound:
        raise AccessDenied(f"store {name!r}: AWS profile {cfg.profile!r} does not exist") from None


def secrets_of(session: boto3.Session) -> list[str]:
    """The credential values of ``session``, longest first, for :func:`redact`."""
    try:
        creds = session.get_credentials()
    except BotoCoreError:
        return []
    if creds is None:
        return []
    frozen = creds.get_frozen_credentials()
    values = [frozen.access_key, frozen.secret_key, frozen.token]
    return sorted((v for v in values if v and len(v) >= 4), key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every value of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
