"""The dataset listing's fingerprint (convert's cache key): it changes exactly when the files under the dataset
URI change (added, removed, rewritten), locally and on GCS, and is unique per run when nothing can be listed."""
import os

import pytest

from pipelines import listing


def write(path, data=b"x"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)


def test_local_fingerprint_follows_the_files(tmp_path):
  root = tmp_path / "labelled"
  write(root / "train" / "a.jpg")
  write(root / "train" / "_annotations.coco.json", b"{}")
  first = listing.fingerprint(str(root))
  assert first.startswith("2 files, 3 bytes, sha256:")
  assert listing.fingerprint(str(root)) == first  # nothing changed: same key, convert may come from the cache
  assert listing.fingerprint(str(root / "train" / "_annotations.coco.json")) == listing.fingerprint(
      str(root / "train"))  # a file: its folder, as convert reads it

  write(root / "train" / "b.jpg")  # appended images
  appended = listing.fingerprint(str(root))
  assert appended.startswith("3 files, 4 bytes") and appended != first

  stat = os.stat(root / "train" / "a.jpg")
  os.utime(root / "train" / "a.jpg", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # same size, rewritten
  assert listing.fingerprint(str(root)) != appended


def test_missing_dataset_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist; check dataset_uri"):
    listing.fingerprint(str(tmp_path / "nowhere"))


def test_unlistable_source_never_matches_a_cache_entry(monkeypatch, capsys):
  import huggingface_hub

  def offline(self, name, **kwargs):
    raise ConnectionError("no network")

  monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", offline)
  first, second = listing.fingerprint("acme/shapes"), listing.fingerprint("acme/shapes")
  assert first.startswith("unlisted ") and second.startswith("unlisted ") and first != second
  assert "no revision of hub dataset acme/shapes" in capsys.readouterr().out


def test_gcs_fingerprint_uses_names_sizes_and_generations(gcs_emulator, monkeypatch):
  env, client = gcs_emulator
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  bucket = client.create_bucket("acme-data")
  for name, data in (("labelled/train/a.jpg", b"aa"), ("labelled/train/ann.json", b"{}"),
                     ("labelled-old/x.jpg", b"zzz")):
    bucket.blob(name).upload_from_string(data)
  first = listing.fingerprint("gs://acme-data/labelled/")
  assert first.startswith("2 files, 4 bytes, sha256:")  # labelled-old/ is another prefix
  assert listing.fingerprint("gs://acme-data/labelled") == first
  assert listing.fingerprint("gs://acme-data/labelled/train/ann.json") == \
      listing.fingerprint("gs://acme-data/labelled/train/")  # a file: its folder, as convert fetches it

  bucket.blob("labelled/train/a.jpg").upload_from_string(b"bb")  # rewritten, same name and size
  rewritten = listing.fingerprint("gs://acme-data/labelled/")
  assert rewritten.startswith("2 files, 4 bytes") and rewritten != first
  bucket.blob("labelled/valid/b.jpg").upload_from_string(b"b")
  assert listing.fingerprint("gs://acme-data/labelled/").startswith("3 files, 5 bytes")
  with pytest.raises(FileNotFoundError, match="gs://acme-data/nothing/ is empty or does not exist"):
    listing.fingerprint("gs://acme-data/nothing/")
