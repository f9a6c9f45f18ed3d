# One image for web, worker and beat (docker-compose.yml picks the command).
# Not built by CI: see README.md, "docker compose".

# --- builder: wheels for every production requirement ------------------------------------------
FROM python:3.11-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /build
COPY requirements/ requirements/
RUN pip wheel --wheel-dir /wheels -r requirements/production.txt

# --- runtime -----------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production \
    MEDIA_ROOT=/app/media
# tesseract reads scanned source documents (the DataVerification agent, on the ocr queue).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system trialops \
    && useradd --system --gid trialops --home-dir /app --no-create-home --shell /usr/sbin/nologin trialops
WORKDIR /app
COPY requirements/ requirements/
COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels -r requirements/production.txt && rm -rf /wheels
COPY . .
# Static files are collected at build time; the settings need a complete environment to load,
# so dummy values are given here (nothing is connected to).
RUN DJANGO_SECRET_KEY=build-only-not-a-secret-build-only-not-a-secret \
    DATABASE_URL=postgres://build@localhost:5432/build \
    REDIS_URL=redis://localhost:6379/0 \
    python manage.py collectstatic --noinput \
    && mkdir -p /app/media && chown trialops:trialops /app/media
USER trialops
EXPOSE 8000
# /health answers without touching the database; the host header must be in DJANGO_ALLOWED_HOSTS.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]
# Worker processes: gunicorn reads WEB_CONCURRENCY (default 1).
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--access-logfile", "-", "--timeout", "60"]
