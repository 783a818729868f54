"""The download step: a checkpoint and a tokenizer from any source into a model directory.

    plan (name -> source, model_cfg)  ->  reuse verified files  ->  fetch with retries  ->  model.json
    ->  manifest.json last (a directory with a manifest is complete)  ->  upload when DIR is gs://

A model directory (docs/ARCHITECTURE.md): `<checkpoint>.npz`, `tokenizer.model`, `model.json` (the
model_cfg plus `name` and `checkpoint`), `manifest.json` (`files`: name -> source, size, sha256, crc32c);
with `vqvae` (segmentation) also the mask codec, e.g. `vae-oid.npz`, named by model.json's `vqvae`.
model.json comes from the released name, an hf:// checkpoint's config.json, the model.json beside the
source, or else the checkpoint's own array shapes (`components.paligemma.infer_config`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import posixpath
import time

import requests
from google.api_core import exceptions as gexc

import components
from components.download import files, gcs, hf, kaggle, secrets, sources, validate
from components.download.model_dir import MANIFEST, MODEL_JSON, TOKENIZER, ModelDir, read_if_file
from components.download.errors import ChecksumError, DownloadError, TransientError
from components.download.sources import DEFAULT_TOKENIZER, VQVAE_FILE, Kind, Source

PACKAGE_VERSION = components.__version__
RETRIES = 3
RETRY_WAIT_S = 1.0
# Errors worth another attempt: bad bytes, dropped connections, overloaded servers. The clients resume
# partial files, so a retry fetches only what is missing. (huggingface_hub retries its own transport errors.)
TRANSIENT = (ChecksumError, TransientError, ConnectionError, TimeoutError, requests.exceptions.ConnectionError,
             requests.exceptions.ChunkedEncodingError, requests.exceptions.Timeout, gexc.ServerError,
             gexc.TooManyRequests)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Options:
  """How to fetch: a Hugging Face token from a mounted file (else HF_TOKEN is used), GCS chunk size."""
  hf_token: str | None = None
  gcs_chunk_bytes: int = gcs.CHUNK_BYTES


@dataclasses.dataclass
class Plan:
  """What to fetch: the checkpoint source, the model's name and config when known before fetching."""
  checkpoint: Source
  tokenizer: Source | None  # None: the tokenizer beside the checkpoint, else the default
  name: str | None
  model_cfg: dict | None
  kaggle_file: str | None = None  # the file of a kaggle:// URI that names none
  dtype: str | None = None  # cast on conversion (hf sources)


def plan(model: str, source: str | None = None, tokenizer: str | None = None, dtype: str = "bfloat16",
         gcs_mirror: str | None = None) -> Plan:
  """Turns the CLI's --model/--source/--tokenizer into a Plan; bad combinations are clear errors."""
  if dtype not in sources.DTYPES:
    raise DownloadError(f"--dtype {dtype} is not one of {sources.DTYPES}")
  tok = sources.parse(tokenizer) if tokenizer else None
  if _is_uri(model):
    if source is not None:
      raise DownloadError(f"--model is already a source ({model}); --source {source} is for a model NAME")
    ckpt = _checkpoint_of_model_dir(_checkpoint_source(model))
    name = _name_of(ckpt)
    return Plan(ckpt, tok, name, _model_config(name) if name else None, _kaggle_file(ckpt, dtype), dtype)
  model_cfg = _model_config(model)
  if source is None or source in ("kaggle", "gcs", "hf"):
    if not sources.is_release_name(model):
      raise DownloadError(f"{model} is a configuration, not a released checkpoint: give the weights with "
                          "--source URI (kaggle://, gs://, hf:// or a path)")
    ckpt = sources.release_source(model, source or "kaggle", dtype, gcs_mirror)
  else:
    ckpt = _checkpoint_of_model_dir(_checkpoint_source(source))
  return Plan(ckpt, tok, model, model_cfg, _kaggle_file(ckpt, dtype), dtype)


def _checkpoint_source(uri: str) -> Source:
  """A checkpoint's source; an hf:// checkpoint is a whole repo (a file of one is for the mask codec)."""
  src = sources.parse(uri)
  if src.kind is Kind.HF and sources.hf_file(src):
    raise DownloadError(f"{uri}: an hf:// checkpoint is a transformers repo, hf://org/repo[@revision]; a single "
                        "file of a repo is for --vqvae or --tokenizer")
  return src


def download_model(model: str, output: str, source: str | None = None, tokenizer: str | None = None,
                   dtype: str = "bfloat16", *, gcs_mirror: str | None = None, kaggle_credentials: str | None = None,
                   hf_credentials: str | None = None, cache_dir: str | None = None, retries: int = RETRIES,
                   gcs_chunk_mib: int = gcs.CHUNK_BYTES // 2**20, vqvae: str | None = None) -> str:
  """Fills model directory `output` (local or gs://) and returns it. See the module docstring.

  `vqvae`: the mask codec's source (any kind a checkpoint may come from; segmentation needs it), fetched beside
  the checkpoint, checked by the model library's loader and named in model.json's `vqvae`."""
  if retries < 1 or gcs_chunk_mib < 1:
    raise DownloadError(f"--retries ({retries}) and --gcs-chunk-mib ({gcs_chunk_mib}) must be at least 1")
  p = plan(model, source, tokenizer, dtype, gcs_mirror)
  vqvae_source = sources.parse(vqvae) if vqvae else None
  if kaggle_credentials:
    kaggle.use_credentials_file(kaggle_credentials)
  opts = Options(hf.read_token_file(hf_credentials) if hf_credentials else None, gcs_chunk_mib * 2**20)
  out = ModelDir(output, cache_dir)
  manifest = out.read_manifest()
  entries: dict[str, dict] = {}

  # The checkpoint.
  ckpt_key = {"source": p.checkpoint.uri, "dtype": p.dtype if p.checkpoint.kind is Kind.HF else None}
  ckpt_name, stale = out.lookup(manifest, ckpt_key)
  # What an earlier run into DIR resolved for this same checkpoint (saves asking the source again).
  previous = out.previous_model_json(ckpt_name) if ckpt_name else None
  previous_tok = manifest["files"].get(TOKENIZER, {}).get("source") if ckpt_name else None
  snapshot_dir = None
  if ckpt_name is None:
    ckpt_name, entry, snapshot_dir, hf_cfg = _with_retries(
        lambda force: _fetch_checkpoint(p, out, opts, force), p.checkpoint.uri, retries, force=stale)
    entries[ckpt_name] = {**entry, **ckpt_key}
    if hf_cfg is not None and p.model_cfg is None:
      p.model_cfg = hf_cfg
  else:
    entries[ckpt_name] = manifest["files"][ckpt_name]

  # The tokenizer: --tokenizer, else the one beside the checkpoint (hf repo, model dir), else the default.
  tok_source = (p.tokenizer or (sources.parse(previous_tok) if previous_tok else None)
                or _tokenizer_beside(p.checkpoint, snapshot_dir) or sources.parse(DEFAULT_TOKENIZER))
  tok_key = {"source": tok_source.uri, "dtype": None}
  tok_name, stale = out.lookup(manifest, tok_key, TOKENIZER)
  if tok_name is None:
    entry = _with_retries(lambda force: _fetch_file(tok_source, out.local(TOKENIZER), opts, force,
                                                    validate.tokenizer), tok_source.uri, retries, force=stale)
    entries[TOKENIZER] = {**entry, **tok_key}
  else:
    entries[TOKENIZER] = manifest["files"][TOKENIZER]

  # The mask codec, when asked for: any source kind, like the checkpoint.
  vqvae_name = None
  if vqvae_source is not None:
    vqvae_key = {"source": vqvae_source.uri, "dtype": None}
    vqvae_name, stale = out.lookup(manifest, vqvae_key)
    if vqvae_name is None or vqvae_name == ckpt_name:  # (the checkpoint's own URI given as the codec: refused)
      vqvae_name, entry = _with_retries(lambda force: _fetch_vqvae(vqvae_source, out, opts, force, taken=ckpt_name),
                                        vqvae_source.uri, retries, force=stale)
      entries[vqvae_name] = {**entry, **vqvae_key}
    else:
      entries[vqvae_name] = manifest["files"][vqvae_name]

  # model.json, then the manifest that marks the directory complete.
  known = previous or (_model_json_beside(p.checkpoint) if p.model_cfg is None else None)
  name = p.name or (known or {}).get("name")
  model_cfg = p.model_cfg or _model_cfg_of(known)
  if model_cfg is None:  # a bare checkpoint: its array shapes say which model it is
    local = out.local(ckpt_name)
    inferred = _infer_config(local if os.path.isfile(local) else f"{out.uri}/{ckpt_name}", p.checkpoint.uri)
    model_cfg, name = inferred.model_cfg, name or inferred.name
    log.info("%s: configuration inferred from its array shapes: %s", p.checkpoint.uri, name)
  name = name or ckpt_name.removesuffix(".npz")
  files.write_json_atomic(out.local(MODEL_JSON), {**model_cfg, "name": name, "checkpoint": ckpt_name,
                                                  **({"vqvae": vqvae_name} if vqvae_name else {})})
  entries[MODEL_JSON] = {**_entry(out.local(MODEL_JSON)), "source": "generated"}
  for file_name in entries:
    out.publish(file_name, entries[file_name])
  out.write_manifest({"name": name, "checkpoint": ckpt_name, "files": entries, "package_version": PACKAGE_VERSION,
                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
  log.info("model directory ready: %s (%s, checkpoint %s, %s)", output, name, ckpt_name,
           files.human(entries[ckpt_name]["size"]))
  return output


def _fetch_checkpoint(p: Plan, out: ModelDir, opts: Options, force: bool):
  """(file name, manifest entry, hf snapshot dir or None, model_cfg from hf or None)."""
  if p.checkpoint.kind is Kind.HF:
    snap, commit = hf.snapshot(p.checkpoint, opts.hf_token, force)
    hf.verify_snapshot(snap)
    name = p.checkpoint.basename + ".npz"
    model_cfg = hf.convert(snap, out.local(name), p.dtype)
    return name, {**_entry(out.local(name)), "revision": commit}, snap, model_cfg
  if p.checkpoint.kind is Kind.KAGGLE:
    cached = kaggle.download(p.checkpoint, p.kaggle_file, force)
    name = os.path.basename(cached)
    files.place(cached, out.local(name))
  else:
    name = p.checkpoint.basename
    entry = _fetch_file(p.checkpoint, out.local(name), opts, force, validate.checkpoint)
    return name, entry, None, None
  validate.checkpoint(out.local(name))
  return name, _entry(out.local(name)), None, None


def _fetch_vqvae(src: Source, out: ModelDir, opts: Options, force: bool, taken: str) -> tuple[str, dict]:
  """(file name in DIR, manifest entry) of the mask codec: the source's file name (a Kaggle version naming no
  file: its one .npz; an hf:// repo naming none: `vae-oid.npz`), checked by `load_vqvae`."""
  if src.kind is Kind.KAGGLE:
    cached = kaggle.download(src, None, force)
    name = os.path.basename(cached)
  else:
    name = posixpath.basename(sources.hf_file(src) or VQVAE_FILE) if src.kind is Kind.HF else src.basename
  if name in (taken, TOKENIZER, MODEL_JSON, MANIFEST):
    raise DownloadError(f"--vqvae {src.uri}: its file name {name} is taken in the model directory (the "
                        "checkpoint, tokenizer or a metadata file); rename the codec")
  if src.kind is Kind.KAGGLE:
    files.place(cached, out.local(name))
    validate.vqvae(out.local(name), src.uri)
    return name, _entry(out.local(name))
  return name, _fetch_file(src, out.local(name), opts, force, lambda path: validate.vqvae(path, src.uri),
                           hf_file=VQVAE_FILE)


def _fetch_file(src: Source, dest: str, opts: Options, force: bool, check=None, hf_file: str = TOKENIZER) -> dict:
  """Puts the single file `src` at `dest` atomically and returns its manifest entry (of an hf:// repo: the file
  its URI names, else `hf_file`)."""
  digest = None  # computed while fetching where the fetch reads the bytes back anyway (GCS's crc32c check)
  if src.kind is Kind.GCS:
    digest = gcs.download(src.uri, dest, gcs.client(), opts.gcs_chunk_bytes)
  elif src.kind is Kind.KAGGLE:
    files.place(kaggle.download(src, None, force), dest)
  elif src.kind is Kind.HF:
    hf_file = sources.hf_file(src) or hf_file
    snap, _ = hf.snapshot(src, opts.hf_token, force, only=hf_file)
    hf.verify_snapshot(snap)
    files.place(os.path.realpath(os.path.join(snap, hf_file)), dest)
  else:
    if not os.path.isfile(src.uri):
      raise DownloadError(f"{src.uri} does not exist or is not a file")
    if os.path.abspath(src.uri) != os.path.abspath(dest):
      files.copy(src.uri, dest)
  if check is not None:
    check(dest)
  return _entry(dest, digest)


def _with_retries(fetch, what: str, retries: int, force: bool = False):
  """Calls `fetch(force)`; a transient failure is retried (`force` after a checksum error, so a bad cached
  copy is fetched again) up to `retries` times, then becomes a clear error."""
  for attempt in range(1, retries + 1):
    try:
      return fetch(force)
    except TRANSIENT as e:
      reason = secrets.redact(" ".join(str(e).split()))[:300]
      force = force or isinstance(e, ChecksumError)
      if attempt == retries:
        if isinstance(e, ChecksumError):
          raise ChecksumError(f"{what} failed its checksum {retries} times ({reason}). The copy at the source may be "
                              "corrupted; try again later or report it to the publisher.") from None
        raise DownloadError(f"could not download {what} after {retries} attempts: {reason}") from None
      log.warning("attempt %d/%d for %s failed (%s); retrying", attempt, retries, what, reason)
      time.sleep(RETRY_WAIT_S * attempt)


def _entry(path: str, digest: files.Digest | None = None) -> dict:
  d = digest or files.digest(path, crc32c=True)
  return {"size": d.size, "sha256": d.sha256, "crc32c": d.crc32c}


def _is_uri(model: str) -> bool:
  return "://" in model or os.sep in model or model.endswith(".npz") or os.path.exists(model)


def _model_config(name: str) -> dict:
  from components.paligemma import configs  # the model library owns the configurations

  try:
    return configs.model_config(name)
  except (KeyError, ValueError) as e:
    raise DownloadError(f"unknown model {name!r} ({e}): use a released name such as paligemma2-3b-pt-224 or "
                        "paligemma-3b-mix-448, or a kaggle://, gs://, hf:// URI or a path") from None


def _infer_config(path: str, source_uri: str):
  """The model library's reading of a checkpoint's array shapes (headers only), errors in the source's name."""
  from components.paligemma import CheckpointError, infer_config  # the model library owns the configurations

  try:
    return infer_config(path)
  except CheckpointError as e:
    raise DownloadError(str(e).replace(path, source_uri, 1)) from None


def _checkpoint_of_model_dir(src: Source) -> Source:
  """A model directory given as the source (local or gs://, e.g. an earlier download) stands for its
  checkpoint; model.json and tokenizer.model beside it are then picked up too."""
  if src.kind is Kind.LOCAL and os.path.isdir(src.uri):
    text = read_if_file(os.path.join(src.uri, MODEL_JSON))
    if text is None:
      raise DownloadError(f"{src.uri} is a directory without {MODEL_JSON}: give the checkpoint .npz itself")
  elif src.kind is Kind.GCS and not src.uri.endswith(".npz"):
    text = gcs.read_text(f"{src.uri.rstrip('/')}/{MODEL_JSON}", gcs.client())
  else:
    return src
  if text is None:
    return src
  return sources.parse(f"{src.uri.rstrip('/')}/{json.loads(text)['checkpoint']}")


def _name_of(src: Source) -> str | None:
  """The released name a source is (a Kaggle variation, a published file name), if it is one."""
  if src.kind is Kind.KAGGLE:
    variation = sources.kaggle_variation(src)
    return variation if sources.is_release_name(variation) else None
  if src.kind in (Kind.GCS, Kind.LOCAL):
    return sources.name_from_file(src.basename)
  return None  # hf: from_hf tells the config; the name is the repo's


def _kaggle_file(src: Source, dtype: str) -> str | None:
  """The published file of `dtype` for a kaggle:// URI of a released variation that names no file."""
  if src.kind is not Kind.KAGGLE or sources.kaggle_parts(src)[1]:
    return None
  variation = sources.kaggle_variation(src)
  return sources.release_source(variation, "kaggle", dtype).basename if sources.is_release_name(variation) else None


def _beside(src: Source, file_name: str) -> str | None:
  """The text of `file_name` in the checkpoint's directory (local or gs://), if there is one."""
  if src.kind is Kind.LOCAL:
    return read_if_file(os.path.join(os.path.dirname(src.uri), file_name))
  if src.kind is Kind.GCS:
    return gcs.read_text(f"{src.uri.rsplit('/', 1)[0]}/{file_name}", gcs.client())
  return None


def _model_json_beside(src: Source) -> dict | None:
  text = _beside(src, MODEL_JSON)
  return json.loads(text) if text else None


def _model_cfg_of(model_json: dict | None) -> dict | None:
  return {k: v for k, v in model_json.items() if k not in ("name", "checkpoint", "vqvae")} if model_json else None


def _tokenizer_beside(src: Source, snapshot_dir: str | None) -> Source | None:
  if src.kind is Kind.HF:
    return src if snapshot_dir is None or os.path.exists(os.path.join(snapshot_dir, TOKENIZER)) else None
  if src.kind is Kind.LOCAL:
    path = os.path.join(os.path.dirname(src.uri), TOKENIZER)
    return sources.parse(path) if os.path.isfile(path) else None
  if src.kind is Kind.GCS:
    uri = f"{src.uri.rsplit('/', 1)[0]}/{TOKENIZER}"
    return sources.parse(uri) if gcs.crc32c_of(uri, gcs.client()) is not None else None
  return None
