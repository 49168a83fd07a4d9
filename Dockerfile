# Production image: gunicorn on 8080, non-root, JWT verification on by default.
#
# The build stage installs the locked runtime dependencies (uv.lock, postgres extra, no dev
# tools) and this package as a wheel into /opt/venv; only that venv reaches the final
# image, so the service runs from the installed package, rules included (no source tree).
#
# The base image is not pinned by digest here: no registry could be asked for the current
# one when this was written. Pin it at build time (both stages use it):
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest> ...
# with the digest from `docker buildx imagetools inspect python:3.11-slim`.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build

ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

WORKDIR /src
COPY requirements-uv.txt ./
RUN pip install --no-cache-dir --require-hashes -r requirements-uv.txt
COPY pyproject.toml setup.py uv.lock README.md ./
COPY cds_service ./cds_service
COPY cards ./cards
COPY fhir_examples ./fhir_examples
RUN uv sync --frozen --no-dev --extra postgres --no-editable --no-cache \
        --python /usr/local/bin/python

FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    CDS_HOST=0.0.0.0 \
    CDS_PORT=8080 \
    CDS_ENV=production \
    CDS_AUTH_MODE=jwt \
    CDS_DATA_DIR=/var/lib/cds-service

COPY --from=build /opt/venv /opt/venv
RUN useradd --system --uid 10001 --home-dir /nonexistent cds \
    && mkdir -p /var/lib/cds-service \
    && chown cds /var/lib/cds-service

USER cds
WORKDIR /var/lib/cds-service
EXPOSE 8080
# The port the service listens on (CDS_PORT, also when `docker run -e CDS_PORT=...` moves it).
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import os,sys,urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CDS_PORT', '8080'), timeout=2).status == 200 else 1)"
CMD ["sh", "-c", "cds-service check-rules && exec gunicorn -c python:cds_service.web.gunicorn_conf 'cds_service.web.app:create_app()'"]
