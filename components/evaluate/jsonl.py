"""Reading and writing the JSON-lines files the evaluation step consumes and produces.

Every read error names the file and the 1-based line so the user can fix the row; every write goes to a
temporary name first and is renamed into place, so a crash never leaves a half-written file behind.
"""
from __future__ import annotations

import json
from typing import Iterable

from components.common.atomic import write_atomic


def read_jsonl(path: str, required: Iterable[str] = ()) -> list[dict]:
  """Rows of a JSON-lines file, each with its `_line` (1-based) added; blank lines are skipped."""
  required = tuple(required)
  rows = []
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}, line {line_no}: not valid JSON ({e.msg}); each line must be one JSON object") from e
      if not isinstance(row, dict):
        raise ValueError(f"{path}, line {line_no}: expected a JSON object, got {type(row).__name__}")
      missing = [k for k in required if k not in row]
      if missing:
        raise ValueError(f"{path}, line {line_no}: missing key(s) {missing}; each line needs {list(required)}")
      row["_line"] = line_no
      rows.append(row)
  return rows


def _atomic_write_text(path: str, text: str) -> None:
  write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def write_jsonl(path: str, rows: Iterable[dict]) -> None:
  """Writes rows atomically; keys starting with `_` (bookkeeping such as `_line`) are left out."""
  lines = [json.dumps({k: v for k, v in r.items() if not k.startswith("_")}, ensure_ascii=False) for r in rows]
  _atomic_write_text(path, "".join(line + "\n" for line in lines))


def write_json(path: str, obj) -> None:
  _atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def write_text(path: str, text: str) -> None:
  _atomic_write_text(path, text)
