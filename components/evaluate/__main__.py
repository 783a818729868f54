"""`python -m components.evaluate {run,score}`: decode and score a checkpoint, or score predictions."""
from __future__ import annotations

import json
import logging
import os
import sys

from components.common import cli, extras
from components.evaluate import coco_results, jsonl, outputs, scoring


def _add_score(sub) -> None:
  p = sub.add_parser("score", help="score predictions made anywhere against references",
                     description="Scores predictions against references (image, prefix, suffix), matched by image "
                                 "(its stable key: source_image, else image, else the end of its path) and prefix. "
                                 "Predictions are our JSONL (image, prefix, prediction[, tokens, token_logprobs]) "
                                 "or, for --task detect, a COCO results JSON ([{image_id, category_id, bbox, "
                                 "score}], as ultralytics, Florence-2 scripts and most detectors write). Prints "
                                 "the metrics as JSON; with --output also writes predictions.jsonl (the scored "
                                 "predictions), metrics.json, report.html and, for detection, coco_results.json "
                                 "there. --task segment decodes the <seg> tokens with the mask codec (--vqvae).")
  p.add_argument("--task", required=True, choices=scoring.TASKS, help="what the predictions answer: decides "
                 "the metrics")
  p.add_argument("--predictions", required=True, help="predictions JSONL, or a COCO results JSON (detect)")
  p.add_argument("--references", required=True, help="references JSONL, e.g. a dataset's valid.jsonl (its "
                                                     "report.json beside it gives COCO category ids)")
  p.add_argument("--categories", help="COCO results: JSON mapping the detector's category ids to class names, a "
                                      "COCO file's categories or {\"id\": \"name\"} (default: report.json's "
                                      "source_categories, else the dataset's classes numbered from 1)")
  p.add_argument("--output", help="directory for predictions.jsonl, metrics.json, report.html and (detect) "
                                  "coco_results.json (optional)")
  p.add_argument("--images", help="directory the `image` paths are relative to, for the report "
                                  "(default: the references file's directory)")
  p.add_argument("--baseline", help="an earlier evaluation directory to compare against in the report")
  p.add_argument("--model", help="what made the predictions, for the report header (default: the predictions "
                                 "file's name)")
  p.add_argument("--vqvae", help="--task segment: the mask codec that decodes the <seg> tokens, a VQ-VAE .npz "
                                 "(e.g. vae-oid.npz) or a model directory whose model.json names one (`vqvae`)")
  p.add_argument("--run-id", help="run id for the report header")


def _add_run(sub) -> None:
  p = sub.add_parser("run", help="decode a split with a checkpoint, then score it and write the report",
                     description="Decodes every example of DIR/{split}.jsonl with the checkpoint, in batches "
                                 "sharded over the devices present, and writes OUT/predictions.jsonl, "
                                 "OUT/metrics.json and OUT/report.html.")
  p.add_argument("--checkpoint", required=True, help="a finetune workdir, a model directory, or an .npz "
                                                     "(its model.json beside it, else its configuration is inferred "
                                                     "from its array shapes); local or gs://")
  p.add_argument("--tokenizer", help="tokenizer.model (default: the one beside the checkpoint)")
  p.add_argument("--data", required=True, help="dataset directory written by components.convert")
  p.add_argument("--split", default="valid", help="which DIR/SPLIT.jsonl to decode (default valid)")
  p.add_argument("--task", required=True, choices=scoring.TASKS, help="what the model answers: decides the "
                 "prompts' scoring and the default decode length")
  p.add_argument("--output", required=True, help="evaluation directory to write")
  p.add_argument("--sampler", default="greedy", help="greedy | beam:N | nucleus:P | temperature:T (default greedy)")
  p.add_argument("--max-decode-len", type=int, default=None, help="tokens to generate (default: by task)")
  p.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples")
  p.add_argument("--batch", dest="batch_size", type=int, default=8, deprecated=("--batch-size",),
                 help="examples per decoding step (padded to a multiple of the device count)")
  p.add_argument("--which", default="latest", help="checkpoint of a finetune workdir: latest, best (lowest "
                                                    "validation loss) or a step number")
  p.add_argument("--prompt-len", type=int, default=None, help="prompt tokens (default: longest prompt of the split)")
  p.add_argument("--seed", type=int, default=0, help="sampling seed (for nucleus/temperature)")
  p.add_argument("--baseline", help="an earlier evaluation directory (e.g. of the base model) to show side by side")
  p.add_argument("--run-id", help="run id for the report header (the pipeline passes its run name)")
  p.add_argument("--vqvae", help="--task segment: the mask codec, a VQ-VAE .npz or a model directory naming one "
                                 "(default: the codec the checkpoint's model.json names, `vqvae`; for a finetune "
                                 "workdir, its base model's)")


def _score(args, parser) -> dict:
  if args.task == "segment" and not args.vqvae:
    parser.error("--task segment needs --vqvae: the mask codec (.npz, or a model directory naming one) that "
                 "decodes the <seg> tokens")
  if args.vqvae and args.task != "segment":
    parser.error(f"--vqvae is the mask codec of --task segment; this is --task {args.task}")
  references = jsonl.read_jsonl(args.references, required=("image", "prefix", "suffix"))
  dataset_dir = os.path.dirname(os.path.abspath(args.references))
  ids = coco_results.DatasetIds(references, dataset_dir, args.categories) if args.task == "detect" else None
  if coco_results.is_coco_results(args.predictions):
    if args.task != "detect":
      parser.error(f"--predictions {args.predictions} is a COCO results JSON (boxes): use it with --task detect")
    predictions = coco_results.read(args.predictions, references, ids)
  else:
    if args.categories:
      parser.error("--categories maps the category ids of a COCO results JSON; --predictions is JSONL")
    predictions = jsonl.read_jsonl(args.predictions, required=("image", "prefix", "prediction"))
  image_root = args.images or dataset_dir
  codec = None
  if args.task == "segment":
    from components.evaluate import masks  # the codec runs on jax: imported only when segmenting
    codec = masks.load_codec(args.vqvae)
  score_args = {"predictions_name": args.predictions, "references_name": args.references, "vqvae": codec}
  if not args.output:
    return scoring.score(args.task, predictions, references, image_root=image_root, **score_args)[0]
  header = {"model": args.model or os.path.basename(args.predictions), "run_id": args.run_id,
            "dataset": dataset_dir, "split": os.path.splitext(os.path.basename(args.references))[0]}
  return outputs.write_evaluation(args.output, args.task, predictions, references, image_root=image_root,
                                  baseline_dir=args.baseline, header=header, dataset_ids=ids, **score_args)


def build_parser() -> cli.ArgumentParser:
  parser = cli.ArgumentParser(prog="python -m components.evaluate", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  _add_run(sub)
  _add_score(sub)
  return parser


def main(argv=None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  if args.task == "caption":  # CIDEr comes with an extra: say so before decoding anything
    try:
      extras.require("pycocoevalcap", extra="caption", needed_by="caption scoring (CIDEr)")
    except extras.MissingExtra as e:
      parser.error(str(e))
  if args.command == "score" and args.baseline and not args.output:
    parser.error("score --baseline only changes the report: give --output too")
  try:
    if args.command == "score":
      metrics = _score(args, parser)
    else:
      from components.evaluate import runner  # imports jax and the model only when decoding
      metrics = runner.run(runner.RunArgs.from_namespace(args))
  except (FileNotFoundError, ValueError, extras.MissingExtra) as e:  # a file or value the user gave: one line
    return cli.report(f"{parser.prog} {args.command}", str(e))
  json.dump(metrics, sys.stdout, indent=2)
  sys.stdout.write("\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
