"""moto's S3-compatible server, as ``moto_server`` runs it, with atomic conditional writes.

moto checks a write's ``If-Match`` / ``If-None-Match`` condition and stores the object in two
separate steps, so two conditional writes to one key arriving together could both pass. S3
applies the condition and the write as one step, and the registry's compare-and-set relies on
that. This is moto's own WSGI application served by werkzeug exactly as ``moto_server``
serves it, plus one lock held across every request that carries a condition, which restores
S3's guarantee; plain reads and writes are not serialized.

    python -m pipelines.registry.loopback_server -H 127.0.0.1 -p 5000
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_CONDITIONS = ("HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH")


def atomic_conditions(inner: WSGIApp, lock: AbstractContextManager[Any] | None = None) -> WSGIApp:
    """``inner`` with every conditional write handled under one lock (``lock``, or a new
    ``threading.Lock``)."""
    held = lock if lock is not None else threading.Lock()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        writes = environ.get("REQUEST_METHOD") in ("PUT", "POST", "DELETE")
        if writes and any(environ.get(header) for header in _CONDITIONS):
            with held:
                return list(inner(environ, start_response))
        return inner(environ, start_response)

    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Serve on ``-H HOST -p PORT`` until SIGTERM or SIGINT."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(prog="python -m pipelines.registry.loopback_server")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: sys.exit(0))
    run_simple(
        args.host,
        args.port,
        atomic_conditions(DomainDispatcherApplication(create_backend_app)),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
