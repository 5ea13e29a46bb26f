"""What ``mixed_precision: auto`` means on this machine: bf16 autocast where it is clearly faster, else fp32.

On a CUDA GPU, ``auto`` is bf16 when the GPU supports it (unchanged). On a CPU it depends on the CPU:
bf16 matmuls are fast only with native bf16 instructions, and without them much slower than fp32. Measured
on a 2048x2048 matmul: with AMX (Intel Sapphire Rapids and later) bf16 ran about 6x fp32, with AVX512-BF16
(AMD Zen 4) about 4x, and on a CPU with neither (oneDNN converts to fp32 and back) about 5x *slower*.

The decision on a CPU (:func:`cpu_bf16`), first rule that applies:

1. ``INSTRUCTRL_CPU_BF16=1`` forces bf16, ``=0`` forces fp32 (for tests and for users who know better).
2. An x86 CPU whose flags (``/proc/cpuinfo``) have neither ``amx_bf16`` nor ``avx512_bf16``: fp32, without a
   probe (bf16 would be emulated; the hypervisor that hides a flag also keeps oneDNN from using it).
3. Otherwise (native bf16 flags, or a CPU whose flags say nothing about bf16, such as ARM), a short timed
   probe decides: an ``autocast`` linear of a realistic small shape (256 tokens x 512 -> 1024, a projection
   of a width-512 model, 0.27 GFLOP) in fp32 and in bf16, each timed for about 0.1 s (best of at least 3),
   at the thread count the run uses; bf16 is chosen only when at least :data:`MIN_SPEEDUP` (1.3x) faster.
   The probe's inputs come from their own generator: the run's random streams are not touched.
   Under several processes (torchrun: ``WORLD_SIZE`` > 1) no probe runs, so that every rank decides the
   same: a cached probe result if there is one, else the flags alone (native bf16 flags -> bf16).

The probe's result is cached per machine in ``cpu_precision.json`` under ``$INSTRUCTRL_CACHE_DIR``, else
``$XDG_CACHE_HOME/instructrl``, else ``~/.cache/instructrl``, keyed by CPU model, bf16 flags, torch version
and thread count; a cache folder that is missing, read-only or holds a broken file never stops a run (the
probe then runs again). Each decision is made once per process (the same for every model a process loads,
as an evaluation's fair comparison needs) and logged once on the ``instructrl`` logger, e.g.
``mixed precision auto -> bf16 (CPU has AMX; probe 5.8x fp32)``.

bf16 autocast casts matmul inputs only: weights stay fp32 (AdamW's master copy), and the numerics that need
fp32 get it where they are computed (losses and log-softmax over the vocabulary upcast bf16 logits,
``losses._scaled_logits``; values and reward scores are upcast before any loss; transformers' ``generate``
upcasts each step's logits to fp32 before sampling).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from instructrl.errors import ConfigError

log = logging.getLogger("instructrl")

ENV_FORCE = "INSTRUCTRL_CPU_BF16"
ENV_CACHE_DIR = "INSTRUCTRL_CACHE_DIR"
CACHE_FILE = "cpu_precision.json"
MIN_SPEEDUP = 1.3  # bf16 only when clearly faster: below this, autocast's casts and bf16 rounding are not worth it
PROBE_SHAPE = (256, 512, 1024)  # tokens x in -> out: a projection of a width-512 model, 0.27 GFLOP a call
PROBE_SECONDS = 0.1  # per dtype, after one warm-up call
NATIVE_FLAGS = {"amx_bf16": "AMX", "avx512_bf16": "AVX512-BF16"}  # /proc/cpuinfo flag -> name in messages
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class CPUInfo:
    model: str  # "Intel(R) Xeon(R) Platinum 8480+"
    x86: bool  # flags are x86 flags: no native bf16 flag means no native bf16
    native: tuple[str, ...]  # the native bf16 flags present, e.g. ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class Probe:
    fp32_gflops: float
    bf16_gflops: float
    threads: int

    @property
    def speedup(self) -> float:
        return self.bf16_gflops / self.fp32_gflops if self.fp32_gflops > 0 else 0.0


@dataclass(frozen=True)
class Decision:
    bf16: bool
    reason: str  # why, for the log line: "CPU has AMX; probe 5.8x fp32"
    probe: Probe | None = None

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "no"


def cpu_info(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> CPUInfo:
    """The CPU's model name and native bf16 flags (from ``/proc/cpuinfo``; elsewhere, the platform's name and
    no flags, which leaves the decision to the probe)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    model, flags, x86 = "", set(), False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:  # x86 (ARM says "Features")
            x86 = True
            flags = set(value.split())
    if not model:
        model = platform.processor() or platform.machine() or "unknown CPU"
    return CPUInfo(model, x86, tuple(f for f in NATIVE_FLAGS if f in flags))


def _describe(info: CPUInfo) -> str:
    return " and ".join(NATIVE_FLAGS[f] for f in info.native)


# ---------------------------------------------------------------------------------------------- the probe
def probe(
    threads: int | None = None, shape: tuple[int, int, int] = PROBE_SHAPE, seconds: float = PROBE_SECONDS
) -> Probe:
    """GFLOP/s of an fp32 linear and of the same linear under CPU bf16 autocast (the casts included, as in a
    run), best of at least 3 calls over about ``seconds`` each, with ``threads`` torch threads (default: as
    set). Under a second in all on any CPU; the global random state is left alone."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        m, k, n = shape
        g = torch.Generator().manual_seed(0)
        x, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)
        rates = {}
        for name, amp in (("fp32", contextlib.nullcontext), ("bf16", _bf16_autocast)):
            with torch.no_grad(), amp():
                torch.nn.functional.linear(x, w)  # warm-up: oneDNN picks and caches its kernel
                best, calls, start = float("inf"), 0, time.perf_counter()
                while calls < 3 or time.perf_counter() - start < seconds:
                    t = time.perf_counter()
                    torch.nn.functional.linear(x, w)
                    best = min(best, time.perf_counter() - t)
                    calls += 1
            rates[name] = 2 * m * k * n / max(best, 1e-9) / 1e9
        return Probe(round(rates["fp32"], 1), round(rates["bf16"], 1), torch.get_num_threads())
    finally:
        torch.set_num_threads(previous)


def _bf16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


# ---------------------------------------------------------------------------------------------- the cache
def cache_dir() -> Path:
    """``$INSTRUCTRL_CACHE_DIR``, else ``$XDG_CACHE_HOME/instructrl``, else ``~/.cache/instructrl``."""
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "instructrl"


def cache_key(info: CPUInfo, threads: int) -> str:
    """One entry per machine and setting that changes the answer: CPU model and bf16 flags, torch, threads."""
    return (
        f"{info.model} | bf16 flags: {','.join(info.native) or 'none'} | torch {torch.__version__} | {threads} threads"
    )


def _read_cache() -> dict:
    try:
        data = json.loads((cache_dir() / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable or broken: as if empty
        return {}
    return data if isinstance(data, dict) else {}


def cached_probe(key: str) -> Probe | None:
    entry = _read_cache().get(key)
    try:
        return Probe(float(entry["fp32_gflops"]), float(entry["bf16_gflops"]), int(entry["threads"]))
    except (TypeError, KeyError, ValueError):
        return None


def store_probe(key: str, result: Probe) -> bool:
    """Add ``result`` to the cache (atomically); False, and nothing else, when the folder cannot be written."""
    folder = cache_dir()
    data = _read_cache()
    data[key] = {**asdict(result), "speedup": round(result.speedup, 2), "measured": datetime.date.today().isoformat()}
    tmp = folder / f"{CACHE_FILE}.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, folder / CACHE_FILE)
        return True
    except OSError as e:
        log.debug("cpu precision cache not written (%s): %s", folder, e)
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False


# ---------------------------------------------------------------------------------------------- the decision
def forced() -> bool | None:
    """``INSTRUCTRL_CPU_BF16``: True (1/true/yes/on), False (0/false/no/off) or None when unset or empty."""
    value = os.environ.get(ENV_FORCE, "").strip().lower()
    if not value:
        return None
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ConfigError(f"{ENV_FORCE}={os.environ[ENV_FORCE]!r}: expected 1 (bf16 autocast on the CPU) or 0 (fp32)")


def cpu_bf16(info: CPUInfo | None = None) -> Decision:
    """Whether bf16 autocast pays on this CPU (the rules in the module docstring)."""
    force = forced()
    if force is not None:
        return Decision(force, f"{ENV_FORCE}={os.environ[ENV_FORCE].strip()}")
    info = info or cpu_info()
    if info.x86 and not info.native:
        return Decision(False, "CPU has neither AMX nor AVX512-BF16, where bf16 matmuls are emulated and slower")
    has = f"CPU has {_describe(info)}; " if info.native else ""
    threads = torch.get_num_threads()
    key = cache_key(info, threads)
    result, source = cached_probe(key), "cached probe"
    if result is None and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        # several processes: every rank must decide alike, so no rank measures (they would disturb each other)
        if info.native:
            return Decision(True, f"CPU has {_describe(info)}; several processes: flags alone, no probe")
        return Decision(False, "no native bf16 flag known and several processes: no probe, fp32")
    if result is None:
        result, source = probe(), "probe"
        store_probe(key, result)
    speed = f"{source} {result.speedup:.1f}x fp32"
    if result.speedup >= MIN_SPEEDUP:
        return Decision(True, has + speed, result)
    return Decision(False, f"{has}{speed}, below the {MIN_SPEEDUP}x that bf16 needs", result)


_decided: dict[tuple, str] = {}


def resolve_auto(device_type: str) -> str:
    """``mixed_precision: auto`` on ``device_type`` ('cuda' or 'cpu'): 'bf16' or 'no'. Decided once per process
    and device (and per ``INSTRUCTRL_CPU_BF16`` value), and logged once."""
    key = (device_type, os.environ.get(ENV_FORCE, ""), torch.get_num_threads())
    if key not in _decided:
        if device_type == "cuda":
            bf16 = torch.cuda.is_bf16_supported()
            decision = Decision(bf16, "CUDA GPU with bf16" if bf16 else "CUDA GPU without bf16")
        else:
            decision = cpu_bf16()
        _decided[key] = decision.precision
        if os.environ.get("RANK", "0") in ("", "0"):  # one line per run, from the main process
            log.info(
                "mixed precision auto -> %s (%s%s)",
                decision.precision,
                "" if decision.bf16 else "fp32: ",
                decision.reason,
            )
    return _decided[key]


def resolve(setting: str, device_type: str) -> str:
    """A ``mixed_precision`` setting as it runs on ``device_type``: 'auto' resolved, any other setting as given."""
    return resolve_auto(device_type) if setting == "auto" else setting


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision ('bf16', 'fp16'); None for 'no' (fp32)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


@contextlib.contextmanager
def autocast(precision: str, device_type: str) -> Iterator[None]:
    """Autocast in the resolved ``precision`` on ``device_type``, nothing for 'no'."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device_type, dtype=dtype):
        yield
