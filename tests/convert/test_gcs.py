"""gs:// input and output against gcp-storage-emulator (../shared/reference/STANDINS.md), through the CLI."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def emulator(gcs_emulator, monkeypatch):
  env, client = gcs_emulator
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  return client.create_bucket("data"), env


def test_gcs_input_and_output(tmp_path, imgs, emulator):
  bucket, env = emulator
  local = tmp_path / "coco" / "train"
  imgs.rgb(str(local / "a.jpg"), 100, 50)
  imgs.grey(str(local / "b.jpg"))
  imgs.empty(str(local / "c.jpg"))
  (local / "_annotations.coco.json").write_text(json.dumps({
      "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}, {"id": 3, "file_name": "c.jpg"}],
      "categories": [{"id": 1, "name": "cat"}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]}]}))
  for name in os.listdir(local):
    bucket.blob(f"in/coco/train/{name}").upload_from_filename(str(local / name))
  # An earlier run's image (named by its JSONL) and shard must disappear; a user's files must stay.
  bucket.blob("out/ds/images/old.jpg").upload_from_string(b"old")
  bucket.blob("out/ds/records/train-00000-of-00002.array_record").upload_from_string(b"old")
  bucket.blob("out/ds/train.jsonl").upload_from_string(json.dumps({"image": "images/old.jpg"}) + "\n")
  bucket.blob("out/ds/notes.txt").upload_from_string(b"mine")
  bucket.blob("out/ds/images/mine.jpg").upload_from_string(b"mine")

  cmd = [sys.executable, "-m", "components.convert", "--input", "gs://data/in/coco", "--format", "coco",
         "--task", "detect", "--output", "gs://data/out/ds", "--workers", "1", "--no-progress"]
  done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
  assert done.returncode == 0, done.stderr

  names = sorted(b.name for b in bucket.client.list_blobs("data", prefix="out/ds/"))
  current = bucket.blob("out/ds/CURRENT").download_as_text().strip()
  version = [n[len(f"out/ds/{current}/"):] for n in names if n.startswith(f"out/ds/{current}/")]
  assert current.startswith(".versions/v-") and sorted(version) == [
      ".started", "images/train/a.jpg", "images/train/b.jpg", "records/test-00000-of-00001.array_record",
      "records/train-00000-of-00001.array_record", "records/valid-00000-of-00001.array_record", "report.json",
      "test.jsonl", "train.jsonl", "valid.jsonl"]
  # The documented top-level paths hold copies of the current version; the user's files stay.
  names = [n for n in names if not n.startswith(("out/ds/.versions/", "out/ds/CURRENT"))]
  assert names == ["out/ds/images/mine.jpg", "out/ds/images/train/a.jpg", "out/ds/images/train/b.jpg", "out/ds/notes.txt",
                   "out/ds/records/test-00000-of-00001.array_record", "out/ds/records/train-00000-of-00001.array_record",
                   "out/ds/records/valid-00000-of-00001.array_record", "out/ds/report.json", "out/ds/test.jsonl",
                   "out/ds/train.jsonl", "out/ds/valid.jsonl"]
  rows = [json.loads(line) for line in bucket.blob("out/ds/train.jsonl").download_as_text().splitlines()]
  assert [(r["image"], r["suffix"]) for r in rows] == [
      ("images/train/a.jpg", "<loc0205><loc0102><loc0614><loc0307> cat"), ("images/train/b.jpg", "")]
  report = json.loads(bucket.blob("out/ds/report.json").download_as_text())
  assert [(r["file"], r["row"]) for r in report["rejected"]] == [("train/_annotations.coco.json", 3)]

  # The trainer pins the current version and finds its shards through gcsfs (in a fresh process: gcsfs reads
  # the emulator address at import).
  probe = ("from components.common.datasets import pin; from components.convert import list_shards; "
           "print(list_shards(pin('gs://data/out/ds').root, 'train'))")
  done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                        env={**os.environ, **env}, timeout=120)
  assert done.stdout.strip() == f"['gs://data/out/ds/{current}/records/train-00000-of-00001.array_record']", \
      done.stderr


def test_gcs_single_file_input_fetches_its_images(tmp_path, imgs, emulator):
  bucket, env = emulator
  local = tmp_path / "pg"
  imgs.rgb(str(local / "pics" / "a.jpg"))
  (local / "data.jsonl").write_text(json.dumps({"image": "pics/a.jpg", "prefix": "ocr", "suffix": "HI"}) + "\n")
  bucket.blob("in/pg/data.jsonl").upload_from_filename(str(local / "data.jsonl"))
  bucket.blob("in/pg/pics/a.jpg").upload_from_filename(str(local / "pics" / "a.jpg"))
  cmd = [sys.executable, "-m", "components.convert", "--input", "gs://data/in/pg/data.jsonl", "--format",
         "paligemma-jsonl", "--task", "ocr", "--output", str(tmp_path / "out"), "--splits", "train=1", "--workers", "1",
         "--no-progress"]
  done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
  assert done.returncode == 0, done.stderr
  assert [(r["image"], r["suffix"]) for r in imgs.read_output(tmp_path / "out")["train"]] == [("images/pics/a.jpg", "HI")]
