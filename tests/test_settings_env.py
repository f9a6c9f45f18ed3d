"""A malformed environment value stops start-up with a message naming the variable (STYLE.md 11).

Each case starts a fresh interpreter: settings are read once per process."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

SETUP = "import django; django.setup()"


def start(env_overrides: dict, settings_module="config.settings.local", drop=()) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env.update(env_overrides, DJANGO_SETTINGS_MODULE=settings_module)
    return subprocess.run([sys.executable, "-c", SETUP], cwd=settings.BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=60)


def test_it_starts_with_the_environment_as_given():
    result = start({})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name, value", [
    ("DJANGO_DEBUG", "maybe"),
    ("SESSION_IDLE_TIMEOUT", "abc"),
    ("SESSION_IDLE_TIMEOUT", "5"),  # below the minimum
    ("DATABASE_URL", "nonsense://x"),
    ("REDIS_URL", "http://x"),
    ("JWT_ACCESS_MINUTES", "ten"),
    ("LOG_FORMAT", "xml"),
])
def test_a_malformed_value_stops_start_up_naming_the_variable(name, value):
    result = start({name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr.strip().splitlines()[-1]


def test_production_refuses_to_start_without_a_secret_key():
    result = start({"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/trialops",
                    "REDIS_URL": "redis://127.0.0.1:6379/0"},
                   settings_module="config.settings.production", drop=("DJANGO_SECRET_KEY",))
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr.strip().splitlines()[-1]


def test_production_refuses_a_short_secret_key():
    result = start({"DJANGO_SECRET_KEY": "short", "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/trialops",
                    "REDIS_URL": "redis://127.0.0.1:6379/0"}, settings_module="config.settings.production")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_production_starts_with_a_complete_environment():
    result = start({"DJANGO_SECRET_KEY": "k" * 50, "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/trialops",
                    "REDIS_URL": "redis://127.0.0.1:6379/0"}, settings_module="config.settings.production")
    assert result.returncode == 0, result.stderr


def test_every_variable_the_settings_read_is_documented_in_the_readme():
    settings_dir = Path(settings.BASE_DIR) / "config" / "settings"
    read = set()
    for module in settings_dir.glob("*.py"):
        if module.name != "env.py":
            read |= set(re.findall(r"\benv_\w+\(\s*\"([A-Z][A-Z0-9_]+)\"", module.read_text()))
    assert "DATABASE_URL" in read  # the pattern still matches how settings read the environment
    readme = (Path(settings.BASE_DIR) / "README.md").read_text()
    assert not {name for name in read if f"| `{name}` |" not in readme}
