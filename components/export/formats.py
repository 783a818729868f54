"""The export's choices, as names (no numpy/jax here: the CLI builds `--help` from them before importing the
core)."""
FORMATS = ("npz", "hf")  # big_vision .npz, transformers checkpoint
DTYPE_NAMES = ("float32", "bfloat16", "float16")  # core.DTYPES maps each to its numpy dtype
