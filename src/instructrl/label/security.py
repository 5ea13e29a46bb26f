"""Access tokens, session keys, CSRF tokens and safe export paths.

Access tokens and session keys are 256-bit random strings, so a plain SHA-256 is enough to store them
(unlike passwords they cannot be guessed from a dictionary, and a fast deterministic hash lets the
server look a token up by its hash). Only hashes are stored; a token is shown once, when created.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path

from instructrl.errors import InstructRLError

TOKEN_PREFIX = "irl_"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def new_token() -> str:
    """A fresh access token (shown to the admin once)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def same_secret(a: str | None, b: str | None) -> bool:
    """Constant-time comparison; False when either side is missing."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


def check_name(name: str, what: str = "labeler name") -> str:
    """Names become file names in split exports, so they are restricted to a safe alphabet."""
    if not NAME_RE.match(name or ""):
        raise InstructRLError(
            f"{what} {name!r}: use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return name


def safe_subpath(root: str | Path, relative: str) -> Path:
    """``root/relative`` resolved, refusing anything that would land outside ``root``.

    Absolute paths, ``..`` components and symlinks pointing out of the folder are all refused.
    """
    base = Path(root).resolve()
    if not relative or Path(relative).is_absolute() or "\\" in relative or "\x00" in relative:
        raise InstructRLError(f"export name {relative!r} must be a relative path inside {base}")
    target = (base / relative).resolve()
    if target != base and base not in target.parents:
        raise InstructRLError(f"export name {relative!r} leaves the export folder {base}")
    return target
