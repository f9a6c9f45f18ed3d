"""Test settings: SQLite by default, PostgreSQL when DATABASE_URL is set; a real worker, never eager."""

from config.settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed; never in production
# Tests start a real Celery worker (celery.contrib.testing.worker.start_worker): eager mode
# would test nothing (STYLE.md).
CELERY_TASK_ALWAYS_EAGER = False
TASKS_IN_PROCESS = False
LOGGING["root"]["level"] = "WARNING"  # noqa: F405

# Serve static files from the app directories without collectstatic (whitenoise's dev mode).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
