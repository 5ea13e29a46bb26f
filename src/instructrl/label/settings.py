"""The app's settings: the default database, the limits, and how ``serve`` hands its flags to each worker.

``uvicorn --factory`` builds the app in every worker with no arguments, so ``instructrl label serve``
writes its flags into the environment (``to_env``) and each worker reads them back (``from_env``).
Standard library only: the CLI reads ``DEFAULT_DB`` while it builds its parser, before any of the
web or database stack is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from instructrl.errors import ConfigError

DEFAULT_DB = "sqlite:///labels.db"
DB_ENV = "INSTRUCTRL_LABEL_DB"  # also the default of every command's --db
EXPORT_DIR_ENV = "INSTRUCTRL_LABEL_EXPORT_DIR"
SECURE_COOKIES_ENV = "INSTRUCTRL_LABEL_SECURE_COOKIES"
MAX_BODY_ENV = "INSTRUCTRL_LABEL_MAX_BODY_BYTES"
SIGN_IN_LIMIT_ENV = "INSTRUCTRL_LABEL_SIGN_IN_LIMIT"
TOKEN_FAILURE_LIMIT_ENV = "INSTRUCTRL_LABEL_TOKEN_FAILURE_LIMIT"

# A request body larger than this is refused with 413 (a long demonstration is a few KiB).
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# Sign-in attempts per minute, per client address and per account (0 turns the limit off).
DEFAULT_SIGN_IN_LIMIT = 20
# Failed bearer tokens per minute per client address before that address is refused (0: off).
DEFAULT_TOKEN_FAILURE_LIMIT = 20
RATE_WINDOW_SECONDS = 60.0


def default_db() -> str:
    return os.environ.get(DB_ENV, DEFAULT_DB)


@dataclass(frozen=True)
class Limits:
    """What one client may send: the request body size and the sign-in and failed-token rates."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    sign_in_per_minute: int = DEFAULT_SIGN_IN_LIMIT
    token_failures_per_minute: int = DEFAULT_TOKEN_FAILURE_LIMIT

    def __post_init__(self) -> None:
        for flag, value, least in (
            ("--max-body-bytes", self.max_body_bytes, 1),
            ("--sign-in-limit", self.sign_in_per_minute, 0),
            ("--token-failure-limit", self.token_failures_per_minute, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{flag} {value!r}: expected a whole number >= {least}")


@dataclass(frozen=True)
class ServeSettings:
    db: str
    export_dir: str = "exports"
    secure_cookies: bool = False
    limits: Limits = Limits()

    def to_env(self) -> None:
        os.environ[DB_ENV] = self.db
        os.environ[EXPORT_DIR_ENV] = os.path.abspath(self.export_dir)
        os.environ[SECURE_COOKIES_ENV] = "1" if self.secure_cookies else "0"
        os.environ[MAX_BODY_ENV] = str(self.limits.max_body_bytes)
        os.environ[SIGN_IN_LIMIT_ENV] = str(self.limits.sign_in_per_minute)
        os.environ[TOKEN_FAILURE_LIMIT_ENV] = str(self.limits.token_failures_per_minute)

    @classmethod
    def from_env(cls) -> ServeSettings:
        return cls(
            db=default_db(),
            export_dir=os.environ.get(EXPORT_DIR_ENV, "exports"),
            secure_cookies=os.environ.get(SECURE_COOKIES_ENV) == "1",
            limits=Limits(
                max_body_bytes=_int_env(MAX_BODY_ENV, DEFAULT_MAX_BODY_BYTES),
                sign_in_per_minute=_int_env(SIGN_IN_LIMIT_ENV, DEFAULT_SIGN_IN_LIMIT),
                token_failures_per_minute=_int_env(TOKEN_FAILURE_LIMIT_ENV, DEFAULT_TOKEN_FAILURE_LIMIT),
            ),
        )


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"${name}={raw!r}: expected a whole number") from None
