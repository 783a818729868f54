"""The convert step: read a labelled dataset, clean every image in parallel, write a dataset directory.

Reads: the format's reader (`readers/`) -> rows. Cleans: one worker task per image (`worker.py`). Splits:
splits the source has are kept; rows without one go where a hash of their image's stable key (`source_image`)
and `seed` sends them (`splits.py`: adding images never moves one already there). Writes (into a new version
of the output, published as one unit by `storage.open_output(...).publish()`): `{train,valid,test}.jsonl`,
`images/`, `records/` (records.py) and `report.json`.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import json
import logging
import multiprocessing
import os
import posixpath
import shutil
import tempfile

from tqdm import tqdm

from components.common import records
from components.convert import report as report_lib, segment, splits, storage
from components.convert.images import DEFAULT_MAX_PIXELS
from components.convert.locations import check_class_name, detect_prefix
from components.convert.readers import FORMATS, READERS
from components.convert.readers.common import account_duplicates
from components.convert.rows import SPLITS, Issue, Source
from components.convert.worker import ImageOptions, Task, TaskResult, run_task

log = logging.getLogger("components.convert")
TASKS = ("detect", "segment", "caption", "vqa", "ocr")


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
  input: str
  format: str
  task: str
  output: str
  classes: tuple[str, ...] | None = None  # detect/segment: the classes and their order (default: the dataset's)
  splits: tuple[tuple[str, float], ...] = (("train", 0.8), ("valid", 0.1), ("test", 0.1))
  seed: int = 0
  strict: bool = False
  workers: int = 0  # 0: one per CPU core
  max_pixels: int = DEFAULT_MAX_PIXELS
  max_side: int | None = None
  image_format: str = "jpeg"
  examples_per_shard: int = 1000
  tokenizer: str | None = None
  text_len: int = 128
  bbox_format: str = "xywh"  # hf only
  progress: bool = True
  layout: str = "versioned"  # or "plain": a KFP step's own output artifact (storage.py)
  vqvae: str | None = None  # segment: the mask codec (.npz, or a model directory whose model.json names one)

  def __post_init__(self):
    if self.format not in FORMATS:
      raise ValueError(f"unknown --format {self.format!r}; choose one of {', '.join(FORMATS)}")
    if self.task not in TASKS:
      raise ValueError(f"unknown --task {self.task!r}; choose one of {', '.join(TASKS)}")
    bad = [s for s, _ in self.splits if s not in SPLITS]
    if bad or any(f < 0 for _, f in self.splits) or sum(f for _, f in self.splits) <= 0:
      raise ValueError(f"--splits {dict(self.splits)} must give non-negative fractions of {', '.join(SPLITS)}")
    if self.layout not in ("versioned", "plain"):
      raise ValueError(f"layout {self.layout!r}: choose versioned or plain")


def parse_splits(text: str) -> tuple[tuple[str, float], ...]:
  """`train=0.8,valid=0.1,test=0.1` -> (("train", 0.8), ...); fractions are normalised to sum to 1."""
  try:
    pairs = [(k.strip(), float(v)) for k, v in (part.split("=") for part in text.split(",") if part.strip())]
  except ValueError:
    raise ValueError(f"--splits {text!r} is not like train=0.8,valid=0.1,test=0.1") from None
  total = sum(f for _, f in pairs)
  return tuple((k, f / total) for k, f in pairs) if total > 0 else tuple(pairs)


class ConversionError(RuntimeError):
  """The conversion cannot produce a dataset; the message lists what to fix."""


def convert(cfg: ConvertConfig) -> dict:
  """Runs the conversion; returns the report (also written as `report.json`)."""
  storage.check_locations(cfg.input, cfg.output)
  scratch = tempfile.mkdtemp(prefix="convert-")
  output = None
  try:
    output = storage.open_output(cfg.output, scratch, versioned=cfg.layout == "versioned")  # fails fast if busy
    codec = segment.load_codec(cfg.vqvae) if cfg.task == "segment" else None
    source = READERS[cfg.format](storage.fetch_input(cfg.input, scratch), cfg.task,
                                 scratch=os.path.join(scratch, "hf"), bbox_format=cfg.bbox_format)
    _check_labels(source)
    classes = segment.rows_by_class(source, cfg.classes) if cfg.task == "segment" else None
    account_duplicates(source, cfg.task)  # duplicate rows, boxes and masks: reported, never merged silently
    classes = _resolve_classes(cfg, source) if cfg.task == "detect" else classes
    _fail_if_strict(cfg, source.issues)
    staging = output.staging
    finish = functools.partial(segment.encode_suffixes, codec=codec) if codec is not None else None
    results = _run_tasks(cfg, _tasks(source, ".png" if cfg.image_format == "png" else ".jpg"), staging, finish)
    examples, issues = _collect(results, classes if cfg.task == "detect" else None, source.issues)
    _fail_if_strict(cfg, issues)
    if not examples:
      raise ConversionError(_no_rows_message(cfg, issues))
    by_split, split_rule = _assign_splits(examples, cfg.splits, cfg.seed)
    warnings = _empty_split_warnings(by_split, cfg.splits, split_rule)
    for warning in warnings:
      log.warning("%s", warning)
    for split in SPLITS:
      _write_jsonl(os.path.join(staging, f"{split}.jsonl"), by_split[split])
      records.write_shards(staging, split, (_record(staging, e) for e in by_split[split]), len(by_split[split]),
                           cfg.examples_per_shard)
    report = report_lib.build(cfg, by_split, classes, issues, split_rule, warnings,
                              source_categories=source.categories)
    with open(os.path.join(staging, "report.json"), "w", encoding="utf-8") as f:
      json.dump(report, f, indent=1, ensure_ascii=False)
    output.publish()
    log.info("wrote %s: %s; %d rejected, %d repaired", cfg.output,
             ", ".join(f"{len(by_split[s])} {s}" for s in SPLITS), len(report["rejected"]), len(report["repaired"]))
    return report
  finally:
    try:
      if output is not None:
        output.close()  # an unpublished version is removed; the previous dataset stays current
    finally:
      shutil.rmtree(scratch, ignore_errors=True)


def _check_labels(source: Source) -> None:
  """Box and mask labels that would break the loc text are an error naming their row."""
  for row in source.rows:
    for item in [*(row.objects or ()), *(row.masks or ())]:
      try:
        item.label = check_class_name(item.label)
      except ValueError as e:
        raise ConversionError(f"{row.file}, row {row.row} (image {row.image}): {e}") from None


def _resolve_classes(cfg: ConvertConfig, source: Source) -> list[str]:
  """The class list of the detect prompt; objects of other classes are dropped (and reported) when
  `--classes` restricts them."""
  used = [o.label for r in source.rows for o in r.objects or ()]
  if cfg.classes:
    classes = [check_class_name(c) for c in cfg.classes]
    allowed = set(classes)
    for row in source.rows:
      kept = [o for o in row.objects if o.label in allowed]
      row.repairs += [f"box of class {o.label!r} dropped: not in --classes" for o in row.objects if o.label not in allowed]
      row.objects = kept
  else:
    try:
      classes = [check_class_name(c) for c in source.classes or ()]
    except ValueError as e:
      raise ConversionError(f"the class list of {cfg.input}: {e}") from None
    classes = list(dict.fromkeys(classes + sorted(set(used) - set(classes))))
  if not classes:
    raise ConversionError(f"{cfg.input} has no classes and no boxes; give --classes or check the --format")
  return classes


def _fail_if_strict(cfg: ConvertConfig, issues: list[Issue]) -> None:
  rejected = [i for i in issues if i.action == "rejected"]
  if cfg.strict and rejected:
    listing = "\n  ".join(str(i) for i in rejected[:50])
    raise ConversionError(f"--strict: {len(rejected)} row(s) rejected; fix them or run without --strict:\n  {listing}")


def _no_rows_message(cfg: ConvertConfig, issues: list[Issue]) -> str:
  listing = "\n  ".join(str(i) for i in issues[:20])
  return (f"{cfg.input} (--format {cfg.format}, --task {cfg.task}) has no usable row"
          + (f"; the first problems:\n  {listing}" if issues else "; check --format and the folder layout"))


def _tasks(source: Source, ext: str) -> list[Task]:
  """One task per image, rows in source order; output names mirror the source paths (made unique)."""
  grouped = collections.OrderedDict()
  for row in source.rows:
    grouped.setdefault(row.image, []).append(row)
  tasks, taken = [], set()
  for image, rows in grouped.items():
    parts = [p for p in image.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    stem = posixpath.splitext(posixpath.join("images", *parts))[0] if parts else "images/unnamed"
    name, n = f"{stem}{ext}", 1
    while name in taken:  # a.png and a.jpg both exist
      n += 1
      name = f"{stem}-{n}{ext}"
    taken.add(name)
    tasks.append(Task(source.root, image, name, rows))
  return tasks


def _run_tasks(cfg: ConvertConfig, tasks: list[Task], staging: str, finish=None) -> list[TaskResult]:
  """Runs the tasks in worker processes; `finish(result)`, when given, runs here on each result as it arrives."""
  options = ImageOptions(cfg.max_pixels, cfg.max_side, cfg.image_format)
  work = functools.partial(run_task, staging_dir=staging, options=options)
  workers = min(cfg.workers or len(os.sched_getaffinity(0)), max(1, len(tasks)))  # affinity: a container's cores
  bar = tqdm(total=len(tasks), unit="img", desc="converting", disable=not cfg.progress)
  try:
    if workers == 1:
      return [_tick(bar, work(t), finish) for t in tasks]
    # forkserver: workers do not inherit the parent's threads (jax, gcsfs); with the worker module
    # preloaded in the server, each worker is a cheap fork instead of a fresh interpreter importing it.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["components.convert.worker"])
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
      chunk = max(1, min(64, len(tasks) // (workers * 8)))
      return [_tick(bar, r, finish) for r in pool.map(work, tasks, chunksize=chunk)]
  finally:
    bar.close()


def _tick(bar, result, finish=None):
  if finish is not None and result.error is None:
    finish(result)
  bar.update(1)
  return result


def _collect(results: list[TaskResult], classes, source_issues: list[Issue]) -> tuple[list[tuple], list[Issue]]:
  """Task results -> `(example, source split or None)` in source order, and every rejected/repaired row."""
  examples, issues = [], list(source_issues)
  prefix = detect_prefix(classes) if classes is not None else None
  for result in results:
    task = result.task
    if result.error:
      issues += [Issue(r.file, r.row, result.error.reason, image=task.image) for r in task.rows]
      continue
    for k, row_result in enumerate(result.rows):
      row = row_result.row
      if row_result.rejected:
        issues.append(Issue(row.file, row.row, row_result.rejected, image=task.image))
        continue
      notes = result.image_notes + row_result.repairs
      if notes:
        issues.append(Issue(row.file, row.row, "; ".join(notes), action="repaired", image=task.image))
      example = {"image": task.out_image, "source_image": splits.source_key(task.image), "prefix": prefix if prefix is not None else row.prefix,
                 "suffix": row_result.suffix if row.objects is not None or row.masks is not None else row.suffix,
                 "id": f"{posixpath.splitext(task.out_image)[0][len('images/'):]}:{k}",
                 "width": result.width, "height": result.height,
                 "source_width": result.source_size[0], "source_height": result.source_size[1]}
      if row.source_id is not None:
        example["source_id"] = row.source_id
      if row_result.objects is not None:
        example["objects"] = row_result.objects
      if row_result.masks is not None:
        example["masks"] = row_result.masks
      examples.append((example, row.split))
  return examples, issues


def _assign_splits(examples: list[tuple[dict, str | None]], fractions, seed: int) -> tuple[dict[str, list[dict]], dict]:
  """Keeps the source's splits; every other example goes where its image's key hashes (`splits.hash_split`).
  Returns the examples by split and report.json's `split_rule`."""
  by_split = {s: [] for s in SPLITS}
  hashed = 0
  for e, split in examples:
    if split is None:
      split = splits.hash_split(e["source_image"], seed, fractions)
      hashed += 1
    by_split[split].append(e)
  return by_split, splits.rule(seed, fractions, len(examples) - hashed, hashed)


def _empty_split_warnings(by_split: dict[str, list[dict]], fractions, split_rule: dict) -> list[str]:
  """A split asked for (fraction > 0) that the hash left empty. A seeded shuffle dealt exact counts, so a
  handful of images still filled every split; a hash cannot without moving images later (each image is
  placed on its own), so a small dataset can leave a split empty: say so, and what to do."""
  if split_rule["kind"] == "source":
    return []
  total = sum(f for _, f in fractions)
  images = len({e["source_image"] for examples in by_split.values() for e in examples})
  return [f"split {name!r} is empty: none of the images without a source split hashed into it (fraction "
          f"{f / total:.2f} of {images} images); steps that read it (evaluate --split {name}) will fail. Add "
          f"images, give the split in the source (a {name}/ folder or a split column), or try another --seed"
          for name, f in fractions if f > 0 and not by_split[name]]


def _write_jsonl(path: str, examples: list[dict]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for e in examples:
      f.write(json.dumps(e, ensure_ascii=False) + "\n")


def _record(staging: str, example: dict) -> dict:
  with open(os.path.join(staging, example["image"]), "rb") as f:
    image = f.read()
  return {"id": example["id"], "image": image, "image_path": example["image"], "prefix": example["prefix"],
          "suffix": example["suffix"]}
