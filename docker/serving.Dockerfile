# recflow serving image: the inference server, `recflow serve --cloud <cloud> --version <id>`,
# as the serving manifests run it (recflow deploy manifests; pipelines/rollout/kubernetes.py).
# Build from the repository root:
#   docker build -f docker/serving.Dockerfile -t recflow-serving:0.1.0 .
# Only the server's packages (docker/requirements-serving.txt, pinned as in requirements.lock):
# no torch, Airflow or DVC. Tokens and the pseudonymization key come from the environment.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_NO_CACHE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir uv==0.13.9

WORKDIR /opt/recflow
COPY docker/requirements-serving.txt docker/
RUN uv pip install --python /opt/venv/bin/python -r docker/requirements-serving.txt

COPY pyproject.toml README.md params.yaml ./
COPY pipelines/ pipelines/
COPY plugins/ plugins/
RUN uv pip install --python /opt/venv/bin/python --no-deps . \
    && useradd --create-home --uid 10001 recflow

USER 10001
EXPOSE 8000
# the liveness endpoint, as the Deployment's probe asks it (no curl in the slim image)
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["recflow"]
CMD ["serve", "--help"]
