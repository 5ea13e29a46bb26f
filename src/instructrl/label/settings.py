"""The app's settings: the default database, and how ``serve`` hands its flags to each worker process.

``uvicorn --factory`` builds the app in every worker with no arguments, so ``instructrl label serve``
writes its flags into the environment (``to_env``) and each worker reads them back (``from_env``).
Standard library only: the CLI reads ``DEFAULT_DB`` while it builds its parser, before any of the
web or database stack is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_DB = "sqlite:///labels.db"
DB_ENV = "INSTRUCTRL_LABEL_DB"  # also the default of every command's --db
EXPORT_DIR_ENV = "INSTRUCTRL_LABEL_EXPORT_DIR"
SECURE_COOKIES_ENV = "INSTRUCTRL_LABEL_SECURE_COOKIES"


def default_db() -> str:
    return os.environ.get(DB_ENV, DEFAULT_DB)


@dataclass(frozen=True)
class ServeSettings:
    db: str
    export_dir: str = "exports"
    secure_cookies: bool = False

    def to_env(self) -> None:
        os.environ[DB_ENV] = self.db
        os.environ[EXPORT_DIR_ENV] = os.path.abspath(self.export_dir)
        os.environ[SECURE_COOKIES_ENV] = "1" if self.secure_cookies else "0"

    @classmethod
    def from_env(cls) -> ServeSettings:
        return cls(
            db=default_db(),
            export_dir=os.environ.get(EXPORT_DIR_ENV, "exports"),
            secure_cookies=os.environ.get(SECURE_COOKIES_ENV) == "1",
        )
