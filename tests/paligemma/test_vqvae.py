"""The mask codec: parity with big_vision's own outputs, a PyTorch reference on unseen widths, file errors."""
import pathlib
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from components import paligemma
from components.paligemma import vqvae as vqvae_lib
from components.paligemma.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def released(bigvision_fixtures):
  """The fixture codec (released layout and widths, D = 512) and big_vision's inputs/outputs on it."""
  folder = bigvision_fixtures / "segmentation"
  return paligemma.load_vqvae(folder / "vqvae.npz"), dict(np.load(folder / "io.npz")), folder


def test_encode_equals_big_vision_indices(released):
  vqvae, io, _ = released
  assert io["index_margin"].min() > 1e-2  # the fixture's indices are no near-ties: exact equality is fair
  codes = paligemma.encode_masks(vqvae, io["masks64"])
  assert codes.dtype == np.int32 and codes.shape == (12, 16)
  np.testing.assert_array_equal(codes, io["indices"])
  np.testing.assert_array_equal(paligemma.encode_masks(vqvae, io["masks64"][..., None]), io["indices"])


def test_decode_equals_big_vision_reconstruct_masks(released):
  vqvae, io, _ = released
  for codes, want in ((io["indices"], io["decoded"]), (io["probe_indices"], io["probe_decoded"])):
    got = paligemma.decode_masks(vqvae, codes)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert np.array_equal(got > 0, want > 0)


def test_batches_of_any_size_give_the_same_codes(released):
  """Batches are cut into padded chunks: a row's result must not depend on its batch."""
  vqvae, io, _ = released
  masks = np.concatenate([io["masks64"]] * 25)  # 300 rows: a 256 chunk and a padded 64 chunk
  np.testing.assert_array_equal(paligemma.encode_masks(vqvae, masks), np.concatenate([io["indices"]] * 25))
  np.testing.assert_array_equal(paligemma.encode_masks(vqvae, masks[:1]), io["indices"][:1])
  assert paligemma.encode_masks(vqvae, masks[:0]).shape == (0, 16)
  assert paligemma.decode_masks(vqvae, io["indices"][:0]).shape == (0, 64, 64)


def test_bad_inputs_are_refused(released):
  vqvae, io, _ = released
  with pytest.raises(ValueError, match=r"shape \(12, 32, 32\)"):
    paligemma.encode_masks(vqvae, io["masks64"][:, :32, :32])
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    paligemma.encode_masks(vqvae, io["masks64"] * 255)
  with pytest.raises(ValueError, match="0..127"):
    paligemma.decode_masks(vqvae, np.full((1, 16), 128))
  with pytest.raises(ValueError, match=r"\[B, 16\]"):
    paligemma.decode_masks(vqvae, np.zeros((1, 15), np.int32))


# ------------------------------------------------------------------------- unseen widths: PyTorch reference

def torch_latents(vqvae, masks64):
  """The PyTorch model the released layout comes from: Conv2d(4, stride 2, padding 1) ×4, residual blocks."""
  p = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in vqvae.items()}
  conv = lambda x, name, **kw: F.conv2d(x, p[f"{name}.weight"], p[f"{name}.bias"], **kw)
  x = 2 * torch.from_numpy(np.asarray(masks64, np.float32))[:, None] - 1
  for name in vqvae_lib.ENCODER_DOWN:
    x = F.relu(conv(x, name, stride=2, padding=1))
  for block in vqvae_lib.ENCODER_RES:
    x = x + conv(F.relu(conv(F.relu(conv(x, f"{block}.0", padding=1)), f"{block}.2", padding=1)), f"{block}.4")
  return conv(x, vqvae_lib.ENCODER_OUT).permute(0, 2, 3, 1).numpy()  # [B, 4, 4, D]


def torch_decode(vqvae, codes):
  p = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in vqvae.items()}
  conv = lambda x, name, **kw: F.conv2d(x, p[f"{name}.weight"], p[f"{name}.bias"], **kw)
  q = p[vqvae_lib.CODEBOOK][torch.from_numpy(np.asarray(codes, np.int64))]  # [B, 16, D]
  x = q.reshape(len(codes), 4, 4, -1).permute(0, 3, 1, 2)
  x = F.relu(conv(x, vqvae_lib.DECODER_IN))
  for block in vqvae_lib.DECODER_RES:
    x = x + conv(F.relu(conv(F.relu(conv(x, f"{block}.0", padding=1)), f"{block}.2", padding=1)), f"{block}.4")
  for name in vqvae_lib.DECODER_UP:
    x = F.relu(F.conv_transpose2d(x, p[f"{name}.weight"], p[f"{name}.bias"], stride=2, padding=1))
  return conv(x, vqvae_lib.DECODER_OUT)[:, 0].numpy()


@pytest.fixture(scope="module")
def unseen():
  """A codec of other widths and D whose codebook rows are the latents of 8 random masks' 16 cells, so
  that encoding those masks must give codes 0..127 in order (distance 0 to their own row)."""
  rng = np.random.default_rng(7)
  vqvae = paligemma.init_vqvae(3, widths=(8, 12, 24, 40), dim=24)
  masks = rng.random((8, 64, 64)).astype(np.float32)
  vqvae[vqvae_lib.CODEBOOK] = torch_latents(vqvae, masks).reshape(128, 24)
  return vqvae, masks


def test_unseen_widths_encode_like_pytorch(unseen):
  vqvae, masks = unseen
  np.testing.assert_array_equal(paligemma.encode_masks(vqvae, masks), np.arange(128).reshape(8, 16))
  other = np.random.default_rng(8).random((16, 64, 64)) > 0.5
  got = np.asarray(vqvae_lib.encode_latents({k: np.asarray(v) for k, v in vqvae.items()},
                                            other[..., None].astype(np.float32)))
  want = torch_latents(vqvae, other)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_unseen_widths_decode_like_pytorch(unseen):
  vqvae, _ = unseen
  codes = np.random.default_rng(9).integers(0, 128, (10, 16))
  want = torch_decode(vqvae, codes)
  np.testing.assert_allclose(paligemma.decode_masks(vqvae, codes), want, rtol=0, atol=1e-5 * np.abs(want).max())


# ----------------------------------------------------------------------------------------- files, init

def test_init_has_the_released_shapes(released):
  vqvae, _, _ = released
  fresh = paligemma.init_vqvae(0)
  assert list(fresh) == vqvae_lib.param_names()
  assert {k: v.shape for k, v in fresh.items()} == {k: v.shape for k, v in vqvae.items()}
  assert all(v.dtype == np.float32 for v in fresh.values())
  assert not np.array_equal(fresh["encoder.0.weight"], paligemma.init_vqvae(1)["encoder.0.weight"])


@pytest.mark.parametrize("widths, dim", [((16, 32, 64, 128), 512), ((4, 8, 16, 32), 16), ((8, 8, 8, 8), 3)])
def test_save_load_round_trip(tmp_path, widths, dim):
  vqvae = paligemma.init_vqvae(5, widths=widths, dim=dim)
  path = paligemma.save_vqvae(vqvae, tmp_path / "codec.npz")
  back = paligemma.load_vqvae(path)
  assert back.keys() == vqvae.keys() and all(np.array_equal(back[k], vqvae[k]) for k in vqvae)
  assert back["_vq_vae._embedding"].shape == (128, dim) and back["decoder.10.weight"].shape == (widths[1], widths[0], 4, 4)
  with np.load(path) as raw:  # what big_vision's np.load sees: the released names
    assert sorted(raw.files) == sorted(vqvae_lib.param_names())
  codes = np.random.default_rng(0).integers(0, 128, (3, 16))
  np.testing.assert_array_equal(paligemma.decode_masks(back, codes), paligemma.decode_masks(vqvae, codes))


def test_released_fixture_round_trips_bit_identical(released, tmp_path):
  vqvae, io, folder = released
  back = paligemma.load_vqvae(paligemma.save_vqvae(vqvae, tmp_path / "copy.npz"))
  with np.load(folder / "vqvae.npz") as raw:
    assert all(np.array_equal(back[k], raw[k]) for k in raw.files)


def test_bf16_file_loads_as_float32(released, tmp_path):
  vqvae, _, _ = released
  paligemma.save(vqvae, tmp_path / "bf16.npz", dtype="bfloat16")
  back = paligemma.load_vqvae(tmp_path / "bf16.npz")
  assert all(v.dtype == np.float32 for v in back.values())
  np.testing.assert_allclose(back["decoder.12.weight"], vqvae["decoder.12.weight"], rtol=1e-2)


def test_wrong_file_names_the_array(tmp_path):
  vqvae = paligemma.init_vqvae(0, widths=(4, 8, 16, 32), dim=8)
  cases = {
      "missing": ({k: v for k, v in vqvae.items() if k != "decoder.6.bias"}, r"missing array\(s\) decoder.6.bias"),
      "extra": ({**vqvae, "encoder.11.weight": np.zeros(3, np.float32)}, r"unexpected array\(s\) encoder.11.weight"),
      "kernel": ({**vqvae, "encoder.2.weight": np.zeros((8, 4, 3, 3), np.float32)}, "'encoder.2.weight'.*4×4"),
      "chain": ({**vqvae, "encoder.4.weight": np.zeros((16, 7, 4, 4), np.float32)}, "'encoder.4.weight'.*8 input"),
      "bias": ({**vqvae, "decoder.8.bias": np.zeros(5, np.float32)}, r"'decoder.8.bias'.*\(8,\)"),
      "codebook": ({**vqvae, "_vq_vae._embedding": np.zeros((64, 8), np.float32)}, r"\(128, 8\)"),
  }
  for name, (params, pattern) in cases.items():
    np.savez(tmp_path / f"{name}.npz", **params)
    with pytest.raises(CheckpointError, match=f"{name}.npz.*{pattern}"):
      paligemma.load_vqvae(tmp_path / f"{name}.npz")


def test_wrong_file_fails_on_headers_before_reading_data(tmp_path):
  """An extra array whose data is corrupt: the name check (from the headers) speaks first."""
  vqvae = paligemma.init_vqvae(0, widths=(4, 8, 16, 32), dim=8)
  np.savez(tmp_path / "extra.npz", **vqvae, junk=np.zeros(4096, np.float32))
  data = bytearray((tmp_path / "extra.npz").read_bytes())
  with zipfile.ZipFile(tmp_path / "extra.npz") as zf:
    info = zf.getinfo("junk.npy")
  at = info.header_offset + 30 + len(info.filename) + len(info.extra) + 128 + 1000
  data[at:at + 64] = bytes(255 for _ in range(64))
  (tmp_path / "extra.npz").write_bytes(bytes(data))
  with pytest.raises(CheckpointError, match=r"unexpected array\(s\) junk"):
    paligemma.load_vqvae(tmp_path / "extra.npz")


def test_paligemma_checkpoint_is_not_a_codec(bigvision_fixtures):
  with pytest.raises(CheckpointError, match="tiny_v1.params.npz: missing array.*Not a PaliGemma mask codec"):
    paligemma.load_vqvae(bigvision_fixtures / "tiny_v1.params.npz")


def test_truncated_and_missing_files(released, tmp_path):
  _, _, folder = released
  data = (folder / "vqvae.npz").read_bytes()
  with zipfile.ZipFile(folder / "vqvae.npz") as zf:
    inside = zf.getinfo("decoder.2.net.2.weight.npy").header_offset + 3000
  (tmp_path / "cut.npz").write_bytes(data[:inside])
  with pytest.raises(CheckpointError, match="cut.npz.*ends inside array 'decoder.2.net.2.weight'"):
    paligemma.load_vqvae(tmp_path / "cut.npz")
  with pytest.raises(FileNotFoundError, match="mask codec .*nothing.npz not found"):
    paligemma.load_vqvae(tmp_path / "nothing.npz")
  pathlib.Path(tmp_path / "text.npz").write_text("not a zip")
  with pytest.raises(CheckpointError, match="text.npz is not a readable .npz"):
    paligemma.load_vqvae(tmp_path / "text.npz")
