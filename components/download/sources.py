"""Where a checkpoint or tokenizer comes from: released model names and source URIs.

A source is one of
  kaggle://owner/model/framework/variation/version[/file]   (kagglehub)
  gs://bucket/path                                            (google-cloud-storage)
  hf://org/repo[@revision][/file]                             (huggingface_hub, transformers layout; a file:
                                                              the mask codec)
  a local path (or file://path)

A released model name (PALIGEMMA.md §8) maps to its Kaggle handle and its Hugging Face repo:
  paligemma-3b-{pt,mix,ft-TASK}-{224,448,896}      google/paligemma/jax/NAME/1    NAME.npz | .bf16.npz | .f16.npz
  paligemma2-{3b,10b,28b}-{pt,mix,ft-TASK}-{res}   google/paligemma-2/jax/NAME/1  NAME.b16.npz
  hf: google/NAME
"""
from __future__ import annotations

import dataclasses
import enum
import os
import re

from components.common.checkpoints import RELEASED_VQVAE
from components.download.errors import DownloadError

DEFAULT_TOKENIZER = "gs://big_vision/paligemma_tokenizer.model"
# The released mask codec (segmentation's `<segNNN>` tokens), and its file name in an hf:// repo naming none.
DEFAULT_VQVAE = RELEASED_VQVAE
VQVAE_FILE = "vae-oid.npz"
KAGGLE_VERSION = 1

_RELEASE_RE = re.compile(
    r"^(?P<family>paligemma|paligemma2)-(?P<size>3b|10b|28b)-(?P<kind>pt|mix|ft-[a-z0-9-]+?)-(?P<res>224|448|896)$")
_KAGGLE_RE = re.compile(
    r"^kaggle://(?P<owner>[^/]+)/(?P<model>[^/]+)/(?P<framework>[^/]+)/(?P<variation>[^/]+)/(?P<version>\d+)"
    r"(?:/(?P<file>.+))?$")
_HF_RE = re.compile(r"^hf://(?P<repo>[^/@]+/[^/@]+)(?:@(?P<revision>[^/]+))?(?:/(?P<file>[^@]+))?$")

# Published file suffixes per family and dtype (Kaggle file listings, PALIGEMMA.md §8).
_KAGGLE_SUFFIX = {
  "paligemma": {"float32": ".npz", "bfloat16": ".bf16.npz", "float16": ".f16.npz"},
  "paligemma2": {"bfloat16": ".b16.npz"},
}
_KAGGLE_MODEL = {"paligemma": "paligemma", "paligemma2": "paligemma-2"}
DTYPES = ("bfloat16", "float32", "float16")


class Kind(str, enum.Enum):
  KAGGLE = "kaggle"
  GCS = "gcs"
  HF = "hf"
  LOCAL = "local"


@dataclasses.dataclass(frozen=True)
class Source:
  """A parsed source URI. `uri` is the canonical spelling recorded in manifests."""
  kind: Kind
  uri: str

  @property
  def basename(self) -> str:
    """The file name the source has (kaggle: the file part; hf: the repo name)."""
    if self.kind is Kind.HF:
      return hf_parts(self)[0].split("/")[-1]
    return self.uri.rstrip("/").split("/")[-1]


def parse(uri: str) -> Source:
  """Parses a source URI or a local path; a malformed kaggle:// or hf:// URI is a clear error."""
  if uri.startswith("kaggle://"):
    if not _KAGGLE_RE.match(uri):
      raise DownloadError(f"bad Kaggle URI {uri!r}: expected kaggle://owner/model/framework/variation/version[/file], "
                       "e.g. kaggle://google/paligemma-2/jax/paligemma2-3b-pt-224/1/paligemma2-3b-pt-224.b16.npz")
    return Source(Kind.KAGGLE, uri)
  if uri.startswith("gs://"):
    if len(uri) <= len("gs://") or uri.endswith("/"):
      raise DownloadError(f"bad GCS URI {uri!r}: expected gs://bucket/path/to/file")
    return Source(Kind.GCS, uri)
  if uri.startswith("hf://"):
    if not _HF_RE.match(uri):
      raise DownloadError(f"bad Hugging Face URI {uri!r}: expected hf://org/repo or hf://org/repo@revision (a single "
                          "file such as the mask codec: hf://org/repo[@revision]/file)")
    return Source(Kind.HF, uri)
  if uri.startswith("file://"):
    uri = uri[len("file://"):]
  if "://" in uri:
    raise DownloadError(f"unsupported source {uri!r}: use kaggle://, gs://, hf:// or a local path")
  return Source(Kind.LOCAL, os.path.abspath(os.path.expanduser(uri)))


def kaggle_parts(source: Source) -> tuple[str, str | None]:
  """(`owner/model/framework/variation/version` handle, file or None) of a kaggle:// source."""
  m = _KAGGLE_RE.match(source.uri)
  handle = "/".join(m.group(k) for k in ("owner", "model", "framework", "variation", "version"))
  return handle, m.group("file")


def hf_file(source: Source) -> str | None:
  """The file an hf:// source names after the repo (`hf://org/repo@rev/vae-oid.npz`), or None."""
  return _HF_RE.match(source.uri).group("file")


def kaggle_variation(source: Source) -> str:
  return _KAGGLE_RE.match(source.uri).group("variation")


def hf_parts(source: Source) -> tuple[str, str | None]:
  """(`org/repo`, revision or None) of an hf:// source."""
  m = _HF_RE.match(source.uri)
  return m.group("repo"), m.group("revision")


def gcs_parts(uri: str) -> tuple[str, str]:
  """(bucket, object name) of a gs:// URI."""
  bucket, _, name = uri[len("gs://"):].partition("/")
  return bucket, name


def is_release_name(name: str) -> bool:
  return bool(_RELEASE_RE.match(name))


def release_source(name: str, where: str, dtype: str = "bfloat16", gcs_mirror: str | None = None) -> Source:
  """The source of released model `name` on `where` (kaggle | hf | gcs)."""
  m = _RELEASE_RE.match(name)
  if not m:
    raise DownloadError(f"{name!r} is not a released PaliGemma name (e.g. paligemma-3b-pt-224, "
                        "paligemma2-10b-mix-448); pass a kaggle://, gs://, hf:// URI or a local path with --source")
  family = m.group("family")
  if family == "paligemma" and m.group("size") != "3b":
    raise DownloadError(f"{name!r}: PaliGemma 1 was released in 3b only")
  if where == "hf":
    return parse(f"hf://google/{name}")
  suffixes = _KAGGLE_SUFFIX[family]
  if dtype not in suffixes:
    raise DownloadError(f"{name} is published in {sorted(suffixes)} only, not {dtype}: pass --dtype "
                     f"{next(iter(suffixes))}")
  file = name + suffixes[dtype]
  if where == "kaggle":
    return parse(f"kaggle://google/{_KAGGLE_MODEL[family]}/jax/{name}/{KAGGLE_VERSION}/{file}")
  if where == "gcs":
    if not gcs_mirror:
      raise DownloadError("--source gcs needs --gcs-mirror gs://BUCKET/PREFIX: a copy of the Kaggle files laid out as "
                       f"PREFIX/{name}/{file}")
    return parse(f"{gcs_mirror.rstrip('/')}/{name}/{file}")
  raise DownloadError(f"unknown source {where!r}: use kaggle, gcs, hf or a URI")


def name_from_file(file_name: str) -> str | None:
  """The released name a published checkpoint file is named after (`paligemma2-3b-pt-224.b16.npz`), if any."""
  stem = re.sub(r"(\.(bf16|b16|f16))?\.npz$", "", file_name)
  return stem if is_release_name(stem) else None
