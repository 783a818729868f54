"""Stable splits: an image's split depends only on its `source_image` key, the seed and the fractions, so a
dataset that grows keeps every earlier image where it was; report.json says how and fingerprints each split."""
import collections
import json
import os

from components.convert import ConvertConfig, convert, parse_splits
from components.convert import splits

FRACTIONS = parse_splits("train=0.8,valid=0.1,test=0.1")
# Pearson's chi-square with 2 degrees of freedom (three splits) exceeds 13.82 with probability 0.001.
CHI2_P001_DF2 = 13.82


def chi_square(counts: dict, n: int) -> float:
  return sum((counts.get(name, 0) - n * f) ** 2 / (n * f) for name, f in FRACTIONS)


def caption_dataset(imgs, root, names):
  os.makedirs(root, exist_ok=True)
  for name in names:
    if not os.path.exists(root / name):
      os.makedirs((root / name).parent, exist_ok=True)
      imgs.rgb(str(root / name), 16, 12)
  (root / "c.csv").write_text("image,caption\n" + "".join(f"{n},a picture of {n}\n" for n in names))
  return root


def run(root, out, seed=7):
  return convert(ConvertConfig(input=str(root), format="csv", task="caption", output=str(out), splits=FRACTIONS,
                               seed=seed, workers=1, progress=False))


def split_of_each_image(imgs, out):
  return {r["source_image"]: split for split, rows in imgs.read_output(out).items() for r in rows}


def test_hash_split_follows_the_fractions():
  keys = [f"photos/{i // 100:03d}/img_{i:06d}.jpg" for i in range(20000)]
  counts = collections.Counter(splits.hash_split(k, 0, FRACTIONS) for k in keys)
  assert chi_square(counts, len(keys)) < CHI2_P001_DF2, counts
  other_seed = collections.Counter(splits.hash_split(k, 1, FRACTIONS) for k in keys)
  assert chi_square(other_seed, len(keys)) < CHI2_P001_DF2, other_seed
  moved = sum(splits.hash_split(k, 0, FRACTIONS) != splits.hash_split(k, 1, FRACTIONS) for k in keys)
  assert moved > 0.2 * len(keys)  # the seed re-deals: independent draws differ 1 - (.8² + .1² + .1²) = 34% of the time


def test_hash_split_edges():
  assert {splits.hash_split(f"{i}.jpg", 0, (("train", 0.0), ("test", 1.0))) for i in range(200)} == {"test"}
  assert {splits.hash_split(f"{i}.jpg", 0, (("train", 1.0), ("valid", 0.0))) for i in range(200)} == {"train"}
  assert splits.source_key("a\\b/./c.jpg") == splits.source_key("a/b/c.jpg") == "a/b/c.jpg"


def test_adding_images_never_moves_an_earlier_one(tmp_path, imgs):
  """The issue's check: convert, add 20% new images, convert again. No earlier image changes split; the new
  ones are spread by the fractions (chi-square at p = 0.001 over the new images alone)."""
  old = [f"batch1/{i:04d}.jpg" for i in range(400)]
  new = [f"batch2/{i:04d}.jpg" for i in range(80)]
  root = caption_dataset(imgs, tmp_path / "src", old)
  yesterday = run(root, tmp_path / "yesterday")
  caption_dataset(imgs, root, old + new)
  today = run(root, tmp_path / "today")

  before, after = split_of_each_image(imgs, tmp_path / "yesterday"), split_of_each_image(imgs, tmp_path / "today")
  assert set(before) == set(old) and set(after) == set(old + new)
  assert {k: after[k] for k in old} == before
  new_counts = collections.Counter(after[k] for k in new)
  assert chi_square(new_counts, len(new)) < CHI2_P001_DF2, new_counts
  assert chi_square(collections.Counter(after.values()), len(after)) < CHI2_P001_DF2

  rule = today["split_rule"]
  assert rule == {"kind": "hash", "key": "source_image", "hash": "sha256", "seed": 7,
                  "fractions": {"train": 0.8, "valid": 0.1, "test": 0.1}, "examples_from_source": 0,
                  "examples_hashed": 480}
  # Each fingerprint is that of the split's JSONL rows; a split that gained images has a new one.
  rows = imgs.read_output(tmp_path / "today")
  for split in ("train", "valid", "test"):
    assert today["split_fingerprints"][split] == splits.fingerprint(rows[split])
    assert (today["split_fingerprints"][split] == yesterday["split_fingerprints"][split]) == (new_counts[split] == 0)
  assert today["warnings"] == []


def test_fingerprint_changes_with_membership_and_labels_only():
  rows = [{"source_image": "a.jpg", "prefix": "caption en", "suffix": "a cat", "image": "images/a.jpg"},
          {"source_image": "b.jpg", "prefix": "caption en", "suffix": "a dog", "image": "images/b.jpg"}]
  same = splits.fingerprint(rows)
  assert splits.fingerprint(rows[::-1]) == same  # order does not matter
  assert splits.fingerprint([{**rows[0], "image": "images/a-2.jpg"}, rows[1]]) == same  # nor the output name
  assert splits.fingerprint(rows[:1]) != same
  assert splits.fingerprint([{**rows[0], "suffix": "a lion"}, rows[1]]) != same
  assert same.startswith("sha256:") and len(same) == len("sha256:") + 64


def test_source_splits_are_kept(tmp_path, imgs):
  """Split files (train.csv, ...) decide, whatever the hash would say; the rule says "source"."""
  root = tmp_path / "src"
  for split, names in (("train", ["t0", "t1", "t2"]), ("valid", ["v0"]), ("test", ["x0", "x1"])):
    for name in names:
      imgs.rgb(str(root / split / f"{name}.jpg"), 16, 12)
    (root / f"{split}.csv").write_text("image,caption\n" + "".join(f"{split}/{n}.jpg,{n}\n" for n in names))
  report = convert(ConvertConfig(input=str(root), format="csv", task="caption", output=str(tmp_path / "out"),
                                 workers=1, progress=False))
  rows = imgs.read_output(tmp_path / "out")
  assert {s: sorted(r["source_image"] for r in rows[s]) for s in rows} == {
      "train": ["train/t0.jpg", "train/t1.jpg", "train/t2.jpg"], "valid": ["valid/v0.jpg"],
      "test": ["test/x0.jpg", "test/x1.jpg"]}
  assert report["split_rule"] == {"kind": "source", "examples_from_source": 6}


def test_a_split_the_hash_leaves_empty_is_a_warning(tmp_path, imgs, caplog):
  """Three images and a 1% valid split: the hash puts none there (a shuffle would not have either: 0.03
  rounds to 0). The conversion succeeds and says, in the log and report.json, what will fail and what to do."""
  root = caption_dataset(imgs, tmp_path / "src", ["a.jpg", "b.jpg", "c.jpg"])
  report = convert(ConvertConfig(input=str(root), format="csv", task="caption", output=str(tmp_path / "out"),
                                 splits=parse_splits("train=0.98,valid=0.01,test=0.01"), workers=1, progress=False))
  assert report["counts"] == {"train": 3, "valid": 0, "test": 0}
  assert len(report["warnings"]) == 2
  assert "split 'valid' is empty" in report["warnings"][0] and "--seed" in report["warnings"][0]
  assert "split 'valid' is empty" in caplog.text
  on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
  assert on_disk["warnings"] == report["warnings"]


def test_source_image_is_written_on_every_row(tmp_path, imgs):
  root = tmp_path / "src"
  imgs.rgb(str(root / "y" / "p.jpg"), 16, 12)
  (root / "c.csv").write_text("image,caption\n./y/p.jpg,one\ny/p.jpg,two\n")
  run(root, tmp_path / "out")
  rows = [(split, r) for split, split_rows in imgs.read_output(tmp_path / "out").items() for r in split_rows]
  assert [r["source_image"] for _, r in rows] == ["y/p.jpg", "y/p.jpg"]  # one key however the path was spelt
  assert rows[0][0] == rows[1][0]  # so one split
