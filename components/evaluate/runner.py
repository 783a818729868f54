"""`evaluate run`: decode a dataset split with a checkpoint, in batches sharded over the devices present.

  checkpoint -> params, model_cfg, tokenizer     (workdir, model directory, or .npz; local or gs://)
  DIR/{split}.jsonl -> unique (image, prefix) prompts, in file order, `--limit` of them
  per batch: images (`paligemma.preprocess_image`, as in training) + prompts -> batch [B] padded to a multiple of the
             device count -> `paligemma.decode` (KV cache sharded with the batch) -> real rows only
  -> OUT/predictions.jsonl, then scoring, OUT/metrics.json and OUT/report.html (components.evaluate.outputs)

Axes: B batch (a multiple of the device count D), T prompt tokens, L decode length.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import os
import time

import fsspec
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from components import paligemma
from components.common import datasets, sharding
from components.common.checkpoints import read_model_json, resolve_checkpoint
from components.evaluate import jsonl, masks, outputs

log = logging.getLogger(__name__)
# Tokens to generate when --max-decode-len is not given: room for the longest reference of the split
# plus a margin, but at least this much (a detection answer is ~7 tokens per object).
# A segmentation object is 20 location/mask tokens and a label.
MIN_DECODE_LEN = {"detect": 128, "caption": 64, "vqa": 32, "ocr": 128, "segment": 128}
DECODE_MARGIN = 16
# Parameters are replicated (no gathers per generated token) unless they would take more than this
# share of one device's memory; then each leaf is split over the devices by big_vision's FSDP rule.
REPLICATE_UP_TO = 0.3


@dataclasses.dataclass(frozen=True)
class RunArgs:
  checkpoint: str
  data: str
  task: str
  output: str
  split: str = "valid"
  sampler: str = "greedy"
  max_decode_len: int | None = None
  limit: int | None = None
  batch_size: int = 8
  which: str = "latest"
  prompt_len: int | None = None
  seed: int = 0
  baseline: str | None = None
  tokenizer: str | None = None  # None: tokenizer.model beside the checkpoint
  run_id: str | None = None  # for the report header
  vqvae: str | None = None  # segment: the mask codec (.npz or a model directory); None: the checkpoint's

  @classmethod
  def from_namespace(cls, ns) -> "RunArgs":
    return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})


# ---------------------------------------------------------------------------------------------- loading

def _model_cfg(meta: dict) -> dict:
  return {k: v for k, v in meta.items() if k in ("llm", "img")}


def load_checkpoint(path: str, which: str = "latest", tokenizer: str | None = None
                    ) -> tuple[dict, dict, paligemma.Tokenizer, dict]:
  """(params, model_cfg, tokenizer, model.json) from a finetune workdir, a model directory or an .npz, local
  or gs:// (resolved by `components.common.resolve_checkpoint`, as export does). A bare .npz's model.json is
  inferred from its array shapes; `tokenizer` replaces the tokenizer.model beside the checkpoint."""
  resolved = resolve_checkpoint(path, tokenizer)
  fs, tokenizer_path = fsspec.core.url_to_fs(resolved.tokenizer)
  if not fs.isfile(tokenizer_path):  # before the weights: a missing file fails in a second, not after minutes
    raise FileNotFoundError(f"{resolved.tokenizer} not found: give --tokenizer, or copy the model directory's "
                            f"tokenizer.model into {resolved.directory}")
  meta = read_model_json(resolved)
  if resolved.kind == "workdir":
    from components.common.workdir import load_trained_params  # imported here: orbax is slow to import

    params, model_cfg = load_trained_params(resolved.path, which=which)
  elif resolved.kind == "hf":  # a transformers directory (`export --format hf`), e.g. a champion re-scored
    params, model_cfg = paligemma.from_hf(resolved.path)
  else:
    model_cfg = _model_cfg(meta)
    params = paligemma.load(resolved.path, model_cfg)
  return params, model_cfg, paligemma.Tokenizer(resolved.tokenizer), meta


def read_split(data_dir: str, split: str, limit: int | None) -> tuple[list[dict], list[dict]]:
  """(prompts: unique (image, prefix) rows in file order, cut to `limit`; their reference rows)."""
  path = os.path.join(data_dir, f"{split}.jsonl")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found; --data must be a dataset directory from components.convert "
                            f"with a {split}.jsonl")
  rows = jsonl.read_jsonl(path, required=("image", "prefix", "suffix"))
  prompts: dict[tuple[str, str], dict] = {}
  for row in rows:
    prompts.setdefault((row["image"], row["prefix"]), row)
  keys = list(prompts)[:limit] if limit is not None else list(prompts)
  chosen = set(keys)
  if not keys:
    raise ValueError(f"{path} has no examples to evaluate")
  return [prompts[k] for k in keys], [r for r in rows if (r["image"], r["prefix"]) in chosen]


def _load_image(data_dir: str, row: dict, size: int) -> np.ndarray | str:
  """The model's input image [size, size, 3] in [-1, 1], or why it could not be read."""
  path = os.path.join(data_dir, row["image"])
  try:
    with open(path, "rb") as f:
      return paligemma.preprocess_image(f.read(), size)
  except Exception as e:  # Pillow raises many kinds; any of them means this one row cannot be evaluated
    return f"cannot read image {path} (line {row.get('_line')} of the split's jsonl): {e}"


# --------------------------------------------------------------------------------------------- sharding

def _param_shardings(params, mesh):
  total = sum(np.asarray(x).nbytes for x in jax.tree.leaves(params))
  stats = mesh.devices.flat[0].memory_stats() or {}
  limit = stats.get("bytes_limit")
  if limit is None or total <= REPLICATE_UP_TO * limit:
    return jax.tree.map(lambda _: NamedSharding(mesh, P()), params)
  log.info("parameters (%.1f GB) shard over %d devices (FSDP rule)", total / 1e9, mesh.size)
  return sharding.tree_shardings(params, mesh)


def make_mesh(devices=None):
  """A ('data', 'fsdp') mesh, batch over both, as the trainer's (components.common.sharding)."""
  return sharding.make_mesh(data=1, fsdp=-1, devices=devices)


# --------------------------------------------------------------------------------------------- decoding

def token_texts(tokenizer, ids: list[int]) -> list[str] | None:
  """The text each generated token adds, so that they join to the decoded answer (None if they cannot:
  byte-fallback pieces of one character decode only together)."""
  prefixes = [tokenizer.decode(ids[:i]) for i in range(len(ids) + 1)]
  if any(not b.startswith(a) for a, b in zip(prefixes, prefixes[1:])):
    return None
  return [b[len(a):] for a, b in zip(prefixes, prefixes[1:])]


class _Progress:
  def __init__(self, total: int):
    self.total, self.done, self.tokens, self.start, self.last = total, 0, 0, time.monotonic(), 0.0

  def update(self, examples: int, tokens: int) -> None:
    self.done += examples
    self.tokens += tokens
    now = time.monotonic()
    if now - self.last < 5 and self.done < self.total:
      return
    self.last = now
    rate = self.done / max(now - self.start, 1e-9)
    eta = (self.total - self.done) / rate if rate else math.inf
    log.info("decoded %d/%d examples, %.2f examples/s, %.1f tokens/s, ETA %.0fs", self.done, self.total, rate,
             self.tokens / max(now - self.start, 1e-9), eta)


def decode_rows(model, params, tokenizer, rows: list[dict], *, data_dir: str, image_size: int, batch_size: int,
                prompt_len: int, max_decode_len: int, sampler: str, seed: int,
                devices=None) -> tuple[list[dict], list[dict]]:
  """(One prediction record per row, decoded in batches over `devices` (default: all); the rows left out
  because their image could not be read, with the reason)."""
  mesh = make_mesh(devices)
  n_dev = mesh.size
  batch = math.ceil(batch_size / n_dev) * n_dev  # every device gets the same number of rows
  data_sharding = sharding.batch_sharding(mesh)
  params = jax.device_put(params, _param_shardings(params, mesh))
  progress = _Progress(len(rows))
  predictions, truncated_prompts = [], 0
  rng = jax.random.key(seed)
  skipped = []
  with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
    for start in range(0, len(rows), batch):
      real, images = [], []
      for row, image in zip(rows[start:start + batch], pool.map(lambda r: _load_image(data_dir, r, image_size),
                                                                  rows[start:start + batch])):
        if isinstance(image, str):  # a broken image drops its row, not the evaluation
          log.warning("%s; example left out", image)
          skipped.append({"image": row["image"], "prefix": row["prefix"], "reason": image})
          continue
        real.append(row)
        images.append(image)
      if not real:
        continue
      padded = real + [real[0]] * (batch - len(real))  # padding rows: a copy of a real one, dropped below
      images = np.stack(images + [images[0]] * (batch - len(real)))
      prompts = tokenizer.encode_prompt_batch([r["prefix"] for r in padded], prompt_len)
      truncated_prompts += int(np.sum(prompts["truncated"][:len(real)]))
      inputs = {"image": images, "text": prompts["text"], "mask_ar": prompts["mask_ar"],
                "mask_input": prompts["mask_input"], "_mask": np.arange(batch) < len(real)}
      inputs = jax.device_put(inputs, data_sharding)
      with sharding.use_mesh(mesh):
        tokens, logprobs = paligemma.decode(model, params, inputs, max_decode_len=max_decode_len, sampler=sampler,
                                            eos_token=tokenizer.eos_id, rng=jax.random.fold_in(rng, start),
                                            return_logprobs=True)
      tokens, logprobs = np.asarray(tokens)[:len(real)], np.asarray(logprobs)[:len(real)]
      generated = 0
      for row, ids, lps in zip(real, tokens, logprobs):
        ids = [int(i) for i in ids]
        n = ids.index(tokenizer.eos_id) if tokenizer.eos_id in ids else len(ids)
        generated += n
        predictions.append({
            "image": row["image"], **({"source_image": row["source_image"]} if row.get("source_image") else {}),
            "prefix": row["prefix"], "reference": row["suffix"],
            "prediction": tokenizer.decode(ids[:n]), "token_ids": ids[:n],
            "tokens": token_texts(tokenizer, ids[:n]), "token_logprobs": [float(v) for v in lps[:n]],
            "stopped": n < len(ids),  # False: cut at max_decode_len before eos
            "_line": len(predictions) + 1,  # its line in predictions.jsonl, for messages
        })
      progress.update(len(real), generated)
  if truncated_prompts:
    log.warning("%d prompts were longer than --prompt-len %d and were cut", truncated_prompts, prompt_len)
  return predictions, skipped


def run(args: RunArgs, devices=None) -> dict:
  """The whole `evaluate run`; returns the metrics (also in OUT/metrics.json)."""
  with datasets.pin(args.data) as dataset:  # one version of the dataset throughout, even if a convert replaces it
    return _run(dataclasses.replace(args, data=dataset.root), devices)


def _run(args: RunArgs, devices) -> dict:
  paligemma.parse_sampler(args.sampler)  # a typo fails now, not after the checkpoint has loaded
  rows, references = read_split(args.data, args.split, args.limit)
  # The codec before the weights: a missing one fails in a second, not after minutes.
  vqvae = masks.load_codec(args.vqvae, args.checkpoint) if args.task == "segment" else None
  params, model_cfg, tokenizer, model_json = load_checkpoint(args.checkpoint, args.which, args.tokenizer)
  model = paligemma.Model(**model_cfg)
  prompt_len = args.prompt_len or max(len(tokenizer.encode(r["prefix"])) + 2 for r in rows)  # + bos, "\n"
  max_decode_len = args.max_decode_len or max(
      MIN_DECODE_LEN[args.task], max(len(tokenizer.encode(r["suffix"])) for r in references) + DECODE_MARGIN)
  log.info("evaluating %d examples of %s/%s.jsonl on %d device(s): prompts %d tokens, up to %d new tokens, "
           "sampler %s", len(rows), args.data, args.split, len(devices or jax.devices()), prompt_len,
           max_decode_len, args.sampler)
  predictions, skipped = decode_rows(model, params, tokenizer, rows, data_dir=args.data,
                            image_size=paligemma.configs.image_size(model_cfg),
                            batch_size=args.batch_size, prompt_len=prompt_len, max_decode_len=max_decode_len,
                            sampler=args.sampler, seed=args.seed, devices=devices)
  not_stopped = sum(not p["stopped"] for p in predictions)
  if not_stopped:
    log.warning("%d answers reached --max-decode-len %d before their end token; raise it if they look cut",
                not_stopped, max_decode_len)
  if skipped:  # not the model's fault: such examples leave the scoring altogether
    gone = {(s["image"], s["prefix"]) for s in skipped}
    references = [r for r in references if (r["image"], r["prefix"]) not in gone]
  if not predictions:
    raise ValueError(f"no image of {args.data}/{args.split}.jsonl could be read (first: {skipped[0]['reason']})")
  checkpoint = args.checkpoint + (f" ({args.which})" if resolve_checkpoint(args.checkpoint).kind == "workdir" else "")
  header = {"model": model_json.get("name"), "checkpoint": checkpoint, "run_id": args.run_id, "dataset": args.data,
            "split": args.split}
  metrics = outputs.write_evaluation(args.output, args.task, predictions, references, image_root=args.data,
                                     baseline_dir=args.baseline, extra={"num_skipped": len(skipped), "skipped_examples": skipped},
                                     predictions_name=os.path.join(args.output, outputs.PREDICTIONS), header=header,
                                     vqvae=vqvae, references_name=os.path.join(args.data, f"{args.split}.jsonl"))
  log.info("%s: %s", args.task, outputs.summary_line(metrics))
  return metrics
