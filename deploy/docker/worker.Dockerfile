# syntax=docker/dockerfile:1
# SynthGuard stream worker. Build from the repository root:
#   docker build -f deploy/docker/worker.Dockerfile -t synthguard-worker:0.1.0 .
# Runs as uid 10001 with a read-only root filesystem (the Deployment mounts /tmp).
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements-worker.txt /src/
RUN /opt/venv/bin/pip install -r /src/requirements-worker.txt
COPY pyproject.toml README.md /src/
COPY serving /src/serving
COPY stream /src/stream
RUN /opt/venv/bin/pip install --no-deps /src

FROM python:3.11-slim
RUN groupadd --gid 10001 synthguard \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin synthguard
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SYNTHGUARD_METRICS__HOST=0.0.0.0 \
    SYNTHGUARD_METRICS__PORT=9108
USER 10001:10001
EXPOSE 9108
ENTRYPOINT ["python", "-m", "stream.worker_main"]
