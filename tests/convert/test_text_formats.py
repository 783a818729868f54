"""Caption / VQA / OCR sources (CSV, Hugging Face, COCO captions, PaliGemma JSONL) with bad rows mixed in."""
import io
import json
import os

import pytest
from PIL import Image

from components.convert import ConvertConfig, convert, list_shards, read_shard


def _convert(tmp_path, root, fmt, task, **kw):
  kw.setdefault("workers", 1)
  report = convert(ConvertConfig(input=str(root), format=fmt, task=task, output=str(tmp_path / "out"),
                                 progress=False, **kw))
  return report


def _all_rows(imgs, out):
  rows = imgs.read_output(out)
  return [r for s in ("train", "valid", "test") for r in rows[s]]


def test_csv_vqa_with_split_column_and_bad_rows(tmp_path, imgs):
  root = tmp_path / "csv"
  imgs.rgb(str(root / "img" / "a.jpg"))
  imgs.cmyk(str(root / "img" / "b.jpg"))
  imgs.truncated(str(root / "img" / "c.jpg"))
  (root / "qa.csv").write_text(
      "image,question,answer,split\n"
      "img/a.jpg,what colour?,red,train\n"
      'img/b.jpg,"is it, really, red?",yes,validation\n'
      "img/c.jpg,broken?,yes,train\n"
      "img/a.jpg,,no question,train\n"
      "../outside.jpg,escape?,no,test\n"
      "img/missing.jpg,where?,nowhere,test\n"
      "img/a.jpg,how many?,one,test\n")
  report = _convert(tmp_path, root, "csv", "vqa")
  rows = imgs.read_output(tmp_path / "out")
  strip = lambda rs: [{k: r[k] for k in ("image", "prefix", "suffix")} for r in rs]  # noqa: E731
  assert strip(rows["train"]) == [{"image": "images/img/a.jpg", "prefix": "answer en what colour?", "suffix": "red"}]
  assert strip(rows["valid"]) == [{"image": "images/img/b.jpg", "prefix": "answer en is it, really, red?", "suffix": "yes"}]
  assert strip(rows["test"]) == [{"image": "images/img/a.jpg", "prefix": "answer en how many?", "suffix": "one"}]
  got = {(r["file"], r["row"]): r["reason"] for r in report["rejected"]}
  assert set(got) == {("qa.csv", 4), ("qa.csv", 5), ("qa.csv", 6), ("qa.csv", 7)}
  assert "truncated" in got[("qa.csv", 4)] and "empty question" in got[("qa.csv", 5)]
  assert "'..'" in got[("qa.csv", 6)] and "does not exist" in got[("qa.csv", 7)]


@pytest.mark.parametrize("task, header, prefix", [("caption", "image,caption", "caption en"),
                                                  ("ocr", "image,text", "ocr")])
def test_csv_caption_and_ocr_prompts(tmp_path, imgs, task, header, prefix):
  root = tmp_path / "csv"
  for i in range(10):
    imgs.rgb(str(root / f"{i}.jpg"), color=(i * 20, 0, 0))
  (root / "data.csv").write_text(header + "\n" + "".join(f"{i}.jpg,text number {i}\n" for i in range(10)))
  report = _convert(tmp_path, root, "csv", task)
  rows = _all_rows(imgs, tmp_path / "out")
  assert sorted((r["image"], r["prefix"], r["suffix"]) for r in rows) == sorted(
      (f"images/{i}.jpg", prefix, f"text number {i}") for i in range(10))
  assert sum(s["examples"] for s in report["splits"].values()) == 10 and report["split_rule"]["kind"] == "hash"
  assert report["rejected"] == []


def test_paligemma_jsonl_caption_keeps_prompts_and_reports_bad_lines(tmp_path, imgs):
  root = tmp_path / "bv"
  imgs.grey(str(root / "a.jpg"))
  imgs.rgb(str(root / "b.jpg"))
  imgs.empty(str(root / "c.jpg"))
  (root / "train.jsonl").write_text(
      json.dumps({"image": "a.jpg", "prefix": "caption es", "suffix": "un gato"}) + "\n"
      "{not json\n"
      + json.dumps({"image": "b.jpg", "prefix": "caption en"}) + "\n\n"
      + json.dumps({"image": "c.jpg", "prefix": "caption en", "suffix": "x"}) + "\n")
  (root / "valid.jsonl").write_text(json.dumps({"image": "b.jpg", "prefix": "caption en", "suffix": "a dog"}) + "\n")
  report = _convert(tmp_path, root, "paligemma-jsonl", "caption")
  rows = imgs.read_output(tmp_path / "out")
  assert [(r["image"], r["prefix"], r["suffix"]) for r in rows["train"]] == [("images/a.jpg", "caption es", "un gato")]
  assert [(r["image"], r["prefix"], r["suffix"]) for r in rows["valid"]] == [("images/b.jpg", "caption en", "a dog")]
  got = {(r["file"], r["row"]): r["reason"] for r in report["rejected"]}
  assert set(got) == {("train.jsonl", 2), ("train.jsonl", 3), ("train.jsonl", 5)}
  assert "not valid JSON" in got[("train.jsonl", 2)] and "suffix" in got[("train.jsonl", 3)]
  assert "empty" in got[("train.jsonl", 5)]


def test_coco_captions_one_row_per_caption_one_image_each(tmp_path, imgs):
  root = tmp_path / "coco"
  imgs.rgb(str(root / "train2017" / "a.jpg"))
  imgs.palette(str(root / "train2017" / "b.png"))
  os.makedirs(root / "annotations")
  (root / "annotations" / "captions_train2017.json").write_text(json.dumps({
      "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.png"}],
      "annotations": [{"id": 1, "image_id": 1, "caption": "red square "}, {"id": 2, "image_id": 1, "caption": "a box"},
                      {"id": 3, "image_id": 2, "caption": "blue"}, {"id": 4, "image_id": 99, "caption": "orphan"}]}))
  report = _convert(tmp_path, root, "coco", "caption")
  rows = imgs.read_output(tmp_path / "out")["train"]
  assert [(r["image"], r["prefix"], r["suffix"]) for r in rows] == [
      ("images/train2017/a.jpg", "caption en", "red square"), ("images/train2017/a.jpg", "caption en", "a box"),
      ("images/train2017/b.jpg", "caption en", "blue")]
  assert [r["row"] for r in report["rejected"]] == ["annotation 4"]
  assert sorted(os.listdir(tmp_path / "out" / "images" / "train2017")) == ["a.jpg", "b.jpg"]  # decoded once


def _png(color):
  buffer = io.BytesIO()
  Image.new("RGB", (16, 12), color).save(buffer, "PNG")
  return buffer.getvalue()


def test_hf_saved_dataset_detection_and_caption(tmp_path, imgs):
  datasets = pytest.importorskip("datasets")
  features = datasets.Features({
      "image": datasets.Image(),
      "caption": datasets.Value("string"),
      "objects": {"bbox": datasets.Sequence(datasets.Sequence(datasets.Value("float32"), length=4)),
                  "category": datasets.Sequence(datasets.ClassLabel(names=["cat", "dog"]))},
  })
  train = datasets.Dataset.from_dict({
      "image": [{"bytes": _png((255, 0, 0)), "path": "r.png"}, {"bytes": b"not an image", "path": "bad.png"},
                {"bytes": _png((0, 0, 255)), "path": "b.png"}],
      "caption": ["red", "broken", "blue"],
      "objects": [{"bbox": [[1, 2, 4, 4]], "category": [1]}, {"bbox": [], "category": []},
                  {"bbox": [[0, 0, 16, 12], [3, 3, 0, 2]], "category": [0, 1]}],
  }, features=features)
  test = train.select([0])
  path = tmp_path / "hf"
  datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(path))

  report = _convert(tmp_path, path, "hf", "detect")
  rows = imgs.read_output(tmp_path / "out")
  assert [(r["image"], r["prefix"], r["objects"]) for r in rows["train"]] == [
      ("images/train/000000.jpg", "detect cat ; dog", [{"label": "dog", "box": [1.0, 2.0, 5.0, 6.0]}]),
      ("images/train/000002.jpg", "detect cat ; dog", [{"label": "cat", "box": [0.0, 0.0, 16.0, 12.0]}])]
  assert [r["image"] for r in rows["test"]] == ["images/test/000000.jpg"]
  assert [(r["file"], r["row"]) for r in report["rejected"]] == [(f"{path}[train]", 1)]
  assert any("dropped: zero" in r["reason"] for r in report["repaired"])

  report = _convert(tmp_path, path, "hf", "caption")
  rows = imgs.read_output(tmp_path / "out")
  assert [(r["prefix"], r["suffix"]) for r in rows["train"]] == [("caption en", "red"), ("caption en", "blue")]


def test_records_hold_the_written_images(tmp_path, imgs):
  root = tmp_path / "csv"
  imgs.rgb(str(root / "a.jpg"))
  (root / "d.csv").write_text("image,caption,split\na.jpg,hello,train\n")
  _convert(tmp_path, root, "csv", "caption")
  (record,) = [r for shard in list_shards(str(tmp_path / "out"), "train") for r in read_shard(shard)]
  image = Image.open(io.BytesIO(record["image"]))
  assert image.mode == "RGB" and image.size == (64, 48)
  assert record["prefix"] == "caption en" and record["suffix"] == "hello" and record["image_path"] == "images/a.jpg"
  # The trainer reads the shards through grain's ArrayRecord source.
  grain = pytest.importorskip("grain")
  from components.convert import decode_record
  source = grain.sources.ArrayRecordDataSource(list_shards(str(tmp_path / "out"), "train"))
  assert len(source) == 1 and decode_record(source[0]) == record


def test_hf_hub_name_resolved_through_the_hub_cache(tmp_path, imgs):
  """A hub dataset in the offline hub cache (snapshot + refs/main, as huggingface_hub writes them)."""
  import subprocess
  import sys

  datasets = pytest.importorskip("datasets")
  repo = tmp_path / "hub" / "datasets--someone--tiny-captions"
  commit = "0123456789abcdef0123456789abcdef01234567"
  os.makedirs(repo / "snapshots" / commit / "data")
  os.makedirs(repo / "refs")
  (repo / "refs" / "main").write_text(commit)
  features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
  for split, colors in (("train", [(255, 0, 0), (0, 255, 0)]), ("validation", [(0, 0, 255)])):
    ds = datasets.Dataset.from_dict({"image": [{"bytes": _png(c), "path": f"{i}.png"} for i, c in enumerate(colors)],
                                     "caption": [f"colour {c}" for c in colors]}, features=features)
    ds.to_parquet(str(repo / "snapshots" / commit / "data" / f"{split}-00000-of-00001.parquet"))
  env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
         "HF_DATASETS_CACHE": str(tmp_path / "dscache")}
  repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  done = subprocess.run([sys.executable, "-m", "components.convert", "--input", "someone/tiny-captions", "--format",
                         "hf", "--task", "caption", "--output", str(tmp_path / "out"), "--workers", "1",
                         "--no-progress"], cwd=repo_root, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  rows = imgs.read_output(tmp_path / "out")
  assert [(r["image"], r["suffix"]) for r in rows["train"]] == [
      ("images/train/000000.jpg", "colour (255, 0, 0)"), ("images/train/000001.jpg", "colour (0, 255, 0)")]
  assert [r["suffix"] for r in rows["valid"]] == ["colour (0, 0, 255)"]
