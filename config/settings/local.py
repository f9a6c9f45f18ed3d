"""Developer and demo settings: the embedded default (SQLite, tasks in-process)."""

from config.settings.base import *  # noqa: F403
from config.settings.env import env_bool

DEBUG = env_bool("DJANGO_DEBUG", True)

# Serve static files from the app directories without collectstatic (whitenoise's dev mode).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
