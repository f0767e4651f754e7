"""The ASGI application of one worker (Starlette, msgspec for JSON).

Starlette on uvicorn with msgspec decoding and checking a request in one pass was measured
against FastAPI with pydantic models and against granian (see ``benchmarks/bench_serving.py``):
the HTTP and JSON layers are most of a request's cost, the model call a fraction of a
millisecond.

Public: ``GET /healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``. Clients:
``POST /recommend`` with ``Authorization: Bearer <token>`` (``RECFLOW_API_TOKENS``). Admin
(``RECFLOW_ADMIN_TOKEN``): ``GET /admin/state``, ``POST /admin/load``, ``/admin/canary``,
``/admin/shadow/start``, ``/admin/shadow/stop``, ``/admin/promote``, ``/admin/rollback``,
``/admin/unload``.
Every refusal is a JSON ``{"error", "detail", "field"}`` whose detail names the problem;
tokens are never logged or echoed.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipelines.core.names import BadVersionName, check_version_name
from pipelines.core.params import ServeConfig
from pipelines.serving.server import admin as ops
from pipelines.serving.server.auth import ADMIN_TOKEN_ENV, Tokens
from pipelines.serving.server.metrics import Metrics
from pipelines.serving.server.pseudonyms import KeyedHash, Pseudonymizer
from pipelines.serving.server.requestlog import RequestLog, worker_name
from pipelines.serving.server.routing import RateLimiter, retry_after
from pipelines.serving.server.schema import (
    CanaryBody,
    LoadBody,
    PromoteBody,
    ShadowBody,
    UnloadBody,
    explain,
    openapi,
    request_struct,
)
from pipelines.serving.server.service import NotReady, Service
from pipelines.serving.server.sources import ModelSource, SourceError, VersionFolder
from pipelines.serving.server.state import RUN_DIR_ENV, SETTINGS

log = logging.getLogger("recflow.serve")

_ENCODE = msgspec.json.Encoder().encode
_JSON = "application/json"


class Refused(Exception):
    """A request refused with ``status``; ``detail`` names the problem."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.field = status, error, detail, field
        self.headers = headers or {}


def _refusal(exc: Refused) -> Response:
    body = {"error": exc.error, "detail": exc.detail, "field": exc.field}
    return Response(_ENCODE(body), exc.status, headers=exc.headers, media_type=_JSON)


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Refused(
            401,
            "unauthorized",
            "Authorization header missing: send 'Bearer <token>'",
            "Authorization",
            {"WWW-Authenticate": "Bearer"},
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refused(
            401,
            "unauthorized",
            "Authorization header is not 'Bearer <token>'",
            "Authorization",
            {"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


async def _read_json_body(request: Request, limit: int) -> bytes:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != _JSON:
        raise Refused(
            415,
            "unsupported media type",
            f"Content-Type must be application/json, not {media[:60] or 'missing'!r}",
            "Content-Type",
        )
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise Refused(
            413, "body too large", f"body of {length[:20]} bytes exceeds {limit} bytes", "body"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, "body too large", f"body exceeds {limit} bytes", "body")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        detail, field = explain(exc)
        raise Refused(422, "invalid request", detail, field) from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        reason = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise Refused(400, "malformed body", f"body is not valid JSON: {reason}", "body") from exc


def build_app(
    cfg: ServeConfig,
    run_dir: Path,
    tokens: Tokens,
    *,
    source: ModelSource | None = None,
    pseudonymize: Pseudonymizer | None = None,
    workers: int = 1,
    clock: Callable[[], float] = time.monotonic,
) -> Starlette:
    """The application of one worker.

    Args:
        cfg: The ``serve`` section.
        run_dir: The run folder with the desired state (see ``state``).
        tokens: Client and admin tokens.
        source: Where ``/admin/load`` fetches versions from (None: no source).
        pseudonymize: The keyed hash of user ids for the request log (required when the
            log is on).
        workers: Worker processes of the server: each enforces its share of the rate limit.
        clock: Seconds on a monotonic clock, for the rate limit and the cache's time to live
            (a test passes a fake one).
    """
    metrics = Metrics()
    request_log = None
    if cfg.request_log.enabled:
        if pseudonymize is None:
            raise ValueError("the request log needs a pseudonymizer")
        request_log = RequestLog(
            cfg.request_log.dir, cfg.request_log.window_s, cfg.request_log.max_rows, worker_name()
        )
    service = Service(cfg, run_dir, metrics, pseudonymize, request_log, clock=clock)
    admin = ops.Admin(service, source, workers)
    decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(request_struct(cfg.limits))
    limiter = RateLimiter(
        cfg.rate_limit.requests_per_s / workers,
        max(1.0, cfg.rate_limit.burst / workers),
        clock=clock,
    )
    schema = json.dumps(openapi(cfg.limits)).encode()
    limit = cfg.limits.max_body_bytes

    def refused(version: str = "none", arm: str = "none") -> Callable[[Refused], Response]:
        def answer(exc: Refused) -> Response:
            metrics.requests.labels(version, arm, str(exc.status)).inc()
            return _refusal(exc)

        return answer

    count_refusal = refused()

    async def recommend(request: Request) -> Response:
        started = time.perf_counter()
        try:
            token = _bearer(request)
            if not tokens.is_client(token):
                raise Refused(
                    403 if tokens.is_admin(token) else 401,
                    "forbidden" if tokens.is_admin(token) else "unauthorized",
                    "the admin token may not call /recommend"
                    if tokens.is_admin(token)
                    else "unknown token",
                    "Authorization",
                    None if tokens.is_admin(token) else {"WWW-Authenticate": "Bearer"},
                )
            wait = limiter.acquire(token)
            if wait:
                raise Refused(
                    429,
                    "rate limited",
                    "request rate of this token exceeded",
                    "Authorization",
                    {"Retry-After": retry_after(wait)},
                )
            body = _decode(decoder, await _read_json_body(request, limit))
            answer = await service.recommend(body.user_id, body.history, body.k, started)
        except Refused as exc:
            return count_refusal(exc)
        except NotReady as exc:
            return count_refusal(Refused(503, "not ready", str(exc), None, {"Retry-After": "1"}))
        return Response(answer, media_type=_JSON)

    def admin_route(
        handler: Callable[[Request], Awaitable[dict[str, Any]]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                token = _bearer(request)
                if not tokens.is_admin(token):
                    if tokens.admin is None:
                        raise Refused(
                            403, "forbidden", f"admin API disabled: {ADMIN_TOKEN_ENV} is not set"
                        )
                    if tokens.is_client(token):
                        raise Refused(
                            403,
                            "forbidden",
                            "a client token may not use the admin API",
                            "Authorization",
                        )
                    raise Refused(
                        401,
                        "unauthorized",
                        "unknown token",
                        "Authorization",
                        {"WWW-Authenticate": "Bearer"},
                    )
                payload = await handler(request)
            except Refused as exc:
                return _refusal(exc)
            except ops.AdminRefused as exc:
                return _refusal(Refused(exc.status, "refused", str(exc)))
            except (SourceError, BadVersionName) as exc:
                return _refusal(Refused(422, "invalid request", str(exc), "version"))
            return Response(_ENCODE(payload), media_type=_JSON)

        return endpoint

    async def body_of(request: Request, kind: type[Any]) -> Any:
        return _decode(msgspec.json.Decoder(kind), await _read_json_body(request, limit))

    async def admin_state(request: Request) -> dict[str, Any]:
        return ops.state_report(run_dir)

    async def admin_load(request: Request) -> dict[str, Any]:
        body = await body_of(request, LoadBody)
        return await admin.load(check_version_name(body.version))

    async def admin_canary(request: Request) -> dict[str, Any]:
        body = await body_of(request, CanaryBody)
        if body.version is not None:
            check_version_name(body.version)
        return await admin.apply(ops.set_canary(body.version, body.weight))

    async def admin_shadow_start(request: Request) -> dict[str, Any]:
        body = await body_of(request, ShadowBody)
        return await admin.apply(ops.start_shadow(check_version_name(body.version)))

    async def admin_shadow_stop(request: Request) -> dict[str, Any]:
        return await admin.apply(ops.stop_shadow)

    async def admin_promote(request: Request) -> dict[str, Any]:
        body = await body_of(request, PromoteBody)
        if body.version is not None:
            check_version_name(body.version)
        return await admin.apply(ops.promote(body.version))

    async def admin_rollback(request: Request) -> dict[str, Any]:
        return await admin.apply(ops.rollback)

    async def admin_unload(request: Request) -> dict[str, Any]:
        body = await body_of(request, UnloadBody)
        return await admin.apply(ops.unload(check_version_name(body.version)))

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"alive"}', media_type=_JSON)

    async def readyz(request: Request) -> Response:
        stable = service.arms.stable
        if stable is None:
            return Response(
                _ENCODE({"status": "loading", "error": service.last_error}), 503, media_type=_JSON
            )
        return Response(_ENCODE({"status": "ready", "version": stable.version}), media_type=_JSON)

    async def metrics_text(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    async def openapi_json(request: Request) -> Response:
        return Response(schema, media_type=_JSON)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            detail = (
                f"{request.method[:16]} is not allowed on {request.url.path[:200]}; use {allowed}"
            )
            error = "method not allowed"
        elif exc.status_code == 404:
            detail, error = f"no endpoint {request.url.path[:200]}", "not found"
        else:
            detail, error = str(exc.detail), "bad request"
        return count_refusal(Refused(exc.status_code, error, detail, None, dict(exc.headers or {})))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        # what loaded so far lives as long as the worker: keep it out of every later GC pass
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await service.stop()

    routes = [
        Route("/recommend", recommend, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_text, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/admin/state", admin_route(admin_state), methods=["GET"]),
        Route("/admin/load", admin_route(admin_load), methods=["POST"]),
        Route("/admin/canary", admin_route(admin_canary), methods=["POST"]),
        Route("/admin/shadow/start", admin_route(admin_shadow_start), methods=["POST"]),
        Route("/admin/shadow/stop", admin_route(admin_shadow_stop), methods=["POST"]),
        Route("/admin/promote", admin_route(admin_promote), methods=["POST"]),
        Route("/admin/rollback", admin_route(admin_rollback), methods=["POST"]),
        Route("/admin/unload", admin_route(admin_unload), methods=["POST"]),
    ]
    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error}
    )
    app.state.service = service
    return app


def create_app() -> Starlette:
    """The worker's application, from the run folder the launcher prepared (uvicorn factory)."""
    run_dir = Path(os.environ[RUN_DIR_ENV])
    settings = json.loads((run_dir / SETTINGS).read_text(encoding="utf-8"))
    cfg = ServeConfig.model_validate(settings["config"])
    source = VersionFolder(Path(settings["registry"])) if settings.get("registry") else None
    pseudonymize = KeyedHash.from_env() if cfg.request_log.enabled else None
    return build_app(
        cfg,
        run_dir,
        Tokens.from_env(),
        source=source,
        pseudonymize=pseudonymize,
        workers=int(settings.get("workers", 1)),
    )
