"""Writing the files of a finetune workdir (ARCHITECTURE.md), local or gs://: config.json, model.json,
tokenizer.model, remat.json, metrics.jsonl, TensorBoard events. Only process 0 writes them; their names and
readers are `components.common.workdir`'s, which evaluate and export use."""
from __future__ import annotations

import json
import os

from components.common.atomic import write_atomic, write_json_atomic
from components.common.workdir import CONFIG, METRICS, MODEL, TOKENIZER, read_bytes, read_json  # noqa: F401

REMAT = "remat.json"  # the train step's remat policy, micro-batches and each candidate's memory (autotune.py)


def is_remote(path: str) -> bool:
  return "://" in path


def write_bytes(path: str, data: bytes) -> None:
  """Atomic: the file appears complete or not at all, locally and on gs://."""
  write_atomic(path, lambda f: f.write(data))


def write_json(path: str, obj) -> None:
  write_json_atomic(path, obj)


class MetricsLog:
  """metrics.jsonl (one JSON object per logged step) plus TensorBoard scalars.

  The whole file is rewritten on each flush (object stores cannot append); on resume the rows after the
  restored step are dropped, so the file always describes the run that the checkpoints continue.
  """

  def __init__(self, workdir: str, resume_step: int, enabled: bool = True):
    self._path = os.path.join(workdir, METRICS)
    self._enabled = enabled
    self._rows = []
    if enabled:
      old = read_bytes(self._path)
      rows = [json.loads(line) for line in (old or b"").decode().splitlines() if line.strip()]
      self._rows = [r for r in rows if r.get("step", 0) <= resume_step]
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(logdir=workdir)

  def write(self, step: int, **values) -> None:
    if not self._enabled:
      return
    values = {k: v for k, v in values.items() if v is not None}
    self._rows.append({"step": step, **values})
    for k, v in values.items():
      if isinstance(v, (int, float)):
        self._tb.add_scalar(k, v, step)

  def flush(self) -> None:
    if not self._enabled:
      return
    write_bytes(self._path, "".join(json.dumps(r) + "\n" for r in self._rows).encode())
    self._tb.flush()

  def close(self) -> None:
    if self._enabled:
      self.flush()
      self._tb.close()
