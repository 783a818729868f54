"""CLI: python -m components.download --model NAME|URI --output DIR [--source kaggle|gcs|hf|URI] [...]"""
from __future__ import annotations

import argparse
import sys

from components.download import secrets
from components.download.core import RETRIES, download_model
from components.download.errors import DownloadError
from components.download.sources import DEFAULT_TOKENIZER, DEFAULT_VQVAE, DTYPES

EPILOG = """\
sources:
  kaggle://owner/model/framework/variation/version[/file]   e.g. kaggle://google/paligemma-2/jax/paligemma2-3b-pt-224/1
  gs://bucket/path/file.npz  (or a gs:// model directory)
  hf://org/repo[@revision]   transformers weights, converted to big_vision's .npz
  a local path               (a .npz, or a model directory)

credentials (never as arguments):
  Kaggle: KAGGLE_USERNAME + KAGGLE_KEY, or KAGGLE_API_TOKEN, or ~/.kaggle/kaggle.json, or --kaggle-credentials FILE
  GCS:    application-default credentials (GOOGLE_APPLICATION_CREDENTIALS or gcloud auth application-default login)
  HF:     HF_TOKEN, or --hf-credentials FILE

examples:
  python -m components.download --model paligemma2-3b-pt-224 --output /models/pg2-3b-224
  python -m components.download --model paligemma2-3b-pt-448 --source hf --output gs://my-bucket/models/pg2-448
  python -m components.download --model hf://google/paligemma2-3b-mix-224 --output /models/mix
  python -m components.download --model gs://bucket/pg/model.npz --tokenizer gs://bucket/pg/tokenizer.model \\
      --output /models/mine        # a bare .npz: model.json from its array shapes
  python -m components.download --model paligemma2-3b-mix-224 --vqvae --output /models/seg
                                   # + the released mask codec, for --task segment (model.json "vqvae")

model.json: from the released name, an hf:// config.json or the model.json beside the source, else inferred
from the checkpoint's array shapes (Gemma 1/2, sizes, vocabulary, image size; the name as the model library
gives it); arrays that form no PaliGemma model are an error.
"""


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m components.download", description="Fetch PaliGemma weights and a tokenizer into a model "
      "directory (checkpoint .npz, tokenizer.model, model.json, manifest.json).", epilog=EPILOG,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", required=True,
                      help="a released name (paligemma-3b-pt-224 ... paligemma2-28b-pt-896, mix variants) or a "
                      "source URI (a bare .npz describes itself by its array shapes)")
  parser.add_argument("--output", required=True, help="model directory, local or gs://")
  parser.add_argument("--source", help="kaggle (default), gcs, hf, or a URI holding the weights of --model NAME")
  parser.add_argument("--tokenizer",
                      help=f"tokenizer URI (default: the one beside the checkpoint, else {DEFAULT_TOKENIZER})")
  parser.add_argument("--vqvae", nargs="?", const=DEFAULT_VQVAE, metavar="URI",
                      help="also fetch the mask codec segmentation needs (the VQ-VAE of the <seg> tokens) from URI, "
                      f"any source kind above (hf://org/repo[@revision]/FILE for a hub file); alone: {DEFAULT_VQVAE}")
  parser.add_argument("--dtype", default="bfloat16", choices=DTYPES,
                      help="which published file to fetch (kaggle, gcs) or the dtype to convert to (hf)")
  parser.add_argument("--gcs-mirror", help="gs://BUCKET/PREFIX holding PREFIX/NAME/FILE copies of the Kaggle files "
                      "(for --source gcs)")
  parser.add_argument("--kaggle-credentials", metavar="FILE", help="mounted kaggle.json or API token file")
  parser.add_argument("--hf-credentials", metavar="FILE", help="mounted file holding a Hugging Face token")
  parser.add_argument("--cache-dir", help="staging area for gs:// outputs (default ~/.cache/paligemma_pipelines)")
  parser.add_argument("--gcs-chunk-mib", type=int, default=64,
                      help="size of the ranged reads a gs:// download runs in parallel (and resumes by)")
  parser.add_argument("--retries", type=int, default=RETRIES, help="attempts per file on checksum or network errors")
  args = parser.parse_args(argv)

  secrets.configure_logging()
  try:
    download_model(args.model, args.output, args.source, args.tokenizer, args.dtype, gcs_mirror=args.gcs_mirror,
                   kaggle_credentials=args.kaggle_credentials, hf_credentials=args.hf_credentials,
                   cache_dir=args.cache_dir, retries=args.retries,
                   gcs_chunk_mib=args.gcs_chunk_mib, vqvae=args.vqvae)
  except DownloadError as e:
    print(f"error: {secrets.redact(str(e))}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
