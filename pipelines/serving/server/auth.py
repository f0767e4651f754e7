"""Client and admin tokens, read from the environment and never written or logged."""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass

API_TOKENS_ENV = "RECFLOW_API_TOKENS"
ADMIN_TOKEN_ENV = "RECFLOW_ADMIN_TOKEN"


@dataclass(frozen=True)
class Tokens:
    """The client tokens and the admin token."""

    clients: tuple[str, ...]
    admin: str | None

    def __repr__(self) -> str:  # a token never reaches a log line through this object
        return f"Tokens(clients={len(self.clients)}, admin={self.admin is not None})"

    @classmethod
    def from_env(cls) -> Tokens:
        """``RECFLOW_API_TOKENS`` (comma-separated) and ``RECFLOW_ADMIN_TOKEN``."""
        raw = os.environ.get(API_TOKENS_ENV, "")
        clients = tuple(t.strip() for t in raw.split(",") if t.strip())
        return cls(clients, os.environ.get(ADMIN_TOKEN_ENV) or None)

    def is_client(self, token: str) -> bool:
        """Whether ``token`` is a client token (every one compared in constant time)."""
        found = False
        for known in self.clients:
            found |= hmac.compare_digest(token.encode(), known.encode())
        return found

    def is_admin(self, token: str) -> bool:
        """Whether ``token`` is the admin token."""
        return self.admin is not None and hmac.compare_digest(token.encode(), self.admin.encode())
