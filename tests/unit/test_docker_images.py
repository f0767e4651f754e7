"""Every image of docker/ and the compose file, checked without a container engine: each
Dockerfile passes hadolint and, parsed, builds on pinned bases, runs as a user other than root,
checks its health, copies nothing secret; the GPU trainer installs a CUDA torch and TensorRT
rather than the lock's CPU torch; compose publishes every port on 127.0.0.1 only and runs the
images the Dockerfiles build, with no password of its own.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

DOCKER = PROJECT_ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("*Dockerfile"))
# what must never enter an image
SECRET_PATTERNS = (".env", ".pem", ".key", "id_rsa", "credentials", ".aws", ".airflow", "stores")
SECRET_WORDS = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY\b|CREDENTIAL", re.IGNORECASE)


@dataclass
class Stage:
    """One stage of a Dockerfile: its base, name and instructions (keyword, arguments)."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(path: Path) -> list[Stage]:
    """The stages of a Dockerfile (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), re.sub(r"\s+", " ", args.strip())
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        else:
            assert stages, f"{path.name}: {keyword} before FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def lineage(stages: list[Stage], stage: Stage) -> list[Stage]:
    """``stage`` and the stages it builds on, nearest first."""
    by_name = {s.name: s for s in stages if s.name}
    chain = [stage]
    while chain[-1].base in by_name:
        chain.append(by_name[chain[-1].base])
    return chain


def targets(stages: list[Stage]) -> list[Stage]:
    """The stages nothing else builds on: the images one builds."""
    bases = {s.base for s in stages}
    return [s for s in stages if s.name is None or s.name not in bases]


def build_tags(path: Path) -> set[str]:
    """The ``-t`` tags of the ``docker build`` lines in a Dockerfile's header."""
    return set(
        re.findall(rf"docker build -f docker/{re.escape(path.name)} .*?-t (\S+)", path.read_text())
    )


def test_docker_holds_the_airflow_trainer_and_server_images() -> None:
    assert {p.name for p in DOCKERFILES} == {
        "Dockerfile",
        "airflow.Dockerfile",
        "serving.Dockerfile",
    }
    trainer = {s.name for s in targets(parse(DOCKER / "Dockerfile"))}
    assert {"cpu", "gpu"} <= trainer


def test_every_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    done = subprocess.run(
        [str(hadolint), *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_bases_are_pinned_to_a_version(path: Path) -> None:
    stages = parse(path)
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.base in names:
            continue
        _, _, tag = stage.base.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), (
            f"{path.name}: base {stage.base} is not pinned to a version"
        )


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_image_runs_unprivileged_and_checks_its_health(path: Path) -> None:
    stages = parse(path)
    for target in targets(stages):
        chain = lineage(stages, target)
        users = [u for s in chain for u in s.args("USER")]
        assert users and users[0].split(":")[0] not in {"root", "0"}, (
            f"{path.name} ({target.name}): the image must not run as root"
        )
        checks = [c for s in chain for c in s.args("HEALTHCHECK")]
        assert checks and checks[0] != "NONE", f"{path.name} ({target.name}): no HEALTHCHECK"
        assert re.search(r"--interval=\S+ .*CMD \[", checks[0])
        assert any(kw == "ENTRYPOINT" for s in chain for kw, _ in s.instructions)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_nothing_secret_is_copied_and_no_secret_is_baked_in(path: Path) -> None:
    for stage in parse(path):
        assert not stage.args("ADD"), f"{path.name}: ADD (a URL or an archive); use COPY"
        for args in stage.args("COPY"):
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            assert sources and "." not in sources, f"{path.name}: COPY of the whole context"
            for source in sources:
                assert not any(p in source for p in SECRET_PATTERNS), f"{path.name}: {source}"
        for args in stage.args("ENV") + stage.args("ARG"):
            assert not SECRET_WORDS.search(args), f"{path.name}: a secret in ENV/ARG: {args}"
    # the build context is the repository root: a BuildKit ignore file beside each Dockerfile
    ignored = (path.parent / f"{path.name}.dockerignore").read_text().splitlines()
    for pattern in ("**/.env", "**/*.pem", "**/*.key", "**/credentials", ".airflow", "stores"):
        assert pattern in ignored, f"{path.name}.dockerignore lacks {pattern}"


def test_the_trainer_images_install_the_lock_cpu_and_cuda_torch_with_tensorrt_gpu() -> None:
    stages = parse(DOCKER / "Dockerfile")
    by_name = {s.name: s for s in stages}
    cpu_runs = " ".join(r for s in lineage(stages, by_name["cpu"]) for r in s.args("RUN"))
    assert "-r requirements.lock" in cpu_runs and "download.pytorch.org/whl/cpu" in cpu_runs
    gpu_runs = " ".join(r for s in lineage(stages, by_name["gpu"]) for r in s.args("RUN"))
    # the lock without its CPU torch, then the CUDA torch and TensorRT; no CPU index
    assert "grep -v '^torch==' requirements.lock" in gpu_runs
    assert "-r docker/requirements-gpu.txt" in gpu_runs
    assert "whl/cpu" not in gpu_runs
    # the build itself refuses a CPU torch
    assert "assert torch.version.cuda" in gpu_runs
    gpu = (DOCKER / "requirements-gpu.txt").read_text()
    pins = dict(line.split("==") for line in gpu.splitlines() if line and not line.startswith("#"))
    # PyPI's Linux torch is the CUDA build; "+cpu" would be the CPU one
    assert pins["torch"] == "2.13.0"
    # the engine builder uses the TensorRT 10 API that 11.x removes
    assert pins["tensorrt-cu13"].startswith("10.")


def test_the_airflow_image_holds_the_dags_plugins_and_lock() -> None:
    (stage,) = parse(DOCKER / "airflow.Dockerfile")
    copied = " ".join(stage.args("COPY"))
    for source in ("requirements.lock", "pipelines/", "plugins/", "dags/", "dvc.yaml"):
        assert source in copied
    env = " ".join(stage.args("ENV"))
    assert "AIRFLOW__CORE__DAGS_FOLDER=/opt/recflow/dags" in env
    assert "AIRFLOW__CORE__PLUGINS_FOLDER=/opt/recflow/plugins" in env
    assert "AIRFLOW__CORE__LOAD_EXAMPLES=False" in env
    assert "/api/v2/monitor/health" in stage.args("HEALTHCHECK")[0]


# ---------------------------------------------------------------------------------- compose
def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return loaded


def test_compose_publishes_every_port_on_127_0_0_1_only() -> None:
    published = 0
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and re.fullmatch(r"127\.0\.0\.1:\d+:\d+", port), (
                f"{name}: port {port!r} is not bound to 127.0.0.1"
            )
            published += 1
        assert service.get("network_mode") != "host", name
    assert published >= 5


def test_compose_runs_the_images_the_dockerfiles_build() -> None:
    tags = {tag: path for path in DOCKERFILES for tag in build_tags(path)}
    assert "recflow-airflow:0.1.0" in tags and "recflow-serving:0.1.0" in tags
    services = _compose()["services"]
    for name, service in services.items():
        image = service["image"]
        build = service.get("build")
        if build is not None:
            dockerfile = PROJECT_ROOT / "docker" / Path(build["dockerfile"]).relative_to("docker")
            assert (DOCKER / build["context"]).resolve() == PROJECT_ROOT
            assert tags.get(image) == dockerfile, f"{name}: {image} is not built by {dockerfile}"
        elif image.startswith("recflow"):
            assert image in tags, f"{name}: no Dockerfile builds {image}"
        else:
            _, _, tag = image.partition(":")
            assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: {image}"
    # Airflow's components, the store, both fleets and Prometheus with the project's rules
    assert {"airflow-api-server", "airflow-scheduler", "airflow-triggerer"} <= set(services)
    assert {"airflow-dag-processor", "s3", "fleet-private", "fleet-public", "prometheus"} <= set(
        services
    )
    mounts = " ".join(services["prometheus"]["volumes"])
    assert "./prometheus/alerts.yml:" in mounts
    # no log server: the scheduler and the triggerer skip it
    for component in ("airflow-scheduler", "airflow-triggerer"):
        assert "--skip-serve-logs" in services[component]["command"]


def test_compose_has_no_password_of_its_own() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    for name, service in _compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_WORDS.search(key) and "FILE" not in key:
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(value)), (
                    f"{name}: {key} must come from the environment (${{VAR:?...}})"
                )
    for secret in re.findall(r"\$\{(\w+):?-", text):
        assert not SECRET_WORDS.search(secret), f"a default for {secret}"
