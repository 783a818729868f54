"""Reading and writing a checkpoint says so in one INFO line (more only for a long transfer: one per
PROGRESS_SECONDS); the line per array is DEBUG."""
import logging

import numpy as np

from components.paligemma import checkpoint


def test_one_info_line_per_read_and_write_and_a_debug_line_per_array(tmp_path, caplog):
  params = {f"layer{i}": {"w": np.ones((4, 4), np.float32)} for i in range(12)}
  path = str(tmp_path / "m.npz")
  with caplog.at_level(logging.DEBUG, "components.paligemma.checkpoint"):
    checkpoint.save(params, path)
    assert len(list(checkpoint.iter_arrays(path))) == 12
  info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
  debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
  assert len(info) == 2, info
  assert info[0].startswith(f"write {path}: 12 arrays") and info[1].startswith(f"read {path}: 12 arrays")
  assert len(debug) == 24  # one per array, each way


def test_a_long_transfer_reports_every_interval(tmp_path, caplog, monkeypatch):
  monkeypatch.setattr(checkpoint, "PROGRESS_SECONDS", 0.0)  # every array is "long" after the last line
  path = str(tmp_path / "m.npz")
  with caplog.at_level(logging.INFO, "components.paligemma.checkpoint"):
    checkpoint.save({"a": np.ones(3, np.float32), "b": np.ones(3, np.float32), "c": np.ones(3, np.float32)}, path)
  info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
  assert [m.split(" (")[0] for m in info[:2]] == [f"write {path}: a", f"write {path}: b"]  # not the last: done
  assert info[-1].startswith(f"write {path}: 3 arrays") and len(info) == 3
