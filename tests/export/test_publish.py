"""Local publication: replacing an existing export directory."""
import os

import pytest

from components.export import publish


def publish_files(output, files):
  with publish.atomic_directory(str(output)) as staging:
    for name, text in files.items():
      (staging / name).write_text(text)


def test_exchange_swaps_two_directories(tmp_path):
  (tmp_path / "a").mkdir(); (tmp_path / "a" / "x").write_text("1")
  (tmp_path / "b").mkdir(); (tmp_path / "b" / "y").write_text("2")
  if not publish.exchange(tmp_path / "a", tmp_path / "b"):
    pytest.skip("renameat2(RENAME_EXCHANGE) is not available on this system/filesystem")
  assert os.listdir(tmp_path / "a") == ["y"] and os.listdir(tmp_path / "b") == ["x"]


def test_replace_never_renames_the_old_export_away_when_exchange_works(tmp_path, monkeypatch):
  out = tmp_path / "export"
  publish_files(out, {"old.txt": "old"})
  if not publish.exchange(tmp_path / "export", tmp_path / "export"):  # same path: a no-op exchange probe
    pytest.skip("renameat2(RENAME_EXCHANGE) is not available on this system/filesystem")
  renames = []
  real_rename = os.rename
  monkeypatch.setattr(publish.os, "rename", lambda a, b: (renames.append((a, b)), real_rename(a, b)))
  publish_files(out, {"new.txt": "new"})
  assert renames == []  # the swap was the single exchange: no moment without `export`
  assert os.listdir(out) == ["new.txt"] and sorted(os.listdir(tmp_path)) == ["export"]


def test_fallback_without_exchange_replaces_and_cleans_up(tmp_path, monkeypatch):
  out = tmp_path / "export"
  publish_files(out, {"old.txt": "old"})
  monkeypatch.setattr(publish, "exchange", lambda a, b: False)
  publish_files(out, {"new.txt": "new"})
  assert os.listdir(out) == ["new.txt"] and sorted(os.listdir(tmp_path)) == ["export"]


def test_fallback_puts_the_old_export_back_if_the_new_one_cannot_move_in(tmp_path, monkeypatch):
  out = tmp_path / "export"
  publish_files(out, {"old.txt": "old"})
  monkeypatch.setattr(publish, "exchange", lambda a, b: False)
  real_rename = os.rename

  def rename(a, b):
    if str(b) == str(out) and ".tmp-" in str(a):
      raise OSError("simulated failure moving the new export in")
    return real_rename(a, b)

  monkeypatch.setattr(publish.os, "rename", rename)
  with pytest.raises(OSError, match="simulated"):
    publish_files(out, {"new.txt": "new"})
  assert (out / "old.txt").read_text() == "old" and sorted(os.listdir(tmp_path)) == ["export"]
