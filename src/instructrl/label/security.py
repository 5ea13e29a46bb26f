"""Access tokens, session keys, CSRF tokens, names and ids, rate limits and safe export paths.

Access tokens and session keys are 256-bit random strings, so a plain SHA-256 is enough to store them
(unlike passwords they cannot be guessed from a dictionary, and a fast deterministic hash lets the
server look a token up by its hash). Only hashes are stored; a token is shown once, when created.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path

from instructrl.errors import InstructRLError

TOKEN_PREFIX = "irl_"
# Matched whole (``fullmatch``): ``$`` would also accept a name ending in a newline.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULE = "use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
# Ids are checked before any query sees them: positive, and within the id columns' INTEGER type, which is
# 32-bit on PostgreSQL (SQLite's is 64-bit); a larger id cannot exist, and would make the driver fail.
ID_MAX = 2**31 - 1


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


def check_name(name: object, what: str = "labeler name") -> str:
    """Names (labelers, import tags) become file names in split exports: a safe alphabet, 1-64 characters."""
    if not isinstance(name, str):
        raise InstructRLError(f"{what} must be a string, got {type(name).__name__}")
    if not NAME_RE.fullmatch(name):
        shown = repr(name) if len(name) <= 80 else repr(name[:80]) + f"... ({len(name)} characters)"
        raise InstructRLError(f"{what} {shown}: {NAME_RULE}")
    return name


def check_text(value: str, what: str, max_chars: int | None = None) -> str:
    """Free text (prompts, outputs, demonstrations): any characters a database stores, up to ``max_chars``.

    Newlines and tabs are fine; NUL (PostgreSQL refuses it) and lone surrogates (not UTF-8) are not.
    """
    if "\x00" in value:
        raise InstructRLError(f"{what}: contains a NUL character (\\x00); remove it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InstructRLError(f"{what}: not valid Unicode text (a lone surrogate)") from None
    if max_chars is not None and len(value) > max_chars:
        raise InstructRLError(f"{what}: {len(value)} characters; at most {max_chars}")
    return value


def check_id(value: object, what: str = "id") -> int:
    """A database id: an integer (not a bool) in 1..ID_MAX."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InstructRLError(f"{what} must be a whole number, got {type(value).__name__}")
    if not 1 <= value <= ID_MAX:
        raise InstructRLError(f"{what} {value if value.bit_length() <= 80 else '(huge)'}: must be in 1..{ID_MAX}")
    return value


class RateLimiter:
    """At most ``limit`` events per ``window`` seconds per key (client address, account), in this process.

    A sliding window: each key keeps the times of its recent events. Memory is bounded: at most
    ``max_keys`` keys (the least recently seen is dropped first) and ``limit`` times per key. With
    several worker processes each keeps its own counts, so the effective limit is per worker.
    ``limit`` 0 turns the limiter off.
    """

    def __init__(self, limit: int, window: float = 60.0, max_keys: int = 10_000, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.limit, self.window, self.max_keys, self.clock = limit, window, max_keys, clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()  # the app calls this from its thread pool

    def retry_after(self, key: str) -> int:
        """Seconds until ``key`` may try again (0: now)."""
        if not self.limit:
            return 0
        with self._lock:
            times = self._recent(key, self.clock())
            if times is None or len(times) < self.limit:
                return 0
            return max(1, int(times[0] + self.window - self.clock() + 0.999))

    def hit(self, key: str) -> None:
        """Record one event for ``key``."""
        if not self.limit:
            return
        with self._lock:
            now = self.clock()
            times = self._recent(key, now)
            if times is None:
                times = self._events[key] = deque(maxlen=self.limit)
                while len(self._events) > self.max_keys:
                    self._events.popitem(last=False)
            times.append(now)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._events.get(key)
        if times is None:
            return None
        self._events.move_to_end(key)
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def __len__(self) -> int:
        return len(self._events)


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
