# recflow Airflow image: Airflow's components (scheduler, DAG processor, triggerer, API server)
# with the project's DAGs, plugins and lock; the tasks run the stage commands of dvc.yaml in the
# scheduler's local executor. docker/compose.yaml runs one container per component.
# Build from the repository root:
#   docker build -f docker/airflow.Dockerfile -t recflow-airflow:0.1.0 .
# The metadata database is given by AIRFLOW__DATABASE__SQL_ALCHEMY_CONN (compose: Postgres,
# through the driver of docker/requirements-airflow.txt). No password, key or token is in the
# image: the login, the stores' credentials and the fleets' tokens come from the environment.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GX_ANALYTICS_ENABLED=false \
    DVC_NO_ANALYTICS=1 \
    UV_NO_CACHE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/recflow/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/recflow/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRFLOW__CORE__EXECUTOR=LocalExecutor \
    RECFLOW_PROJECT_ROOT=/opt/recflow

# git: DVC, which every task runs, needs it
RUN apt-get update \
    && apt-get install -y --no-install-recommends git=1:2.39.5-0+deb12u3 \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir uv==0.13.9

WORKDIR /opt/recflow
COPY requirements.lock pyproject.toml README.md ./
COPY docker/requirements-airflow.txt docker/
# the lock pins torch's CPU build (2.13.0+cpu), published on PyTorch's CPU index
RUN uv pip install --python /opt/venv/bin/python \
        --extra-index-url https://download.pytorch.org/whl/cpu \
        --index-strategy unsafe-best-match \
        -r requirements.lock -r docker/requirements-airflow.txt

COPY pipelines/ pipelines/
COPY plugins/ plugins/
COPY dags/ dags/
COPY dvc.yaml params.yaml ./
RUN uv pip install --python /opt/venv/bin/python --no-deps -e . \
    && useradd --create-home --uid 10001 recflow \
    && mkdir -p /opt/airflow \
    && chown -R recflow /opt/recflow /opt/airflow

USER 10001
EXPOSE 8080
# the API server's health endpoint (its port); a component without one reports through it
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=5 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/api/v2/monitor/health', timeout=5).status != 200)"]
ENTRYPOINT ["airflow"]
CMD ["version"]
