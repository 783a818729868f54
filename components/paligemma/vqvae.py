"""PaliGemma's mask codec: the VQ-VAE whose 128 codes are the `<segNNN>` tokens (PALIGEMMA.md §4).

A mask is 16 codebook indices: the encoder turns a 64×64 mask into a 4×4 grid of D-dim vectors, each
replaced by its nearest of the 128 codebook rows; the decoder turns the 4×4 grid of codebook rows back
into a 64×64 map whose positive values are foreground. Same computation as big_vision:
`encode_to_codebook_indices` (big_vision/pp/proj/paligemma/segmentation.py, TF) and `reconstruct_masks`
(big_vision/evaluators/proj/paligemma/transfers/segmentation.py, Flax), on the released file's layout.

    vqvae = load_vqvae("vae-oid.npz")               # or init_vqvae(0), fit_vqvae(masks64, ...)
    codes = encode_masks(vqvae, masks)              # int32[B, 16]
    masks64 = decode_masks(vqvae, codes)            # float32[B, 64, 64], > 0 is foreground

Parameters are a flat dict `{PyTorch-style name: float32 array}` exactly as released (`vae-oid.npz` is
a PyTorch model's state dict): conv weights [out, in, kh, kw], transposed-conv weights [in, out, kh, kw]
(PyTorch's ConvTranspose2d), biases [out], the codebook `_vq_vae._embedding` [128, D]. The architecture
(4 stride-2 convs, 2 residual blocks, a 1×1 projection, and its mirror) is fixed by that layout; the
widths and D are read from each file.

Axes: B batch, H = W = 64 mask side, C channels, D code dimension, K = 128 codes.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from components.paligemma import checkpoint

MASK_SIZE, NUM_CODES, NUM_TOKENS = 64, 128, 16  # 64×64 mask <-> 4×4 grid of codes <-> 16 `<seg>` tokens
CODEBOOK = "_vq_vae._embedding"
ENCODER_DOWN = ("encoder.0", "encoder.2", "encoder.4", "encoder.6")  # 4×4 stride 2, each + ReLU
ENCODER_RES = ("encoder.8.net", "encoder.9.net")
ENCODER_OUT = "encoder.10"  # 1×1 to D
DECODER_IN = "decoder.0"  # 1×1 from D, + ReLU
DECODER_RES = ("decoder.2.net", "decoder.3.net")
DECODER_UP = ("decoder.4", "decoder.6", "decoder.8", "decoder.10")  # transposed 4×4 stride 2, each + ReLU
DECODER_OUT = "decoder.12"  # 1×1 to one channel
RES_CONVS = (("0", 3), ("2", 3), ("4", 1))  # a residual block: 3×3, ReLU, 3×3, ReLU, 1×1, + input
_PRECISION = jax.lax.Precision.HIGHEST  # f32 everywhere (TPU/GPU would otherwise round matmuls)
_RANGE_SLACK = 1e-5  # resized masks overshoot [0, 1] by float error (big_vision's by 1.2e-7); not clipped
_MAX_CHUNK = 256  # masks per compiled call; batches are padded to a power of two up to this

VQVAEParams = dict[str, np.ndarray]


def _layers() -> list[tuple[str, int]]:
  """(layer name, kernel side) of every conv in the layout, in order of application."""
  res = lambda block: [(f"{block}.{i}", k) for i, k in RES_CONVS]
  return ([(n, 4) for n in ENCODER_DOWN] + res(ENCODER_RES[0]) + res(ENCODER_RES[1]) + [(ENCODER_OUT, 1)]
          + [(DECODER_IN, 1)] + res(DECODER_RES[0]) + res(DECODER_RES[1]) + [(n, 4) for n in DECODER_UP]
          + [(DECODER_OUT, 1)])


def param_names() -> list[str]:
  """Every array name of the released layout (`encoder.0.weight`, ..., `_vq_vae._embedding`)."""
  return [f"{layer}.{part}" for layer, _ in _layers() for part in ("weight", "bias")] + [CODEBOOK]


# ----------------------------------------------------------------------------------------------- files

def load_vqvae(path: str) -> VQVAEParams:
  """Reads a codec `.npz` in the released layout (local or gs://); float32 arrays, shapes from the file.

  A wrong file (missing or extra arrays, shapes that do not chain into the architecture) or a corrupt
  or truncated one raises `CheckpointError` naming the file and the array.
  """
  path = str(path)
  try:
    shapes = _stored_shapes(path)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"mask codec {path} not found; pass the VQ-VAE .npz (the released one is "
                            "gs://big_vision/paligemma/vae-oid.npz)") from e
  check_vqvae({name: np.broadcast_to(np.False_, shape) for name, shape in shapes.items()}, path)  # no data yet
  flat = checkpoint.load_flat(path, shapes)
  return {name: np.asarray(flat[name], np.float32) for name in param_names()}


def _stored_shapes(path: str) -> dict[str, tuple[int, ...]]:
  """Name -> shape of every array in the file, from the `.npy` headers alone: a wrong file (a PaliGemma
  checkpoint passed as the codec) fails before gigabytes are read. Corrupt headers raise CheckpointError."""
  with checkpoint._open_zip(path, checkpoint._HEADER_BLOCK) as zf:  # noqa: SLF001 (the model library's own)
    members = checkpoint._member_names(zf, path)  # noqa: SLF001
    return {name: checkpoint._read_header(zf, member, name, path)[0] for name, member in members.items()}  # noqa: SLF001


def save_vqvae(vqvae: Mapping[str, Any], path: str) -> str:
  """Writes a codec in the released layout (float32, atomically; `np.load` reads it as big_vision does)."""
  check_vqvae(vqvae, "the codec to save")
  return checkpoint.save({name: np.asarray(vqvae[name], np.float32) for name in param_names()}, path)


def check_vqvae(vqvae: Mapping[str, Any], where: str) -> None:
  """CheckpointError unless `vqvae` has exactly the released names and shapes that chain together."""
  missing = [n for n in param_names() if n not in vqvae]
  unexpected = sorted(set(vqvae) - set(param_names()))
  if missing or unexpected:
    problems = ([f"missing array(s) {', '.join(missing)}"] if missing else []) + (
        [f"unexpected array(s) {', '.join(unexpected)}"] if unexpected else [])
    raise checkpoint.CheckpointError(f"{where}: {'; '.join(problems)}. Not a PaliGemma mask codec (VQ-VAE) "
                                     "in the released layout (vae-oid.npz)")

  def fail(name: str, why: str):
    raise checkpoint.CheckpointError(f"{where}: array {name!r} has shape {tuple(np.shape(vqvae[name]))}, "
                                     f"{why}. Not a PaliGemma mask codec (VQ-VAE) in the released layout")

  channels = 1  # the encoder reads one channel; each layer's input must be the previous layer's output
  for layer, side in _layers():
    weight, bias = f"{layer}.weight", f"{layer}.bias"
    shape = tuple(np.shape(vqvae[weight]))
    transposed = layer in DECODER_UP
    if len(shape) != 4 or shape[2:] != (side, side):
      fail(weight, f"expected a {side}×{side} conv kernel [{'in, out' if transposed else 'out, in'}, {side}, {side}]")
    c_in, c_out = shape[:2] if transposed else shape[1::-1]
    if layer == DECODER_IN:
      channels = np.shape(vqvae[CODEBOOK])[-1]  # the decoder reads codebook rows
    if c_in != channels:
      fail(weight, f"expected {channels} input channels (the output of the layer before)")
    if tuple(np.shape(vqvae[bias])) != (c_out,):
      fail(bias, f"expected ({c_out},) for the {c_out} outputs of {weight}")
    if layer.startswith(ENCODER_RES + DECODER_RES) and layer.endswith(".4") and c_out != _block_input(vqvae, layer):
      fail(weight, "a residual block must end with as many channels as it starts with")
    channels = c_out
    if layer == ENCODER_OUT:
      codebook = tuple(np.shape(vqvae[CODEBOOK]))
      if codebook != (NUM_CODES, channels):
        raise checkpoint.CheckpointError(
            f"{where}: array {CODEBOOK!r} has shape {codebook}, expected ({NUM_CODES}, {channels}): one row "
            f"per <seg> token, of the encoder's output width. Not a PaliGemma mask codec (VQ-VAE)")
  if channels != 1:
    fail(f"{DECODER_OUT}.weight", "the decoder must end with one channel")


def _block_input(vqvae: Mapping[str, Any], last_conv: str) -> int:
  return int(np.shape(vqvae[last_conv.rsplit(".", 1)[0] + ".0.weight"])[1])


def init_vqvae(rng: int | np.random.Generator = 0, *, widths: tuple[int, ...] = (16, 32, 64, 128),
               dim: int = 512) -> VQVAEParams:
  """A random codec in the released layout: encoder convs to `widths`, D = `dim`, the decoder mirrored.

  The defaults are the released shapes (1→16→32→64→128 channels, D = 512, decoder 128→128→64→32→16→1).
  Weights follow PyTorch's default initialisation (uniform ±1/sqrt(fan_in)), the codebook is uniform
  ±1/128 as in the VQ-VAE reference code. `rng` is a seed or a numpy Generator (numpy, not jax.random:
  40 arrays of distinct shapes would each cost jax a compilation).
  """
  if len(widths) != len(ENCODER_DOWN):
    raise ValueError(f"widths={widths}: the layout has {len(ENCODER_DOWN)} downsampling convs, give 4 widths")
  top = widths[-1]
  up_out = tuple(reversed(widths))  # 128, 64, 32, 16 for the released widths
  shapes = {}  # layer -> weight shape, PyTorch's conventions
  for layer, c_in, c_out in zip(ENCODER_DOWN, (1,) + tuple(widths[:-1]), widths):
    shapes[layer] = (c_out, c_in, 4, 4)
  for block in ENCODER_RES + DECODER_RES:
    for i, k in RES_CONVS:
      shapes[f"{block}.{i}"] = (top, top, k, k)
  shapes[ENCODER_OUT] = (dim, top, 1, 1)
  shapes[DECODER_IN] = (top, dim, 1, 1)
  for layer, c_in, c_out in zip(DECODER_UP, (top,) + up_out[:-1], up_out):
    shapes[layer] = (c_in, c_out, 4, 4)  # ConvTranspose2d stores [in, out, k, k]
  shapes[DECODER_OUT] = (1, up_out[-1], 1, 1)

  rng = np.random.default_rng(rng)
  params = {}
  for layer, _ in _layers():
    shape = shapes[layer]
    bound = 1.0 / np.sqrt(shape[1] * shape[2] * shape[3])  # PyTorch's fan_in reads dim 1, transposed or not
    c_out = shape[1] if layer in DECODER_UP else shape[0]
    params[f"{layer}.weight"] = rng.uniform(-bound, bound, shape).astype(np.float32)
    params[f"{layer}.bias"] = rng.uniform(-bound, bound, (c_out,)).astype(np.float32)
  params[CODEBOOK] = rng.uniform(-1 / NUM_CODES, 1 / NUM_CODES, (NUM_CODES, dim)).astype(np.float32)
  return {name: params[name] for name in param_names()}


# ----------------------------------------------------------------------------------------------- model

def _conv(x, vqvae, layer: str, stride: int = 1):
  """x [B, H, W, C] -> [B, H', W', C']; PyTorch weight [out, in, k, k]; TF's 'SAME' padding (big_vision)."""
  y = jax.lax.conv_general_dilated(x, vqvae[f"{layer}.weight"], (stride, stride), "SAME",
                                   dimension_numbers=("NHWC", "OIHW", "NHWC"), precision=_PRECISION)
  return y + vqvae[f"{layer}.bias"]


def _conv_transpose(x, vqvae, layer: str):
  """x [B, H, W, C] -> [B, 2H, 2W, C']: PyTorch's ConvTranspose2d(kernel 4, stride 2, padding 1), i.e.
  Flax's `ConvTranspose(padding=2, transpose_kernel=True)` of big_vision's decoder.

  Computed as four 2×2 convs, one per output phase, interleaved (sub-pixel form): output row 2m takes
  input rows m-1, m with kernel rows 3, 1; output row 2m+1 takes rows m, m+1 with kernel rows 2, 0 (the
  same for columns). The same sums as the 2×-dilated conv, without multiplying the inserted zeros:
  4× fewer operations, and its gradient is far cheaper on CPU (what fitting a codec spends its time on).
  """
  weight = vqvae[f"{layer}.weight"]  # [in, out, 4, 4]
  taps = {0: ((3, 1), (1, 0)), 1: ((2, 0), (0, 1))}  # phase -> (kernel taps in input order, padding)
  rows = []
  for ry in (0, 1):
    cols = []
    for rx in (0, 1):
      (ky, pad_y), (kx, pad_x) = taps[ry], taps[rx]
      kernel = weight[:, :, list(ky)][:, :, :, list(kx)].transpose(1, 0, 2, 3)  # [out, in, 2, 2]
      cols.append(jax.lax.conv_general_dilated(x, kernel, (1, 1), (pad_y, pad_x),
                                               dimension_numbers=("NHWC", "OIHW", "NHWC"),
                                               precision=_PRECISION))
    rows.append(jnp.stack(cols, axis=3))  # [B, H, W, 2 (rx), C']
  y = jnp.stack(rows, axis=2)  # [B, H, 2 (ry), W, 2 (rx), C']
  b, h, _, w, _, c = y.shape
  return y.reshape(b, 2 * h, 2 * w, c) + vqvae[f"{layer}.bias"]


def _resblock(x, vqvae, block: str):
  y = jax.nn.relu(_conv(x, vqvae, f"{block}.0"))
  y = jax.nn.relu(_conv(y, vqvae, f"{block}.2"))
  return x + _conv(y, vqvae, f"{block}.4")


def encode_latents(vqvae, masks64):
  """masks64 f32[B, 64, 64, 1] in [0, 1] -> the encoder's output f32[B, 4, 4, D] (before quantisation)."""
  x = 2.0 * (masks64 - 0.5)
  for layer in ENCODER_DOWN:
    x = jax.nn.relu(_conv(x, vqvae, layer, stride=2))
  for block in ENCODER_RES:
    x = _resblock(x, vqvae, block)
  return _conv(x, vqvae, ENCODER_OUT)


def nearest_codes(vqvae, latents):
  """latents f32[..., D] -> int32[...] index of the nearest codebook row (big_vision's distance formula)."""
  codebook = vqvae[CODEBOOK]  # [K, D]
  flat = latents.reshape(-1, codebook.shape[1])
  distances = (jnp.sum(flat**2, axis=1, keepdims=True) + jnp.sum(codebook**2, axis=1)
               - 2 * jnp.matmul(flat, codebook.T, precision=_PRECISION))
  return jnp.argmin(distances, axis=1).astype(jnp.int32).reshape(latents.shape[:-1])


def decode_latents(vqvae, quantized):
  """quantized f32[B, 4, 4, D] (codebook rows) -> f32[B, 64, 64, 1], > 0 is foreground."""
  x = jax.nn.relu(_conv(quantized, vqvae, DECODER_IN))
  for block in DECODER_RES:
    x = _resblock(x, vqvae, block)
  for layer in DECODER_UP:
    x = jax.nn.relu(_conv_transpose(x, vqvae, layer))
  return _conv(x, vqvae, DECODER_OUT)


@jax.jit
def _encode(vqvae, masks64):  # f32[B, 64, 64, 1] -> int32[B, 16]
  return nearest_codes(vqvae, encode_latents(vqvae, masks64)).reshape(masks64.shape[0], NUM_TOKENS)


@jax.jit
def _decode(vqvae, codes):  # int32[B, 16] -> f32[B, 64, 64]
  grid = int(np.sqrt(NUM_TOKENS))
  quantized = jnp.take(vqvae[CODEBOOK], codes, axis=0).reshape(codes.shape[0], grid, grid, -1)
  return decode_latents(vqvae, quantized)[..., 0]


def _in_chunks(fn, vqvae, x: np.ndarray) -> np.ndarray:
  """fn over x in chunks of at most _MAX_CHUNK rows, each padded to a power of two (few compilations)."""
  arrays = {name: jnp.asarray(vqvae[name], jnp.float32) for name in param_names()}
  outputs = []
  for start in range(0, len(x), _MAX_CHUNK):
    chunk = x[start:start + _MAX_CHUNK]
    padded = min(_MAX_CHUNK, 1 << max(len(chunk) - 1, 0).bit_length())
    chunk = np.concatenate([chunk, np.zeros((padded - len(chunk),) + chunk.shape[1:], chunk.dtype)])
    outputs.append(np.asarray(fn(arrays, chunk))[:len(x) - start])
  return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)


def encode_masks(vqvae: Mapping[str, Any], masks) -> np.ndarray:
  """masks [B, 64, 64] or [B, 64, 64, 1] in [0, 1] (bool or float) -> codes int32[B, 16].

  The indices big_vision's `encode_to_codebook_indices` gives (row-major over the 4×4 grid).
  """
  masks = np.asarray(masks, np.float32)
  if masks.ndim == 4 and masks.shape[-1] == 1:
    masks = masks[..., 0]
  if masks.ndim != 3 or masks.shape[1:] != (MASK_SIZE, MASK_SIZE):
    raise ValueError(f"masks have shape {masks.shape}; the codec encodes [B, 64, 64] or [B, 64, 64, 1] "
                     "(crop and resize full-resolution masks with segmentation.crop_resize_mask)")
  if masks.size and not (masks.min() >= -_RANGE_SLACK and masks.max() <= 1.0 + _RANGE_SLACK):  # and NaN
    raise ValueError(f"mask values must lie in [0, 1], got [{masks.min()}, {masks.max()}]")
  if not len(masks):
    return np.zeros((0, NUM_TOKENS), np.int32)
  return _in_chunks(_encode, vqvae, masks[..., None]).astype(np.int32)


def decode_masks(vqvae: Mapping[str, Any], codes) -> np.ndarray:
  """codes int[B, 16] in 0..127 -> float32[B, 64, 64]: big_vision's `reconstruct_masks` squeezed.

  Values > 0 are foreground (the released decoder gives roughly [-1, 1]).
  """
  codes = np.asarray(codes)
  if codes.ndim != 2 or codes.shape[1] != NUM_TOKENS or not np.issubdtype(codes.dtype, np.integer):
    raise ValueError(f"codes have shape {codes.shape} and dtype {codes.dtype}; expected integers [B, 16]")
  if codes.size and not (codes.min() >= 0 and codes.max() < NUM_CODES):
    raise ValueError(f"codes must lie in 0..{NUM_CODES - 1}, got [{codes.min()}, {codes.max()}]")
  if not len(codes):
    return np.zeros((0, MASK_SIZE, MASK_SIZE), np.float32)
  return _in_chunks(_decode, vqvae, codes.astype(np.int32)).astype(np.float32)
