# Production image: gunicorn on 8080, non-root, JWT verification on by default.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CDS_HOST=0.0.0.0 \
    CDS_PORT=8080 \
    CDS_ENV=production \
    CDS_AUTH_MODE=jwt \
    CDS_CARDS_DIR=/app/cards \
    CDS_DATA_DIR=/var/lib/cds-service

WORKDIR /app
COPY pyproject.toml README.md ./
COPY cds_service ./cds_service
COPY cards ./cards
RUN pip install --no-cache-dir '.[postgres]' \
    && useradd --system --uid 10001 --home-dir /nonexistent cds \
    && mkdir -p /var/lib/cds-service \
    && chown cds /var/lib/cds-service

USER cds
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
CMD ["sh", "-c", "cds-service check-rules && exec gunicorn -c python:cds_service.gunicorn_conf 'cds_service.app:create_app()'"]
