# syntax=docker/dockerfile:1
#
# One image for every cryptoflow service; the command picks the service:
#
#   docker build -t cryptoflow .
#   docker run --rm cryptoflow cryptoflow-extractor
#   docker run --rm cryptoflow cryptoflow-lake-writer        (or cryptoflow-transformer,
#   docker run --rm cryptoflow cryptoflow-warehouse-loader    cryptoflow-exchange-sim)
#
# The services and their dependencies are installed from uv.lock exactly (--locked), without
# the dev group, without the `cryptoflow` CLI (it bundles nats-server and PostgreSQL binaries
# for local runs only) and not editable, so the runtime stage needs only the virtualenv.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

# uv from PyPI, the same way the Makefile bootstraps it; pinned so the lock is read the same.
ARG UV_VERSION=0.13.9
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --disable-pip-version-check "uv==${UV_VERSION}"

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/opt/cryptoflow/venv

WORKDIR /src
# .dockerignore keeps the context to the workspace sources, the lock and the project files.
COPY . .

RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable \
        --package cryptoflow-extractor \
        --package cryptoflow-lake-writer \
        --package cryptoflow-transformer \
        --package cryptoflow-warehouse-loader \
        --package cryptoflow-exchange-sim \
        --package cryptoflow-api


FROM ${PYTHON_IMAGE} AS runtime

ARG CRYPTOFLOW_UID=10001
RUN groupadd --system --gid "${CRYPTOFLOW_UID}" cryptoflow \
    && useradd --system --uid "${CRYPTOFLOW_UID}" --gid cryptoflow --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin cryptoflow

# Same base image and same path as in the build stage, so the venv's interpreter links hold.
COPY --from=build /opt/cryptoflow/venv /opt/cryptoflow/venv

ENV PATH=/opt/cryptoflow/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /tmp
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

# Every service serves /healthz, /readyz and /metrics on <PREFIX>_HTTP_PORT; 8000 by convention
# (set <PREFIX>_HTTP_HOST=0.0.0.0 so it is reachable from outside the container).
EXPOSE 8000

CMD ["sh", "-c", "echo 'usage: run this image with a service command: cryptoflow-extractor, cryptoflow-lake-writer, cryptoflow-transformer, cryptoflow-warehouse-loader or cryptoflow-exchange-sim' >&2; exit 64"]
