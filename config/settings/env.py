"""The one place that reads the environment.

Every helper fails loudly: a malformed value stops start-up with a message that names the
variable, instead of silently falling back to a default (healthchecks' envbool does the same).
"""

import environ
from django.core.exceptions import ImproperlyConfigured

env = environ.Env()

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_bool(name: str, default: bool) -> bool:
    raw = env.str(name, default=None)
    # An empty value means "not set": it must not silently turn a security default off.
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = env.str(name, default=None)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be >= {minimum}")
    return value


def env_str(name: str, default: str | None = None) -> str | None:
    return env.str(name, default=default)


def env_list(name: str, default: list[str]) -> list[str]:
    raw = env.str(name, default=None)
    if raw is None:
        return default
    return [part.strip() for part in raw.split(",") if part.strip()]


def _scheme(raw: str) -> str:
    return raw.split("://", 1)[0] if "://" in raw else ""


def env_database(name: str, default: str) -> dict:
    # Messages name the variable and the scheme only: a URL may carry a password.
    raw = env.str(name, default=default)
    scheme = _scheme(raw)
    if scheme not in environ.Env.DB_SCHEMES:
        raise ImproperlyConfigured(f"{name}: unsupported database scheme {scheme!r} (use postgres:// or sqlite://)")
    try:
        return environ.Env.db_url_config(raw)
    except Exception as exc:  # environ raises several types for a malformed URL
        raise ImproperlyConfigured(f"{name}: not a valid {scheme}:// URL ({type(exc).__name__})") from None


def env_url(name: str, schemes: tuple[str, ...]) -> str | None:
    raw = env.str(name, default=None)
    if raw is None or raw.strip() == "":
        return None
    if _scheme(raw) not in schemes:
        raise ImproperlyConfigured(f"{name}: scheme {_scheme(raw)!r} is not one of {', '.join(schemes)}")
    return raw
