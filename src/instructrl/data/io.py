"""Reading records from the files and datasets users already have.

Every stage reads its data through :func:`read_records`, which accepts

* a local ``.jsonl`` file (one JSON object per line; blank lines allowed),
* a local ``.json`` file holding a list of objects,
* a local ``.txt`` file (plain text; documents separated by blank lines -> ``{"text": ...}``),
* anything else ``datasets.load_dataset`` understands: a local ``.csv``/``.parquet`` file, a local
  dataset directory, or a Hub dataset name (``name`` or ``name:split``).

Each record comes back with its location (``file.jsonl:12`` or ``dataset[split][12]``) so later
checks can name exactly where a problem is. Malformed input raises :class:`DataError` naming the file
and line; nothing is dropped silently.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instructrl.errors import DataError

log = logging.getLogger("instructrl.data")

LOCAL_JSON_SUFFIXES = {".jsonl", ".json", ".ndjson"}


@dataclass(frozen=True)
class Record:
    """One input record and where it came from (for error messages)."""

    data: dict[str, Any]
    where: str


def _decode_lines(path: Path) -> Iterable[tuple[int, str]]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                    f"convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8`"
                ) from None


def _read_jsonl(path: Path) -> list[Record]:
    records = []
    for lineno, line in _decode_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        records.append(Record(obj, f"{path}:{lineno}"))
    return records


def _read_json(path: Path) -> list[Record]:
    text = "".join(line for _, line in _decode_lines(path))
    stripped = text.lstrip()
    if stripped.startswith("{") and "\n{" in stripped:  # JSON lines saved as .json
        return _read_jsonl(path)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
    if isinstance(obj, dict):
        obj = [obj]
    if not isinstance(obj, list):
        raise DataError(f"{path}: expected a list of JSON objects, got {type(obj).__name__}")
    out = []
    for i, item in enumerate(obj):
        if not isinstance(item, dict):
            raise DataError(f"{path}[{i}]: expected a JSON object, got {type(item).__name__}")
        out.append(Record(item, f"{path}[{i}]"))
    return out


def _read_txt(path: Path) -> list[Record]:
    docs, current, start = [], [], 1
    for lineno, line in _decode_lines(path):
        if line.strip():
            if not current:
                start = lineno
            current.append(line.rstrip("\n"))
        elif current:
            docs.append(Record({"text": "\n".join(current)}, f"{path}:{start}"))
            current = []
    if current:
        docs.append(Record({"text": "\n".join(current)}, f"{path}:{start}"))
    return docs


def _read_hf_dataset(source: str, split: str) -> list[Record]:
    try:
        import datasets  # only for these sources: importing it takes a second or more, JSONL/JSON/text never need it
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise DataError(f"'{source}': reading it needs the `datasets` package") from None
    name, _, explicit_split = source.partition(":") if not os.path.exists(source) else (source, "", "")
    split = explicit_split or split
    path = Path(name)
    try:
        if path.is_file():
            builder = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".arrow": "arrow"}.get(path.suffix)
            if builder is None:
                raise DataError(
                    f"{path}: unsupported file type '{path.suffix}' "
                    f"(use .jsonl, .json, .txt, .csv, .parquet or a dataset directory)"
                )
            kwargs = {"delimiter": "\t"} if path.suffix == ".tsv" else {}
            ds = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
        elif path.is_dir() and (path / "dataset_info.json").exists():
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[split]
        else:
            ds = datasets.load_dataset(name, split=split)
    except DataError:
        raise
    except Exception as e:  # datasets raises many types for "not found" / offline / bad split
        kind = "directory" if path.is_dir() else "local file or Hub dataset"
        raise DataError(
            f"could not load '{source}' as a {kind}: {type(e).__name__}: {str(e).splitlines()[0]}"
        ) from None
    return [Record(dict(row), f"{name}[{split}][{i}]") for i, row in enumerate(ds)]


def read_records(source: str | os.PathLike, *, split: str = "train", what: str = "data") -> list[Record]:
    """Read every record of a file or dataset. Raises DataError on any malformed input or if empty."""
    source = str(source)
    path = Path(source)
    if path.suffix in LOCAL_JSON_SUFFIXES or path.suffix == ".txt":
        if not path.exists():
            raise DataError(f"{what} file '{source}' does not exist")
        if path.is_dir():
            raise DataError(f"{what} path '{source}' is a directory, expected a file")
        reader = {".jsonl": _read_jsonl, ".ndjson": _read_jsonl, ".json": _read_json, ".txt": _read_txt}[path.suffix]
        records = reader(path)
    else:
        if path.suffix and not path.exists() and os.sep in source:
            raise DataError(f"{what} file '{source}' does not exist")
        records = _read_hf_dataset(source, split)
    if not records:
        raise DataError(f"{what} '{source}' is empty: no records found")
    log.info("read %d records from %s", len(records), source)
    return records


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSON lines atomically (temp file + rename). Returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n
