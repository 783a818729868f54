"""python -m components.export --checkpoint CKPT --export-format {npz,hf} --output URI [--dtype ...] [--register]"""
from __future__ import annotations

import argparse
import logging
import sys

from components.common import cli
from components.common.errors import storage_error
from components.common.extras import MissingExtra
from components.export.formats import DTYPE_NAMES, FORMATS
from components.export.registry import parse_labels


def _labels_arg(text: str) -> dict:
  try:
    return parse_labels(text)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from e


EPILOG = """examples:
  python -m components.export --checkpoint runs/7 --which best --export-format hf --dtype bfloat16 \\
      --output gs://b/models/7
  python -m components.export --checkpoint models/pg2/paligemma2-3b-pt-224.b16.npz --export-format npz --output out/
  python -m components.export --checkpoint runs/7 --export-format hf --output gs://b/models/7 --register --dry-run

Credentials (gs://, Vertex AI) come from application-default credentials, never from flags."""


def build_parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(prog="python -m components.export", epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Export a fine-tuned PaliGemma (finetune workdir, model directory or .npz) as a "
                                     "big_vision .npz or a transformers checkpoint, atomically, with manifest.json.")
  p.add_argument("--checkpoint", required=True, help="finetune workdir, model directory (model.json naming "
                 "its .npz), or an .npz (its model.json beside it, else its configuration is inferred from its "
                 "array shapes); local or gs://")
  p.add_argument("--export-format", dest="format", required=True, choices=FORMATS, deprecated=("--format",),
                 help="the model's format: npz: big_vision layout; hf: transformers "
                 "PaliGemmaForConditionalGeneration + PaliGemmaProcessor files")
  p.add_argument("--output", required=True, help="output directory, local or gs:// (replaced atomically)")
  p.add_argument("--tokenizer", default=None, help="tokenizer.model to ship (default: the one beside the "
                 "checkpoint)")
  p.add_argument("--dtype", choices=DTYPE_NAMES, default=None, help="cast the weights (default: keep the source's)")
  p.add_argument("--which", default="latest", help="workdir checkpoint: latest, best or a step (default latest)")
  p.add_argument("--metrics", default=None, help="an evaluation's metrics.json to record in the manifest")
  g = p.add_argument_group("Vertex AI Model Registry")
  g.add_argument("--register", action="store_true", help="upload the export to Vertex AI Model Registry")
  g.add_argument("--dry-run", action="store_true", help="with --register: print the registry request instead of "
                 "sending it (the export is still written); an error without --register")
  g.add_argument("--display-name", default=None, help="registry display name (default paligemma-<output name>)")
  g.add_argument("--serving-container", default=None, help="serving image (default for hf: Vertex AI's "
                 "Hugging Face inference container; required for npz)")
  g.add_argument("--labels", type=_labels_arg, default={}, help="extra labels, KEY=VALUE,KEY=VALUE")
  g.add_argument("--project", default=None, help="Google Cloud project (default $GOOGLE_CLOUD_PROJECT)")
  g.add_argument("--location", default=None, help="Vertex AI region (default $GOOGLE_CLOUD_REGION or us-central1)")
  return p


def parse_args(argv: list[str] | None = None):
  """The command line as a core.ExportConfig (the core is imported after parsing: --help stays fast)."""
  a = build_parser().parse_args(argv)
  from components.export.core import ExportConfig

  return ExportConfig(checkpoint=a.checkpoint, format=a.format, output=a.output, dtype=a.dtype, which=a.which,
                      tokenizer=a.tokenizer, metrics=a.metrics, register=a.register, dry_run=a.dry_run,
                      display_name=a.display_name, serving_container=a.serving_container, labels=a.labels,
                      project=a.project, location=a.location)


def main(argv: list[str] | None = None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  cfg = parse_args(argv)
  from components.export.core import export

  try:
    export(cfg)
  except (FileNotFoundError, ValueError, MissingExtra) as e:  # what the user gave: one line, exit 2
    return cli.report("python -m components.export", str(e))
  except Exception as e:
    if (message := storage_error(e, cfg.output)) is None:
      raise
    print(f"export failed: {message}", file=sys.stderr)  # a previous export at --output is untouched
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
