"""`report.json`: counts per split and class, how the splits were made and a fingerprint of each, token lengths
against `text_len`, every rejected/repaired row, and warnings."""
from __future__ import annotations

import collections

import numpy as np

from components.convert import splits as splits_lib
from components.convert.rows import SPLITS, Issue

_MEASURE_LEN = 8192  # long enough that nothing is cut while we count tokens


def build(cfg, by_split: dict[str, list[dict]], classes: list[str] | None, issues: list[Issue], split_rule: dict,
          warnings: list[str], source_categories: dict | None = None) -> dict:
  report = {
      "input": cfg.input, "format": cfg.format, "task": cfg.task,
      "counts": {s: len(by_split[s]) for s in SPLITS},
      "splits": {s: {"examples": len(by_split[s]), "images": len({e["image"] for e in by_split[s]})} for s in SPLITS},
      "split_rule": split_rule,
      "split_fingerprints": {s: splits_lib.fingerprint(by_split[s]) for s in SPLITS},
      "warnings": warnings,
      "rejected": [i.to_json() for i in issues if i.action == "rejected"],
      "repaired": [i.to_json() for i in issues if i.action == "repaired"],
  }
  if classes is not None:
    report["classes"] = classes
    for split in SPLITS:
      counts = collections.Counter(o["label"] for e in by_split[split] for o in e.get("objects") or e.get("masks") or ())
      report["splits"][split]["objects"] = {c: counts.get(c, 0) for c in classes}
  if source_categories:  # COCO's category ids, so that detector outputs naming them can be scored
    report["source_categories"] = {str(k): v for k, v in source_categories.items()}
  if cfg.tokenizer:
    report["token_lengths"] = token_lengths(cfg.tokenizer, by_split, cfg.text_len)
  return report


def token_lengths(tokenizer_path: str, by_split: dict[str, list[dict]], text_len: int) -> dict:
  """Per split: percentiles of the full training sequence (bos, prefix, separator, suffix, eos) in tokens,
  and how many examples `text_len` would truncate (the trainer sees `text_len + 1` tokens, shifted by one)."""
  from components.paligemma import Tokenizer  # only when asked: it loads sentencepiece

  tokenizer = Tokenizer(tokenizer_path)
  result = {"text_len": text_len}
  for split in SPLITS:
    lengths = np.array([int(np.count_nonzero(tokenizer.encode_train(e["prefix"], e["suffix"], _MEASURE_LEN)["text"]))
                        for e in by_split[split]], np.int64)
    if not len(lengths):
      result[split] = None
      continue
    result[split] = {
        "p50": float(np.percentile(lengths, 50)), "p90": float(np.percentile(lengths, 90)),
        "p99": float(np.percentile(lengths, 99)), "max": int(lengths.max()),
        "over_text_len": int(np.sum(lengths > text_len + 1)),
    }
  return result
