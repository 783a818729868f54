"""Fitting a small codec of the released layout: it learns the masks it is fitted on, and uses its codes."""
import numpy as np
import pytest

from components import paligemma
from components.paligemma import vqvae_fit
from pipelines import synthetic


@pytest.fixture(scope="module")
def masks():
  return synthetic.segmentation_masks64(600, seed=0), synthetic.segmentation_masks64(150, seed=1)


@pytest.mark.slow  # ~15 s on an idle 2-core machine, a minute under load
def test_fit_learns_held_out_masks(masks):
  train, held_out = masks
  messages = []
  vqvae = paligemma.fit_vqvae(train, seed=0, steps=300, batch_size=16, widths=(4, 8, 8, 16), dim=8,
                              progress=messages.append)
  paligemma.vqvae.check_vqvae(vqvae, "fitted")  # the released layout, savable and loadable as any codec
  assert vqvae["_vq_vae._embedding"].shape == (128, 8) and vqvae["encoder.0.weight"].shape == (4, 1, 4, 4)
  fitted = vqvae_fit.reconstruction_iou(vqvae, held_out).mean()
  # Crops are mostly foreground: "all foreground" (what an untrained codec decodes) already scores ~0.67.
  all_foreground = ((held_out > 0.5).sum(axis=(1, 2)) / 64**2).mean()
  assert all_foreground < 0.7 and fitted > 0.8, (fitted, all_foreground)
  assert len(np.unique(paligemma.encode_masks(vqvae, held_out))) > 40  # codes restart: many are in use
  assert len(messages) == 10 and "step 300/300" in messages[-1] and "masks/s" in messages[-1]


def test_fit_is_deterministic_and_checks_its_input(masks):
  train, _ = masks
  a, b = (paligemma.fit_vqvae(train[:64], seed=3, steps=3, batch_size=16, widths=(4, 4, 4, 4), dim=4,
                              progress=lambda _: None) for _ in range(2))
  assert all(np.array_equal(a[k], b[k]) for k in a)
  with pytest.raises(ValueError, match="10 masks for batches of 16"):
    paligemma.fit_vqvae(train[:10], steps=1, batch_size=16)


def test_reconstruction_iou_of_empty_masks_is_one():
  vqvae = paligemma.init_vqvae(0, widths=(4, 4, 4, 4), dim=4)
  codes = paligemma.encode_masks(vqvae, np.zeros((1, 64, 64)))
  empty_decodes_empty = not (paligemma.decode_masks(vqvae, codes) > 0).any()
  assert vqvae_fit.reconstruction_iou(vqvae, np.zeros((1, 64, 64)))[0] == (1.0 if empty_decodes_empty else 0.0)
