"""The serving image and the serving manifests, checked without a registry or a cluster: the
image checks the server's liveness on its port, installs only the server's packages (pinned as in
the lock), and the server imports nothing else (what every image must: test_docker_images.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from pipelines.core.params import load_params

DOCKERFILE = Path("docker") / "serving.Dockerfile"
REQUIREMENTS = Path("docker") / "requirements-serving.txt"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==", 1)
            pins[_norm(name)] = version.split()[0]
    return pins


def test_the_serving_image_checks_the_servers_liveness_on_its_port(
    project_root: Path,
) -> None:
    # pinned base, unprivileged user, no secrets, hadolint: tests/unit/test_docker_images.py
    text = (project_root / DOCKERFILE).read_text()
    assert re.search(r"^USER\s+10001$", text, re.MULTILINE)
    assert "useradd --create-home --uid 10001 recflow" in text
    healthcheck = re.search(r"^HEALTHCHECK .*\n\s+CMD (.*)$", text, re.MULTILINE)
    assert healthcheck and "/healthz" in healthcheck.group(1)
    port = load_params(project_root / "params.yaml").deploy.kubernetes.port
    assert f"127.0.0.1:{port}/healthz" in text and f"EXPOSE {port}" in text
    assert 'ENTRYPOINT ["recflow"]' in text
    for copied in ("pipelines/", "params.yaml", str(REQUIREMENTS)):
        assert copied in text


def test_the_serving_packages_are_pinned_as_in_the_lock(project_root: Path) -> None:
    serving = _pins(project_root / REQUIREMENTS)
    lock = _pins(project_root / "requirements.lock")
    assert serving and {name: lock.get(name) for name in serving} == serving
    for heavy in ("torch", "apache-airflow", "dvc", "great-expectations", "pandas"):
        assert heavy not in serving


GUARD = """
import importlib.abc, importlib.metadata as md, re, sys
from pathlib import Path
allowed = set(sys.argv[1].split(","))
owners_of = md.packages_distributions()
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()

# absent from the image: what a missing package raises (optional imports catch it)
class NotInTheImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        owners = {norm(d) for d in owners_of.get(top, [])}
        if top not in ("pipelines", "recflow_airflow") and owners and not owners & allowed:
            owned = ", ".join(sorted(owners))
            raise ModuleNotFoundError(f"{name} ({owned}) is not in the serving image")
        return None

sys.meta_path.insert(0, NotInTheImage())
import pipelines.cli, pipelines.commands.serve, pipelines.serving.server.launch
import pipelines.rollout.fleet.app, pipelines.serving.server.app
import uvicorn.loops.uvloop, uvicorn.protocols.http.httptools_impl
from pipelines.serving.server.bundle import load_bundle
bundle = load_bundle("v1", Path(sys.argv[2]), threads=1)
print("served", bundle.artifact)
"""


def test_the_server_imports_nothing_the_image_lacks(
    project_root: Path, served_folder: Path
) -> None:
    allowed = ",".join(_pins(project_root / REQUIREMENTS))
    done = subprocess.run(
        [sys.executable, "-c", GUARD, allowed, str(served_folder)],
        cwd=project_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "served onnxruntime-fp32" in done.stdout
