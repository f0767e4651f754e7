"""The loopback S3-compatible server of the embedded default (moto's server, with conditional
writes made atomic: ``pipelines.registry.loopback_server``).

``make run`` serves the public store from it: objects live in the server's memory, which is
acceptable because the public store is a replica that replication rebuilds from the private
record. :func:`loopback_s3` starts the server on a free port of 127.0.0.1, waits until it
answers, creates the buckets of the stores marked ``loopback: true``, and gives the environment
that child processes need (the endpoint of each such store, and throwaway credentials); it
stops the server on exit.

    python -m pipelines.registry.loopback [--params params.yaml] -- recflow register

runs one command with the server up.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import boto3

from pipelines.core.errors import RecflowError
from pipelines.core.params import StoresConfig, load_params
from pipelines.core.waiting import wait_until
from pipelines.registry.names import CLOUDS
from pipelines.registry.stores.credentials import endpoint_env

log = logging.getLogger("recflow.registry.loopback")

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Loopback:
    """A running loopback server: its endpoint, and the environment for child processes."""

    endpoint: str
    env: dict[str, str]


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def serve(
    *,
    host: str = HOST,
    startup_timeout_s: float = 30.0,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Run the loopback server on a free port of ``host``; yields its endpoint URL.

    ``env`` is added to the server's environment (moto's own settings, such as
    ``INITIAL_NO_AUTH_ACTION_COUNT`` to make it check credentials).

    Raises:
        RecflowError: It did not answer within ``startup_timeout_s`` (its log is in the message).
    """
    port = free_port(host)
    endpoint = f"http://{host}:{port}"
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelines.registry.loopback_server",
                "-H",
                host,
                "-p",
                str(port),
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        try:

            def started() -> str:
                if _answers(endpoint):
                    return "answers"
                return "exited" if process.poll() is not None else ""

            if wait_until(started, timeout_s=startup_timeout_s, interval_s=0.1) != "answers":
                output.seek(0)
                tail = output.read().decode("utf-8", "replace")[-2000:]
                raise RecflowError(f"the loopback S3 server did not start at {endpoint}:\n{tail}")
            log.info("loopback S3 server at %s (pid %d)", endpoint, process.pid)
            yield endpoint
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.info("loopback S3 server at %s stopped", endpoint)


@contextlib.contextmanager
def loopback_s3(stores: StoresConfig, *, host: str = HOST) -> Iterator[Loopback]:
    """Serve every store marked ``loopback: true`` from one loopback server, buckets created.

    The environment it gives points ``RECFLOW_STORE_<NAME>_ENDPOINT_URL`` of those stores at
    the server and sets throwaway ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (made up
    here, valid nowhere else); stores with their own ``profile`` or ``connection`` keep theirs.
    """
    with serve(host=host) as endpoint:
        env, _ = prepare_buckets(stores, endpoint)
        yield Loopback(endpoint, env)


def prepare_buckets(stores: StoresConfig, endpoint: str) -> tuple[dict[str, str], list[str]]:
    """Create the buckets of the ``loopback: true`` stores on the server at ``endpoint``.

    Returns:
        The environment that points those stores at the server, with throwaway credentials
        made up here (valid nowhere else), and the buckets created.
    """
    names = [name for name in CLOUDS if getattr(stores, name).loopback]
    env = {
        "AWS_ACCESS_KEY_ID": f"loopback{secrets.token_hex(6)}",
        "AWS_SECRET_ACCESS_KEY": secrets.token_hex(20),
        **{endpoint_env(name): endpoint for name in names},
    }
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    buckets = []
    for name in names:
        cfg = getattr(stores, name)
        bucket = cfg.url.removeprefix("s3://").split("/", 1)[0]
        extra = {}
        if cfg.region and cfg.region != "us-east-1":
            extra["CreateBucketConfiguration"] = {"LocationConstraint": cfg.region}
        client.create_bucket(Bucket=bucket, **extra)
        buckets.append(bucket)
    return env, buckets


@contextlib.contextmanager
def loopback_unless_given(stores: StoresConfig) -> Iterator[dict[str, str]]:
    """The environment of the loopback stores: the caller's, or a loopback server's.

    When the environment already names an endpoint for every store marked ``loopback: true``
    (an S3-compatible server started by someone else, with its credentials), nothing is
    started and nothing is added; otherwise :func:`loopback_s3` serves them for the block.
    """
    names = [name for name in CLOUDS if getattr(stores, name).loopback]
    if all(os.environ.get(endpoint_env(name)) for name in names):
        yield {}
        return
    with loopback_s3(stores) as server:
        yield server.env


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipelines.registry.loopback [--params P] -- COMMAND...``."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.registry.loopback",
        description="Run COMMAND with the loopback S3 server of the embedded default up.",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command to run")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with loopback_s3(load_params(args.params).stores) as server:
        return subprocess.run(command, env={**os.environ, **server.env}, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
