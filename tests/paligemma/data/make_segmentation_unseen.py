"""Makes segmentation_unseen.npz: big_vision's own segmentation ops on a codec and masks that are not in
../shared/fixtures/bigvision/segmentation (other widths and D, a codec fitted so its codes vary).

Two steps, two Python environments (big_vision needs TensorFlow, which this project does not install):

  # 1. this project's venv: a small fitted codec (widths 4-8-8-16, D = 8) and synthetic instance masks
  PYTHONPATH=. .venv/bin/python tests/paligemma/data/make_segmentation_unseen.py prepare /tmp/unseen_in.npz
  # 2. a venv with tensorflow-cpu, jax, flax, einops, ml_collections and a big_vision checkout on PYTHONPATH
  PYTHONPATH=/path/to/big_vision python tests/paligemma/data/make_segmentation_unseen.py bigvision \
      /tmp/unseen_in.npz tests/paligemma/data/segmentation_unseen.npz [--report N]

Stored: `vqvae/<name>` the codec; `mask{i}` uint8 0/255 full-resolution masks, `boxes` [N, 4] float32
(normalised y1, x1, y2, x2: the mask's tight box, or a box a few pixels looser); what big_vision's
`refcoco_mask2str` op writes for each (`suffixes`), the 64×64 crop it encodes (`resized64`), the relative
gap between the nearest and second-nearest code of each token (`index_margin`, from big_vision's
distances); `probe_codes` and `probe_decoded`: big_vision's Flax decoder (its `Decoder`, with the channel
widths read from the file instead of its constants 128/64/32/16) on random codes.
With `--report N`, also compares `components.paligemma.mask_to_suffix` with big_vision on N more masks
(needs this repository on PYTHONPATH and its imports in that venv) and prints the differences.
"""
import sys

import numpy as np


def prepare(out_path: str) -> None:
  from components.paligemma import segmentation, vqvae_fit
  from pipelines import synthetic

  vqvae = vqvae_fit.fit_vqvae(synthetic.segmentation_masks64(2000, seed=11), seed=1, steps=400, batch_size=32,
                              widths=(4, 8, 8, 16), dim=8)
  masks, boxes = _masks(np.random.default_rng(12), 40, segmentation)
  np.savez_compressed(out_path, boxes=np.float32(boxes), **{f"vqvae/{k}": v for k, v in vqvae.items()},
                      **{f"mask{i}": m for i, m in enumerate(masks)})


def _masks(rng, count, segmentation):
  """count (uint8 0/255 mask, normalised box): synthetic objects in images of random sizes; every third
  box is looser than the mask by a few pixels (as annotators draw them)."""
  from pipelines import synthetic

  masks, boxes = [], []
  while len(masks) < count:
    size = int(rng.integers(40, 320))
    _, objects = synthetic.segmentation_image(rng, size)
    for _, mask in objects:
      box = segmentation.mask_box(mask)
      if len(masks) % 3 == 2:
        box = np.clip(box + rng.integers(-4, 5, 4) / size * np.array([-1, -1, 1, 1]), 0, 1)
      masks.append(mask.astype(np.uint8) * 255)
      boxes.append(box)
  return masks[:count], np.asarray(boxes[:count])


def _bigvision_op(vqvae, mask, box):
  """(suffix, resized64, index margins) from big_vision's `refcoco_mask2str` on one mask."""
  import tensorflow as tf
  from big_vision.pp.proj.paligemma import segmentation as bv

  bv.get_checkpoint.cache_clear()
  op = bv.get_refcoco_mask2str(model="unused")  # checkpoint replaced below
  data = {"objects/mask": tf.constant(np.repeat(mask[..., None], 3, axis=-1)),
          "objects/refs/sentence": tf.constant(""), "objects/bbox": tf.constant(np.float32(box))}
  suffix = op(data)["suffix"].numpy().decode()
  h, w = mask.shape
  y1, x1, y2, x2 = (int(tf.cast(tf.round(float(s) * tf.constant(np.float32(b))), tf.int32))
                    for s, b in zip((h, w, h, w), box))
  resized = tf.image.resize(tf.constant(mask[None, y1:y2, x1:x2, None]), [64, 64], method="bilinear",
                            antialias=True) / 255.0
  return suffix, resized.numpy()[0, ..., 0], _margins(vqvae, resized)


def _margins(vqvae, masks64):
  """Relative gap between the nearest and second-nearest code, with big_vision's encoder and distances."""
  import tensorflow as tf
  from big_vision.pp.proj.paligemma import segmentation as bv

  x = bv._norm(tf.ensure_shape(masks64, [None, 64, 64, 1]))
  for n in range(bv.NUM_DOWNSAMPLE_LAYERS):
    x = tf.nn.relu(bv._conv_tf(vqvae, x, strides=2, padding="SAME", layer_name=f"encoder.{2 * n}"))
  for n in range(bv.NUM_RES_BLOCKS):
    x = bv._resblock_tf(vqvae, x, layer_name=f"encoder.{8 + n}.net")
  x = bv._conv_tf(vqvae, x, strides=1, padding="SAME", layer_name="encoder.10")
  e = vqvae["_vq_vae._embedding"]
  flat = tf.reshape(x, [-1, e.shape[1]])
  d = np.sort((tf.reduce_sum(flat**2, axis=1, keepdims=True) + tf.reduce_sum(e**2, axis=1)
               - 2 * tf.matmul(flat, e.T)).numpy(), axis=1)
  return ((d[:, 1] - d[:, 0]) / np.maximum(np.abs(d[:, 1]), 1e-12)).reshape(-1, 16)[0]


def _decoder(vqvae, codes):
  """big_vision's `reconstruct_masks` with its Decoder's widths read from the file."""
  import flax.linen as nn
  import jax.numpy as jnp
  from big_vision.evaluators.proj.paligemma.transfers import segmentation as bv

  widths = [vqvae[f"decoder.{i}.weight"].shape[1] for i in (4, 6, 8, 10)]

  class Decoder(nn.Module):  # big_vision's, with `dim` and its halving replaced by the file's widths
    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Conv(features=vqvae["decoder.0.weight"].shape[0], kernel_size=(1, 1), padding=0)(x))
      for _ in range(2):
        x = bv.ResBlock(features=vqvae["decoder.0.weight"].shape[0])(x)
      for dim in widths:
        x = nn.relu(nn.ConvTranspose(features=dim, kernel_size=(4, 4), strides=(2, 2), padding=2,
                                     transpose_kernel=True)(x))
      return nn.Conv(features=1, kernel_size=(1, 1), padding=0)(x)

  params = bv._get_params(vqvae)
  quantized = bv._quantized_values_from_codebook_indices(jnp.asarray(codes), params["_embeddings"])
  return np.asarray(Decoder().apply({"params": params}, quantized))[..., 0]


def bigvision(in_path: str, out_path: str, report: int = 0) -> None:
  from big_vision.pp.proj.paligemma import segmentation as bv

  with np.load(in_path) as f:
    data = dict(f)
  vqvae = {k[len("vqvae/"):]: v for k, v in data.items() if k.startswith("vqvae/")}
  bv.get_checkpoint = lambda model: vqvae  # the op reads its codec through this (cached) function
  bv.get_checkpoint.cache_clear = lambda: None
  masks = [data[f"mask{i}"] for i in range(len(data["boxes"]))]
  outputs = [_bigvision_op(vqvae, m, b) for m, b in zip(masks, data["boxes"])]
  probe_codes = np.random.default_rng(13).integers(0, 128, (6, 16)).astype(np.int32)
  np.savez_compressed(out_path, **{k: v for k, v in data.items()}, suffixes=np.array([o[0] for o in outputs]),
                      resized64=np.stack([o[1] for o in outputs]), index_margin=np.stack([o[2] for o in outputs]),
                      probe_codes=probe_codes, probe_decoded=_decoder(vqvae, probe_codes))
  if report:
    _report(vqvae, report, bv)


def _report(vqvae, count, bv):
  """Prints how often mask_to_suffix differs from big_vision's op on `count` further masks, and why."""
  from components.paligemma import segmentation, vqvae as vqvae_lib

  masks, boxes = _masks(np.random.default_rng(99), count, segmentation)
  locs = tokens = differ = differ_same_encoder = 0
  max_resize, margins = 0.0, []
  for mask, box in zip(masks, boxes):
    want, resized, margin = _bigvision_op(vqvae, mask, box)
    got = segmentation.mask_to_suffix(mask, box, vqvae)
    locs += got[:36] != want[:36]
    ours = segmentation.crop_resize_mask(mask, box)
    max_resize = max(max_resize, float(np.abs(ours - resized).max()))
    for k, (a, b) in enumerate(zip(got[36:].split(">")[:16], want[36:].split(">")[:16])):
      tokens += 1
      if a != b:
        differ += 1
        margins.append(float(margin[k]))
        differ_same_encoder += int(vqvae_lib.encode_masks(vqvae, resized[None])[0, k] == int(b[4:]))
  print(f"{count} masks: {locs} with other <loc> tokens; {differ} of {tokens} <seg> tokens differ "
        f"({differ_same_encoder} of them come back as big_vision's when our encoder reads big_vision's "
        f"resize); largest resize difference {max_resize:.3g}; margins where they differ: "
        f"{sorted(margins)[:10]} (smallest first)")


if __name__ == "__main__":
  if sys.argv[1] == "prepare":
    prepare(sys.argv[2])
  else:
    bigvision(sys.argv[2], sys.argv[3], int(sys.argv[5]) if len(sys.argv) > 5 else 0)
