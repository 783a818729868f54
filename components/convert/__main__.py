"""`python -m components.convert --input SRC --format F --task T --output DIR [...]`: see `--help`."""
from __future__ import annotations

import argparse
import logging
import sys

from components.common.errors import storage_error
from components.common.extras import MissingExtra
from components.convert.core import TASKS, ConversionError, ConvertConfig, convert, parse_splits
from components.convert.images import DEFAULT_MAX_PIXELS
from components.convert.readers import FORMATS
from components.convert.storage import OutputBusyError


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="python -m components.convert",
      description="Turn labelled images (Roboflow/big_vision JSONL, COCO, YOLO, VOC, Hugging Face, CSV, mask PNGs) into a "
                  "PaliGemma dataset directory: {train,valid,test}.jsonl, images/, records/, report.json.")
  p.add_argument("--input", required=True, help="dataset folder or file, gs://..., or (hf) a hub dataset name")
  p.add_argument("--format", required=True, choices=FORMATS)
  p.add_argument("--task", required=True, choices=TASKS)
  p.add_argument("--output", required=True, help="output folder (local or gs://); re-running replaces it")
  p.add_argument("--classes", nargs="+", help="detect/segment classes in prompt order (space- or comma-separated); "
                                              "boxes or masks of other classes are dropped. Default: the dataset's")
  p.add_argument("--vqvae", help="segment: the mask codec writing the <seg> tokens, a VQ-VAE .npz (vae-oid.npz) or a "
                                 "model directory downloaded with --vqvae (its model.json names the codec)")
  p.add_argument("--splits", default="train=0.8,valid=0.1,test=0.1",
                 help="fractions for sources without splits (splits in the source are kept)")
  p.add_argument("--seed", type=int, default=0, help="seed of the split hash (changing it re-deals the splits)")
  p.add_argument("--strict", action="store_true", help="fail on any rejected row instead of reporting it")
  p.add_argument("--workers", type=int, default=0, help="worker processes (default: one per CPU core)")
  p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                 help="refuse images with more pixels (decompression bombs); default Pillow's %(default)s")
  p.add_argument("--max-side", type=int, default=None, help="downscale so the longer side is at most this")
  p.add_argument("--image-format", choices=("jpeg", "png"), default="jpeg", help="encoding of the written images")
  p.add_argument("--examples-per-shard", type=int, default=1000)
  p.add_argument("--tokenizer", help="tokenizer.model: adds token-length percentiles to report.json")
  p.add_argument("--text-len", type=int, default=128, help="text length the lengths are compared with")
  p.add_argument("--bbox-format", choices=("xywh", "xyxy"), default="xywh", help="hf: box layout of 'objects'")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  return p


def config_from_args(args: argparse.Namespace) -> ConvertConfig:
  classes = tuple(c.strip() for arg in args.classes for c in arg.split(",") if c.strip()) if args.classes else None
  return ConvertConfig(
      input=args.input, format=args.format, task=args.task, output=args.output, classes=classes,
      splits=parse_splits(args.splits), seed=args.seed, strict=args.strict, workers=args.workers,
      max_pixels=args.max_pixels, max_side=args.max_side, image_format=args.image_format,
      examples_per_shard=args.examples_per_shard, tokenizer=args.tokenizer, text_len=args.text_len,
      bbox_format=args.bbox_format, progress=not args.no_progress, vqvae=args.vqvae)


def main(argv=None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  args = build_parser().parse_args(argv)
  try:
    report = convert(config_from_args(args))
  except (ConversionError, OutputBusyError, ValueError, FileNotFoundError, MissingExtra) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except OSError as e:
    if (message := storage_error(e, args.output)) is None:
      raise
    print(f"error: {message}", file=sys.stderr)
    return 2
  for issue in report["rejected"][:20]:
    logging.warning("rejected %s, row %s: %s", issue["file"], issue["row"], issue["reason"])
  if len(report["rejected"]) > 20:
    logging.warning("... %d more rejected rows in %s/report.json", len(report["rejected"]) - 20, args.output)
  return 0


if __name__ == "__main__":
  sys.exit(main())
