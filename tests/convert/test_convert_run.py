"""How a conversion runs: seeded splits, --strict, no usable row, re-runs and crashes, workers, CLI,
token lengths, the KFP component."""
import json
import os
import subprocess
import sys

import pytest

from components.convert import ConversionError, ConvertConfig, convert, list_shards, parse_splits, read_shard
from components.convert import core

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _caption_csv(imgs, root, n=20, bad=()):
  os.makedirs(root, exist_ok=True)
  lines = ["image,caption"]
  for i in range(n):
    name = f"{i:02d}.jpg"
    (imgs.truncated if i in bad else imgs.rgb)(str(root / name))
    lines.append(f"{name},caption {i}")
  (root / "c.csv").write_text("\n".join(lines) + "\n")
  return root


def _run(tmp_path, root, out="out", **kw):
  kw.setdefault("workers", 1)
  return convert(ConvertConfig(input=str(root), format="csv", task="caption", output=str(tmp_path / out),
                               progress=False, **kw))


def _split_images(imgs, out):
  rows = imgs.read_output(out)
  return {s: sorted(r["image"] for r in rows[s]) for s in rows}


def test_seeded_split_is_deterministic_and_depends_on_the_seed(tmp_path, imgs):
  """Fractions and stability under appended images: tests/convert/test_splits.py."""
  root = _caption_csv(imgs, tmp_path / "src", n=20)
  _run(tmp_path, root, "a", seed=3, splits=parse_splits("train=0.5,valid=0.25,test=0.25"))
  _run(tmp_path, root, "b", seed=3, splits=parse_splits("train=0.5,valid=0.25,test=0.25"))
  _run(tmp_path, root, "c", seed=4, splits=parse_splits("train=0.5,valid=0.25,test=0.25"))
  a, b, c = (_split_images(imgs, tmp_path / o) for o in "abc")
  assert a == b
  assert a != c
  assert sorted(sum(a.values(), [])) == [f"images/{i:02d}.jpg" for i in range(20)]  # nothing lost or doubled


def test_splits_keep_rows_of_one_image_together(tmp_path, imgs):
  root = tmp_path / "src"
  for i in range(6):
    imgs.rgb(str(root / f"{i}.jpg"))
  (root / "c.csv").write_text("image,caption\n" + "".join(f"{i}.jpg,first {i}\n{i}.jpg,second {i}\n" for i in range(6)))
  _run(tmp_path, root, seed=0, splits=parse_splits("train=0.5,valid=0.5"))
  rows = imgs.read_output(tmp_path / "out")
  train, valid = ({r["image"] for r in rows[s]} for s in ("train", "valid"))
  assert train and valid and not train & valid and len(train | valid) == 6
  where = {}
  for split in ("train", "valid"):
    for r in rows[split]:
      where.setdefault(r["image"], []).append(split)
  assert all(len(s) == 2 and s[0] == s[1] for s in where.values())  # both rows of an image, always together


def test_strict_makes_a_rejection_fatal_and_names_the_row(tmp_path, imgs):
  root = _caption_csv(imgs, tmp_path / "src", n=3, bad={1})
  with pytest.raises(ConversionError, match=r"(?s)--strict: 1 row\(s\) rejected.*c\.csv, row 3.*truncated"):
    _run(tmp_path, root, strict=True)
  assert not os.path.exists(tmp_path / "out" / "train.jsonl")
  report = _run(tmp_path, root)  # without --strict the good rows are kept
  assert sum(v["examples"] for v in report["splits"].values()) == 2


def test_no_usable_row_is_an_error(tmp_path, imgs):
  root = _caption_csv(imgs, tmp_path / "src", n=2, bad={0, 1})
  with pytest.raises(ConversionError, match=r"(?s)no usable row.*c\.csv, row 2"):
    _run(tmp_path, root)


def test_rerun_replaces_the_previous_output_consistently(tmp_path, imgs):
  root = _caption_csv(imgs, tmp_path / "src", n=6)
  _run(tmp_path, root)
  (tmp_path / "out" / "keep-me.txt").write_text("user file")
  first = os.readlink(tmp_path / "out" / "CURRENT")
  os.remove(root / "00.jpg")
  (root / "c.csv").write_text("image,caption\n" + "".join(f"{i:02d}.jpg,new {i}\n" for i in range(1, 6)))
  _run(tmp_path, root, examples_per_shard=2)
  rows = imgs.read_output(tmp_path / "out")
  images = sorted(r["image"] for s in rows.values() for r in s)
  assert images == [f"images/{i:02d}.jpg" for i in range(1, 6)]
  on_disk = sorted(f"images/{n}" for n in os.listdir(tmp_path / "out" / "images"))
  assert on_disk == images  # the old 00.jpg went with the old version
  shards = sorted(os.listdir(tmp_path / "out" / "records"))
  assert all("-of-00001" not in s for s in shards if s.startswith("train"))  # old single shard replaced
  assert sum(len(read_shard(p)) for s in ("train", "valid", "test") for p in list_shards(str(tmp_path / "out"), s)) == 5
  assert (tmp_path / "out" / "keep-me.txt").exists()  # files convert did not write stay
  second = os.readlink(tmp_path / "out" / "CURRENT")
  assert second != first and os.listdir(tmp_path / "out" / ".versions") == [second.split("/")[-1]]


def test_output_must_not_be_or_contain_the_input(tmp_path, imgs):
  root = _caption_csv(imgs, tmp_path / "src", n=2)
  for output in (root, tmp_path):
    with pytest.raises(ValueError, match="separate folder"):
      convert(ConvertConfig(input=str(root), format="csv", task="caption", output=str(output), workers=1))
  assert sorted(os.listdir(root)) == ["00.jpg", "01.jpg", "c.csv"]


def test_a_crash_leaves_the_previous_output_whole(tmp_path, imgs, monkeypatch):
  root = _caption_csv(imgs, tmp_path / "src", n=4)
  _run(tmp_path, root)
  before = {n: (tmp_path / "out" / n).read_bytes() for n in ("train.jsonl", "valid.jsonl", "test.jsonl", "report.json")}

  def crash(*args, **kwargs):
    raise KeyboardInterrupt("killed while writing records")
  monkeypatch.setattr(core.records, "write_shards", crash)
  (root / "c.csv").write_text("image,caption\n" + "".join(f"{i:02d}.jpg,changed\n" for i in range(4)))
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path, root)
  assert {n: (tmp_path / "out" / n).read_bytes() for n in before} == before
  assert len(os.listdir(tmp_path / "out" / ".versions")) == 1  # the unfinished version is gone


def test_parallel_workers_give_the_same_output(tmp_path, imgs):
  root = _caption_csv(imgs, tmp_path / "src", n=12, bad={5})
  one = _run(tmp_path, root, "one", workers=1)
  two = _run(tmp_path, root, "two", workers=2)
  for split in ("train", "valid", "test"):
    assert (tmp_path / "one" / f"{split}.jsonl").read_text() == (tmp_path / "two" / f"{split}.jsonl").read_text()
  assert one["rejected"] == two["rejected"] and len(one["rejected"]) == 1
  assert sorted(os.listdir(tmp_path / "one" / "images")) == sorted(os.listdir(tmp_path / "two" / "images"))


def test_token_lengths_against_text_len(tmp_path, imgs):
  from components.paligemma import Tokenizer, train_small_tokenizer
  tokenizer = train_small_tokenizer(str(tmp_path / "tok.model"), vocab_size=1500)
  root = tmp_path / "src"
  for i in range(4):
    imgs.rgb(str(root / f"{i}.jpg"))
  captions = ["a cat", "a dog on a mat", "the " * 30 + "end", "x"]
  (root / "c.csv").write_text("image,caption,split\n" + "".join(f"{i}.jpg,{c},train\n" for i, c in enumerate(captions)))
  report = _run(tmp_path, root, tokenizer=tokenizer, text_len=16)
  tok = Tokenizer(tokenizer)
  lengths = sorted(2 + len(tok.encode("caption en")) + len(tok.encode("\n")) + len(tok.encode(c)) for c in captions)
  stats = report["token_lengths"]
  assert stats["text_len"] == 16 and stats["valid"] is None
  assert stats["train"]["max"] == lengths[-1] and stats["train"]["p50"] == (lengths[1] + lengths[2]) / 2
  assert stats["train"]["over_text_len"] == sum(n > 17 for n in lengths) >= 1


def test_cli_help_and_run(tmp_path, imgs):
  help_text = subprocess.run([sys.executable, "-m", "components.convert", "--help"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout
  for flag in ("--input", "--format", "--task", "--output", "--classes", "--splits", "--seed", "--strict", "--workers"):
    assert flag in help_text
  root = _caption_csv(imgs, tmp_path / "src", n=3, bad={2})
  cmd = [sys.executable, "-m", "components.convert", "--input", str(root), "--format", "csv", "--task", "caption",
         "--output", str(tmp_path / "out"), "--splits", "train=1", "--no-progress"]
  done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  assert len(imgs.read_output(tmp_path / "out")["train"]) == 2
  assert "c.csv, row 4" in done.stderr
  failed = subprocess.run(cmd + ["--strict"], cwd=REPO, capture_output=True, text=True)
  assert failed.returncode == 2 and "--strict" in failed.stderr and "row 4" in failed.stderr


def test_kfp_component_compiles_and_calls_the_core(tmp_path, imgs):
  from kfp import compiler

  from components.convert import component, task
  path = tmp_path / "convert.yaml"
  compiler.Compiler().compile(component.convert_dataset, str(path))
  spec = path.read_text()
  assert "components.convert" in spec and "input_uri" in spec
  root = _caption_csv(imgs, tmp_path / "src", n=3)
  report = json.loads(task.run_convert(input_uri=str(root), data_format="csv", task="caption",
                                       output_uri=str(tmp_path / "out"), splits="train=1"))
  assert report["splits"]["train"]["examples"] == 3


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   PermissionError(13, "Permission denied", "/data/out/train.jsonl")])
def test_disk_full_or_permission_denied_is_one_line_naming_the_path(tmp_path, imgs, capsys, monkeypatch, error):
  from components.convert.__main__ import main

  root = _caption_csv(imgs, tmp_path / "src", n=3)
  _run(tmp_path, root)
  before = {n: (tmp_path / "out" / n).read_bytes() for n in ("train.jsonl", "valid.jsonl", "test.jsonl", "report.json")}

  def fail(*args, **kwargs):
    raise error
  monkeypatch.setattr(core, "_write_jsonl", fail)
  capsys.readouterr()
  code = main(["--input", str(root), "--format", "csv", "--task", "caption", "--output", str(tmp_path / "out"),
               "--workers", "1", "--no-progress"])
  err = capsys.readouterr().err.strip().splitlines()
  where = error.filename or str(tmp_path / "out")
  reason = "no space left on the device" if error.errno == 28 else "permission denied"
  assert code == 2 and len(err) == 1, err
  assert err[0].startswith(f"python -m components.convert: error: {reason} at {where}: "), err
  assert {n: (tmp_path / "out" / n).read_bytes() for n in before} == before
