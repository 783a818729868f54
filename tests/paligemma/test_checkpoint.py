"""big_vision .npz checkpoints: round trips in every dtype, errors naming the array, resampling, memory."""
import json
import os
import pathlib
import subprocess
import sys
import tracemalloc
import zipfile

import ml_dtypes
import numpy as np
import pytest
import scipy.ndimage

from components.paligemma import configs
from components.paligemma.checkpoint import (CheckpointError, flatten_params, iter_arrays, load, load_flat,
                                             param_shapes, save, unflatten_params)

REPO = pathlib.Path(__file__).resolve().parents[2]
BF16 = np.dtype(ml_dtypes.bfloat16)


@pytest.fixture(scope="module")
def tiny_v1(bigvision_fixtures):
  path = bigvision_fixtures / "tiny_v1.params.npz"
  with np.load(path) as f:
    flat = {k: f[k] for k in f.files}
  return path, flat


def shapes(flat):
  return {k: v.shape for k, v in flat.items()}


def same_bits(a, b):
  return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_flatten_unflatten(tiny_v1):
  _, flat = tiny_v1
  tree = unflatten_params(flat)
  assert tree["llm"]["layers"]["attn"]["q_einsum"]["w"] is flat["llm/layers/attn/q_einsum/w"]
  assert flatten_params(tree) == flat


@pytest.mark.parametrize("dtype", [np.float32, BF16, np.float16])
def test_round_trip_is_bit_identical(tiny_v1, tmp_path, dtype):
  _, flat = tiny_v1
  params = unflatten_params({k: v.astype(dtype) for k, v in flat.items()})
  save(params, tmp_path / "ckpt.npz")
  back = flatten_params(load(tmp_path / "ckpt.npz"))
  assert back.keys() == flat.keys()
  assert all(same_bits(back[k], np.asarray(flat[k], dtype)) for k in flat)
  # numpy itself (as big_vision reads it) sees the same arrays; bf16 is stored as 2-byte void.
  with np.load(tmp_path / "ckpt.npz", allow_pickle=False) as raw:
    stored = raw["img/head/kernel"]
    assert stored.dtype == (np.dtype("V2") if dtype == BF16 else dtype)
    assert same_bits(stored.view(BF16) if dtype == BF16 else stored, np.asarray(flat["img/head/kernel"], dtype))
  assert not [p for p in os.listdir(tmp_path) if p != "ckpt.npz"]  # the temporary file was renamed


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_save_casts(tiny_v1, tmp_path, dtype):
  _, flat = tiny_v1
  save(flat, tmp_path / "cast.npz", dtype=dtype)
  back = load_flat(tmp_path / "cast.npz", shapes(flat))
  assert all(same_bits(back[k], flat[k].astype(dtype)) for k in flat)


@pytest.mark.parametrize("dtype", [np.float32, BF16, np.float16])
def test_params_prefix_is_stripped(tiny_v1, tmp_path, dtype):
  _, flat = tiny_v1
  np.savez(tmp_path / "prefixed.npz", **{f"params/{k}": v.astype(dtype) for k, v in flat.items()})
  back = load_flat(tmp_path / "prefixed.npz", shapes(flat))
  assert all(same_bits(back[k], flat[k].astype(dtype)) for k in flat)


@pytest.mark.parametrize("name", ["tiny_v1", "tiny_mha", "tiny_v2"])
def test_load_fixture_against_model_config(bigvision_fixtures, name):
  params = load(bigvision_fixtures / f"{name}.params.npz", configs.model_config(name.replace("_", "-")))
  with np.load(bigvision_fixtures / f"{name}.params.npz") as raw:
    flat = flatten_params(params)
    assert flat.keys() == set(raw.files)
    assert all(same_bits(flat[k], raw[k]) for k in raw.files)


def test_checkpoint_of_another_model_is_refused(bigvision_fixtures):
  """tiny_v1 (MQA: q_einsum + kv_einsum) does not load into tiny-mha (one qkv_einsum)."""
  with pytest.raises(CheckpointError, match=r"missing array\(s\) llm/layers/attn/qkv_einsum/w; unexpected array\(s\) "
                                            r"llm/layers/attn/kv_einsum/w, llm/layers/attn/q_einsum/w"):
    load(bigvision_fixtures / "tiny_v1.params.npz", configs.model_config("tiny-mha"))


def test_public_exports():
  from components import paligemma
  assert (paligemma.load, paligemma.save, paligemma.CheckpointError) == (load, save, CheckpointError)


def test_resample_posemb_56_to_112_and_back(tiny_v1, tmp_path):
  path, flat = tiny_v1
  cfg = configs.model_config("tiny-v1")
  cfg["img"]["image_size"] = 112  # 4x4 -> 8x8 patches
  up = load(path, cfg)
  posemb = flat["img/pos_embedding"]  # [1, 16, 32]
  want_up = scipy.ndimage.zoom(posemb.reshape(4, 4, 32), (2, 2, 1), order=1).reshape(1, 64, 32)
  assert up["img"]["pos_embedding"].shape == (1, 64, 32)
  np.testing.assert_array_equal(up["img"]["pos_embedding"], want_up)
  # Everything else is untouched.
  assert same_bits(up["img"]["head"]["kernel"], flat["img/head/kernel"])

  save(up, tmp_path / "112.npz")
  down = load(tmp_path / "112.npz", configs.model_config("tiny-v1"))
  want_down = scipy.ndimage.zoom(want_up.reshape(8, 8, 32), (0.5, 0.5, 1), order=1).reshape(1, 16, 32)
  np.testing.assert_array_equal(down["img"]["pos_embedding"], want_down)


def test_resample_keeps_bf16(tiny_v1, tmp_path):
  _, flat = tiny_v1
  save({k: v.astype(BF16) for k, v in flat.items()}, tmp_path / "bf16.npz")
  want = dict(shapes(flat), **{"img/pos_embedding": (1, 64, 32)})
  got = load_flat(tmp_path / "bf16.npz", want)["img/pos_embedding"]
  grid = flat["img/pos_embedding"].astype(BF16).astype(np.float32).reshape(4, 4, 32)
  assert got.dtype == BF16
  np.testing.assert_array_equal(got, scipy.ndimage.zoom(grid, (2, 2, 1), order=1).reshape(1, 64, 32).astype(BF16))


def write_npz(path, flat):
  np.savez(path, **flat)
  return path


def test_missing_and_unexpected_arrays_are_named(tiny_v1, tmp_path):
  _, flat = tiny_v1
  broken = dict(flat)
  del broken["llm/final_norm/scale"]
  broken["llm/extra/thing"] = np.zeros(3, np.float32)
  with pytest.raises(CheckpointError, match="missing array.*llm/final_norm/scale.*unexpected array.*llm/extra/thing"):
    load_flat(write_npz(tmp_path / "names.npz", broken), shapes(flat))


def test_wrong_shape_is_named(tiny_v1, tmp_path):
  _, flat = tiny_v1
  broken = dict(flat, **{"llm/layers/mlp/linear": np.zeros((2, 100, 64), np.float32)})
  with pytest.raises(CheckpointError, match=r"'llm/layers/mlp/linear' has shape \(2, 100, 64\).*\(2, 128, 64\)"):
    load_flat(write_npz(tmp_path / "shape.npz", broken), shapes(flat))
  # A position embedding that is not a square grid cannot be resampled: a shape error, not a guess.
  odd = dict(flat, **{"img/pos_embedding": np.zeros((1, 15, 32), np.float32)})
  with pytest.raises(CheckpointError, match="'img/pos_embedding' has shape"):
    load_flat(write_npz(tmp_path / "odd.npz", odd), shapes(flat))


def test_pickled_array_is_refused(tiny_v1, tmp_path):
  _, flat = tiny_v1
  evil = dict(flat, **{"img/head/bias": np.array([{"a": 1}, None], dtype=object)})
  with pytest.raises(CheckpointError, match="'img/head/bias' holds Python objects"):
    load_flat(write_npz(tmp_path / "pickle.npz", evil))


def test_non_float_array_is_refused(tiny_v1, tmp_path):
  _, flat = tiny_v1
  ints = dict(flat, **{"img/head/bias": np.arange(64, dtype=np.int32)})
  with pytest.raises(CheckpointError, match="'img/head/bias' has dtype int32"):
    load_flat(write_npz(tmp_path / "ints.npz", ints))
  with pytest.raises(ValueError, match="'img/head/bias'"):
    save(ints, tmp_path / "ints_out.npz")
  assert not (tmp_path / "ints_out.npz").exists() and len(os.listdir(tmp_path)) == 1  # no temp file left


def test_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing.npz"):
    load_flat(tmp_path / "nothing.npz")


def test_truncated_file(tiny_v1, tmp_path):
  path, flat = tiny_v1
  data = pathlib.Path(path).read_bytes()
  cut = tmp_path / "cut.npz"
  cut.write_bytes(data[:len(data) // 2])
  with pytest.raises(CheckpointError, match="cut.npz.*corrupt or truncated"):
    load_flat(cut)
  # The error names the array the file ends in, found from the members' own headers.
  names = list(flat)
  save(flat, tmp_path / "whole.npz")
  whole = (tmp_path / "whole.npz").read_bytes()
  with zipfile.ZipFile(tmp_path / "whole.npz") as zf:
    inside = zf.getinfo("llm/embedder/input_embedding.npy").header_offset + 5000
  cut.write_bytes(whole[:inside])
  before = names[names.index("llm/embedder/input_embedding") - 1]
  with pytest.raises(CheckpointError, match=f"ends inside array 'llm/embedder/input_embedding', after '{before}'"):
    load_flat(cut)


def corrupt_copy(src, dst, member):
  """A copy of src with 8 bytes flipped inside `member`'s array data (past the zip and .npy headers)."""
  data = bytearray(pathlib.Path(src).read_bytes())
  with zipfile.ZipFile(src) as zf:
    info = zf.getinfo(member)
  at = info.header_offset + 30 + len(info.filename) + len(info.extra) + 128 + 1000
  data[at:at + 8] = bytes(255 - b for b in data[at:at + 8])
  dst.write_bytes(bytes(data))
  return dst


def test_corrupt_array_is_named(tiny_v1, tmp_path):
  path, flat = tiny_v1
  bad = corrupt_copy(path, tmp_path / "bad.npz", "llm/embedder/input_embedding.npy")
  with pytest.raises(CheckpointError, match="'llm/embedder/input_embedding' cannot be read.*corrupt"):
    load_flat(bad, shapes(flat))


def test_headers_are_checked_before_any_data_is_read(tiny_v1, tmp_path):
  """A checkpoint for another model fails on its headers, before any data (here corrupt) is read."""
  path, flat = tiny_v1
  bad = corrupt_copy(path, tmp_path / "bad.npz", "llm/embedder/input_embedding.npy")
  with np.load(bad) as f:  # the mismatching array is stored after the corrupt one
    assert f.files.index("llm/layers/mlp/linear") > f.files.index("llm/embedder/input_embedding")
  other = dict(shapes(flat), **{"llm/layers/mlp/linear": (2, 100, 64)})
  with pytest.raises(CheckpointError, match="'llm/layers/mlp/linear' has shape"):
    load_flat(bad, other)


def test_compressed_npz_loads(tiny_v1, tmp_path):
  _, flat = tiny_v1
  np.savez_compressed(tmp_path / "z.npz", **flat)
  back = load_flat(tmp_path / "z.npz", shapes(flat))
  assert all(same_bits(back[k], flat[k]) for k in flat)


def test_dtype_argument(tiny_v1, tmp_path):
  _, flat = tiny_v1
  for spelling in (np.float16, "float16", BF16, "bfloat16"):
    save(flat, tmp_path / "x.npz", dtype=spelling)
    assert load_flat(tmp_path / "x.npz")["img/head/bias"].dtype == np.dtype(spelling)
  for bad in ("int8", "bf16", np.float64):
    with pytest.raises(ValueError, match="cannot save as dtype"):
      save(flat, tmp_path / "y.npz", dtype=bad)
  assert not (tmp_path / "y.npz").exists()


def test_param_shapes_match_released_counts():
  """`load` checks against the model's own tree: the full-size trees have the published sizes."""
  counts = {"paligemma-3b-pt-224": 2_923_335_408, "paligemma2-3b-pt-224": 3_032_094_960}
  for name, count in counts.items():
    tree = param_shapes(configs.model_config(name))
    assert sum(int(np.prod(s)) for s in tree.values()) == count
  assert param_shapes(configs.model_config("paligemma-3b-pt-448"))["img/pos_embedding"] == (1, 1024, 1152)


def test_load_holds_at_most_one_array_beyond_the_result(tmp_path):
  """Peak traced memory while loading a ~200 MB file stays below file size + its largest array."""
  rng = np.random.default_rng(0)
  n_arrays, per_array = 8, 6_250_000  # 8 x 25 MB float32
  with zipfile.ZipFile(tmp_path / "big.npz", "w") as zf:  # generated one array at a time, as np.savez writes
    for i in range(n_arrays):
      with zf.open(f"w{i}.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array(member, rng.standard_normal(per_array, np.float32))
  expected = {f"w{i}": (per_array,) for i in range(n_arrays)}
  file_size = os.path.getsize(tmp_path / "big.npz")
  largest = per_array * 4

  tracemalloc.start()
  try:
    flat = load_flat(tmp_path / "big.npz", expected)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  result = sum(v.nbytes for v in flat.values())
  print(f"file {file_size / 1e6:.0f} MB, result {result / 1e6:.0f} MB, peak {peak / 1e6:.1f} MB")
  assert result >= 0.99 * file_size
  assert peak <= result + largest
  del flat

  # A caller that moves each array elsewhere (e.g. onto devices) holds about one array at a time.
  tracemalloc.start()
  try:
    for name, array in iter_arrays(tmp_path / "big.npz", expected):
      assert array.shape == expected[name]
      del array
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  print(f"streaming peak {peak / 1e6:.1f} MB")
  assert peak <= largest + 4 * 2**20  # one array and numpy's read buffers


@pytest.mark.slow  # ~20 s: a fresh interpreter importing jax and gcsfs
def test_gcs_round_trip(tiny_v1, gcs_emulator):
  """save/load (and the tokenizer) on gs:// against a local GCS emulator.

  Runs in a subprocess: gcsfs and fsspec read their settings from the environment at import.
  """
  emulator_env, client = gcs_emulator
  client.create_bucket("ckpts")
  env = dict(os.environ, **emulator_env)
  script = f"""
import json, fsspec, numpy as np, ml_dtypes
from components.paligemma.checkpoint import load_flat, save
from components.paligemma.tokenizer import Tokenizer, train_small_tokenizer
train_small_tokenizer("gs://ckpts/run/tokenizer.model", ["a red circle", "detect cat ; dog"] * 20, vocab_size=1500)
tok = Tokenizer("gs://ckpts/run/tokenizer.model")
tok_ok = tok.vocab_size == 1500 and tok.decode([2, tok.loc_token_id(5), 1, 7]) == "<loc0005>"
with np.load({str(tiny_v1[0])!r}) as f:
  flat = {{k: f[k] for k in f.files}}
save(flat, "gs://ckpts/run/model.npz", dtype="bfloat16")
back = load_flat("gs://ckpts/run/model.npz", {{k: v.shape for k, v in flat.items()}})
same = all(back[k].tobytes() == flat[k].astype(ml_dtypes.bfloat16).tobytes() for k in flat)
print(json.dumps({{"same": same, "tok_ok": tok_ok, "dtype": str(back["img/head/kernel"].dtype),
                  "listing": sorted(fsspec.filesystem("gs").ls("ckpts/run"))}}))
"""
  run = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=120)
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.loads(run.stdout.strip().splitlines()[-1])
  assert result == {"same": True, "tok_ok": True, "dtype": "bfloat16",
                    "listing": ["ckpts/run/model.npz", "ckpts/run/tokenizer.model"]}
