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

# Imports do not start the built-in on_import workflows (data_review, risk_review) unless a test
# asks for it: their runs would outlive the test that imported and meet the next one's database.
BUILTIN_WORKFLOWS_ON_IMPORT = False

# Uploading a source document does not start the source_verification workflow unless a test asks.
SDV_VERIFY_ON_UPLOAD = False

# SQLite: a test database in a file, not Django's default shared-cache memory database. In shared
# cache a table lock is SQLITE_LOCKED at once, without the busy timeout, so the tests' Celery worker
# threads and live servers met "database table is locked"; a file waits for the lock like the demo.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    import os
    import tempfile

    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": os.path.join(tempfile.gettempdir(), f"trialops-test-{os.getpid()}.sqlite3")}
