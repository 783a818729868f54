import json
import os
import stat

import pytest

from components.common.atomic import write_atomic, write_json_atomic


def test_new_file_has_the_mode_a_plain_open_gives(tmp_path):
  umask = os.umask(0o022)
  try:
    write_atomic(tmp_path / "a.bin", lambda f: f.write(b"data"))
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"data")
  finally:
    os.umask(umask)
  assert (tmp_path / "a.bin").read_bytes() == b"data"
  assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
  target = tmp_path / "out.json"
  write_json_atomic(str(target), {"b": 1, "a": [1, 2]})
  before = target.read_bytes()

  def half_then_fail(f):
    f.write(b"{\"half")
    raise RuntimeError("disk full")

  with pytest.raises(RuntimeError, match="disk full"):
    write_atomic(str(target), half_then_fail)
  assert target.read_bytes() == before
  assert os.listdir(tmp_path) == ["out.json"]


def test_json_layout_is_sorted_indented_with_final_newline(tmp_path):
  obj = {"b": {"y": 1, "x": 2}, "a": "é"}
  write_json_atomic(str(tmp_path / "m.json"), obj)
  text = (tmp_path / "m.json").read_text()
  assert text == json.dumps(obj, indent=2, sort_keys=True) + "\n"
  assert json.loads(text) == obj


def test_creates_missing_parent_folders(tmp_path):
  write_atomic(str(tmp_path / "x" / "y" / "z.bin"), lambda f: f.write(b"1"))
  assert (tmp_path / "x" / "y" / "z.bin").read_bytes() == b"1"
