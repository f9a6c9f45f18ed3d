"""Settings shared by every runtime mode. All environment reading happens here, through env.py."""

from datetime import timedelta
from pathlib import Path

import structlog
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from config.settings.env import env_bool, env_database, env_int, env_list, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent

SECRET_KEY = env_str("DJANGO_SECRET_KEY", "insecure-dev-key-change-me-" + "x" * 24)
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from our static files: no CDN in a closed network
    "simple_history",
    "guardian",
    "auditlog",
    "django_structlog",
    "studies",
    "queries",
    "sdv",
    "deviations",
    "agents",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_structlog.middlewares.RequestMiddleware",
    # Attributes history rows to the user of the request (21 CFR Part 11: who).
    "simple_history.middleware.HistoryRequestMiddleware",
    "auditlog.middleware.AuditlogMiddleware",
    # Idempotency-Key on API POSTs (after authentication: keys are kept per account).
    "config.idempotency.IdempotencyMiddleware",
    # Errors raised before DRF's handler (request parsing limits): the API's error shape.
    "config.api.ApiExceptionMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env_database("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# Seconds a connection is reused (0: one per request or task). Production defaults to 60.
DATABASES["default"]["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 0, minimum=0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A web process, an in-process worker and the tests share one file: wait for locks, don't fail.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "studies.backends.LockoutModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
LOGIN_LOCKOUT_ATTEMPTS = env_int("LOGIN_LOCKOUT_ATTEMPTS", 5, minimum=1)
LOGIN_LOCKOUT_MINUTES = env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1)
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "study-list"
LOGOUT_REDIRECT_URL = "login"
# Part 11 / Annex 11: an idle session times out.
SESSION_COOKIE_AGE = env_int("SESSION_IDLE_TIMEOUT", 30 * 60, minimum=60)
SESSION_SAVE_EVERY_REQUEST = True
SESSION_COOKIE_HTTPONLY = True

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- API ---------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # JWT first, so an unauthenticated request answers 401 with WWW-Authenticate, not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["config.api.FilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "config.api.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "config.schema.AutoSchema",
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("JWT_ACCESS_MINUTES", 15, minimum=1)),
    "REFRESH_TOKEN_LIFETIME": timedelta(hours=env_int("JWT_REFRESH_HOURS", 24, minimum=1)),
    "UPDATE_LAST_LOGIN": True,
}
# The API's version (info.version of the schema): the major number is the /api/v<major>/ prefix;
# docs/api.md has the changelog and the deprecation policy.
API_VERSION = "1.1.0"
SPECTACULAR_SETTINGS = {
    "TITLE": "TrialOps API",
    "DESCRIPTION": "Clinical-trial data operations: studies, EDC data, queries, deviations. Errors answer "
                   "{\"message\": ..., \"extra\": {...}}; see docs/api.md for idempotent writes, ETags, "
                   "incremental pulls and the deprecation policy.",
    "VERSION": API_VERSION,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "config.schema.links_add"],
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # One name for the marking-group choices, whether a field is called recipient or recipient_role
    "ENUM_NAME_OVERRIDES": {
        "RecipientEnum": "queries.models.Query.Recipient",
        "QueryCategoryEnum": "queries.models.Query.Category",
        "RunStatusEnum": "agents.models.Status",
        "TierEnum": "sdv.models.SiteRiskAssessment.Tier",
        "ResolutionEnum": "queries.models.Query.Resolution",
        "DeviationCategoryEnum": "deviations.models.Deviation.Category",
        "DeviationStatusEnum": "deviations.models.Deviation.Status",
        "DeviationSourceEnum": "deviations.models.Deviation.Source",
        "DeviationResolutionEnum": "deviations.models.Deviation.Resolution",
        "RootCauseEnum": "deviations.models.RootCause",
        "CapaStatusEnum": "deviations.models.Capa.Status",
        "SourceVerdictEnum": "sdv.models.SourceVerification.Verdict",
    },
}

# --- Audit -------------------------------------------------------------------------------------
SIMPLE_HISTORY_HISTORY_CHANGE_REASON_USE_TEXT_FIELD = True
SIMPLE_HISTORY_REVERT_DISABLED = True  # history is evidence; it is never "reverted" through admin
AUDITLOG_INCLUDE_ALL_MODELS = False
GUARDIAN_RAISE_403 = False
ANONYMOUS_USER_NAME = None  # no guardian anonymous user: nothing is readable without an account

# --- Celery ------------------------------------------------------------------------------------
REDIS_URL = env_url("REDIS_URL", ("redis", "rediss"))
# Embedded mode (no broker configured): the served app runs tasks in-process. Tests and the demo's
# ping workflow still go through a real worker on the in-memory broker (see agents/worker.py).
TASKS_IN_PROCESS = env_bool("TRIALOPS_TASKS_IN_PROCESS", REDIS_URL is None)
CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"
CELERY_RESULT_BACKEND = REDIS_URL or "cache+memory://"
CELERY_TASK_ALWAYS_EAGER = TASKS_IN_PROCESS
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 540, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 600, minimum=1)
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES = (Queue("default"), Queue("ocr"), Queue("llm"))
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
if CELERY_TASK_SOFT_TIME_LIMIT >= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured("CELERY_TASK_SOFT_TIME_LIMIT must be lower than CELERY_TASK_TIME_LIMIT")

# Agent step claims: a step whose worker died is re-claimed after its lease runs out.
# The lease outlives the task's hard time limit, so a step still running is never claimed twice.
AGENT_STEP_LEASE_SECONDS = env_int("AGENT_STEP_LEASE_SECONDS", CELERY_TASK_TIME_LIMIT + 60, minimum=5)
if AGENT_STEP_LEASE_SECONDS <= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured("AGENT_STEP_LEASE_SECONDS must be longer than CELERY_TASK_TIME_LIMIT")

# --- Logging: structured JSON, one request id carried into Celery tasks -------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOG_FORMAT = env_str("LOG_FORMAT", "json")
if LOG_FORMAT not in ("json", "console"):
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r} must be 'json' or 'console'")
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ImproperlyConfigured(f"LOG_LEVEL={LOG_LEVEL!r} is not a logging level")
DJANGO_STRUCTLOG_CELERY_ENABLED = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "structured": {
            "()": structlog.stdlib.ProcessorFormatter,
            "processor": (
                structlog.processors.JSONRenderer()
                if LOG_FORMAT == "json"
                else structlog.dev.ConsoleRenderer(colors=False)
            ),
            "foreign_pre_chain": [
                structlog.contextvars.merge_contextvars,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.stdlib.add_logger_name,
                structlog.stdlib.add_log_level,
            ],
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "django_structlog": {"level": LOG_LEVEL},
    },
}

structlog.configure(
    processors=[
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.filter_by_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    cache_logger_on_first_use=True,
)

# --- Imports ----------------------------------------------------------------------------------
IMPORT_MAX_BYTES = env_int("IMPORT_MAX_BYTES", 512 * 1024 * 1024, minimum=1024)

# --- Product ------------------------------------------------------------------------------------
DEMO_PASSWORD = env_str("DEMO_PASSWORD", "demo")
SHARED_DATA_DIR = Path(env_str("TRIALOPS_SHARED_DATA", str(BASE_DIR.parent / "shared" / "data")))
# Whether an import starts the built-in workflows declaring on_import (data_review, risk_review);
# the test settings turn it off, and the tests that check the wiring turn it back on.
BUILTIN_WORKFLOWS_ON_IMPORT = True
# Absolute links in e-mails (query reminders) point here.
TRIALOPS_BASE_URL = (env_url("TRIALOPS_BASE_URL", ("http", "https")) or "http://localhost:8000").rstrip("/")

# --- Monitoring plan maps (sdv.monitoring) ----------------------------------------------------------
# Map tiles of the monitoring plan's map, a Leaflet URL template such as
# https://tile.openstreetmap.org/{z}/{x}/{y}.png; empty: no tiles (sites and trips on a plain
# background, so the page works in a closed network). Its attribution is shown on the map.
MONITORING_MAP_TILE_URL = env_str("MONITORING_MAP_TILE_URL", "") or ""
MONITORING_MAP_TILE_ATTRIBUTION = env_str("MONITORING_MAP_TILE_ATTRIBUTION", "") or ""

# --- E-mail (query reminders and escalations) ---------------------------------------------------
# No EMAIL_HOST: messages go to the console (the worker's log), so a dev set-up works without a mail
# server; set EMAIL_HOST (or EMAIL_BACKEND) to send. Tests use Django's locmem backend.
EMAIL_HOST = env_str("EMAIL_HOST", "") or ""
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "") or (
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "") or ""
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "TrialOps <no-reply@trialops.localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Vendor EDC connections (studies.edc) -----------------------------------------------------
# Credentials are named per connection by its prefix (EdcConnection.credentials_env), e.g.
# TRIALOPS_EDC_ACME_PASSWORD or TRIALOPS_EDC_ACME_PASSWORD_FILE (a mounted secret file, read at use).
# They are collected here, the one place that reads the environment; "SECRETS" in the name keeps
# them out of Django's debug pages.
from config.settings.env import env as _env  # noqa: E402

EDC_SECRETS = {name: value for name, value in _env.ENVIRON.items() if name.startswith("TRIALOPS_EDC_")}
EDC_HTTP_TIMEOUT_SECONDS = env_int("EDC_HTTP_TIMEOUT_SECONDS", 60, minimum=1)
EDC_SYNC_CHECK_SECONDS = env_int("EDC_SYNC_CHECK_SECONDS", 300, minimum=10)
EDC_WEBHOOK_MAX_AGE_SECONDS = env_int("EDC_WEBHOOK_MAX_AGE_SECONDS", 300, minimum=1)
CELERY_BEAT_SCHEDULE = {
    **globals().get("CELERY_BEAT_SCHEDULE", {}),
    "edc-sync-due": {"task": "studies.edc_sync_due", "schedule": EDC_SYNC_CHECK_SECONDS},
    "imports-fail-stale": {"task": "studies.imports_fail_stale", "schedule": 15 * 60},
    "idempotency-keys-purge": {"task": "studies.idempotency_keys_purge", "schedule": 60 * 60},
}
# Idempotency-Key (config/idempotency.py): how long an answer is replayed, and how long a request
# in progress holds its key before it counts as abandoned (longer than any request may run).
IDEMPOTENCY_KEY_HOURS = 24
IDEMPOTENCY_IN_PROGRESS_SECONDS = 600

# --- LLM service (agents.llm) -------------------------------------------------------------------
# No key (neither variable set): every call is answered by the offline provider. The key is read
# from OPENAI_API_KEY or, at use, from the secret file OPENAI_API_KEY_FILE names; it is never logged
# ("KEY" in the setting names keeps it out of Django's debug pages).
OPENAI_API_KEY = env_str("OPENAI_API_KEY", "") or ""
OPENAI_API_KEY_FILE = env_str("OPENAI_API_KEY_FILE", "") or ""
LLM_MODEL = env_str("LLM_MODEL", "gpt-4o-mini")
# Unset: api.openai.com. Set it for Azure OpenAI or any OpenAI-compatible server (vLLM, Ollama, ...).
LLM_BASE_URL = env_url("LLM_BASE_URL", ("http", "https"))
LLM_TIMEOUT_SECONDS = env_int("LLM_TIMEOUT_SECONDS", 30, minimum=1)
LLM_MAX_ATTEMPTS = env_int("LLM_MAX_ATTEMPTS", 3, minimum=1)
# Per study and calendar month (UTC); once spent, calls of that study go to the offline provider.
LLM_MONTHLY_BUDGET_USD = env_int("LLM_MONTHLY_BUDGET_USD", 50, minimum=0)
# Exponential backoff with full jitter between attempts: random(0, min(max, base * 2**n)) seconds.
LLM_RETRY_BASE_SECONDS = 1.0
LLM_RETRY_MAX_SECONDS = 20.0
# USD per 1,000 tokens, from the vendor's price list; a model missing here costs 0 (and is logged).
LLM_PRICES = {
    "gpt-4o-mini": {"in": "0.00015", "out": "0.0006"},
    "gpt-4o": {"in": "0.0025", "out": "0.01"},
    "gpt-4.1-mini": {"in": "0.0004", "out": "0.0016"},
    "gpt-4.1": {"in": "0.002", "out": "0.008"},
}

# --- Agent framework sweeps (agents.tasks) --------------------------------------------------------
# A step whose worker died keeps its lease until AGENT_STEP_LEASE_SECONDS; the sweeper then resumes
# its run (the broker may hold the dead worker's unacknowledged message for hours).
AGENT_STEP_SWEEP_SECONDS = env_int("AGENT_STEP_SWEEP_SECONDS", 60, minimum=5)
CELERY_BEAT_SCHEDULE = {
    **CELERY_BEAT_SCHEDULE,
    "agents-steps-reclaim-expired": {"task": "agents.steps_reclaim_expired", "schedule": AGENT_STEP_SWEEP_SECONDS},
}

# --- Source data verification (sdv.documents, sdv.verification) ---------------------------------
# Uploads: refused over these limits before anything is stored. Pillow refuses an image of more
# pixels than SDV_MAX_IMAGE_PIXELS before decoding it (a decompression bomb), and a PDF page that
# would render to more is refused the same way.
SDV_UPLOAD_MAX_BYTES = env_int("SDV_UPLOAD_MAX_BYTES", 25 * 1024 * 1024, minimum=1024)
SDV_UPLOAD_MAX_PAGES = env_int("SDV_UPLOAD_MAX_PAGES", 50, minimum=1)
SDV_MAX_IMAGE_PIXELS = env_int("SDV_MAX_IMAGE_PIXELS", 60_000_000, minimum=1_000_000)
# Pages without a text layer are rendered at this resolution for OCR (and for the crops).
SDV_RENDER_DPI = env_int("SDV_RENDER_DPI", 200, minimum=72)
# Below this OCR confidence (0-100) a value that differs from the EDC is "needs review", not a discrepancy.
SDV_REVIEW_CONFIDENCE = env_int("SDV_REVIEW_CONFIDENCE", 60, minimum=0)
# Pages read at once by a DataVerification run (one tesseract process each); 0: one per core.
SDV_OCR_WORKERS = env_int("SDV_OCR_WORKERS", 0, minimum=0)
TESSERACT_CMD = env_str("TESSERACT_CMD", "tesseract")
# An upload starts the source_verification workflow (the test settings turn it off; tests that
# check the wiring turn it back on).
SDV_VERIFY_ON_UPLOAD = True
# Source documents carry patient data: they must never be reachable as static files.
for _static in (STATIC_ROOT, *STATICFILES_DIRS):
    _static, _media = Path(_static).resolve(), MEDIA_ROOT.resolve()
    if _media == _static or _static in _media.parents or _media in _static.parents:
        raise ImproperlyConfigured(f"MEDIA_ROOT={MEDIA_ROOT} must not be inside, or contain, the static files at "
                                   f"{_static}")
