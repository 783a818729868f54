"""PaliGemma 1 and 2 in JAX/Flax, parameter-compatible with big_vision (see docs/ARCHITECTURE.md).

    from components import paligemma
    model_cfg = paligemma.configs.model_config("paligemma2-3b-pt-224")
    model = paligemma.Model(**model_cfg)
    tokens = paligemma.decode(model, params, batch, max_decode_len=32)
"""
from components.paligemma import configs
from components.paligemma.decode import decode, decode_uncached, parse_sampler
from components.paligemma.model import Model, init_params, make_attn_mask
from components.paligemma.preprocess import preprocess_image
from components.paligemma.checkpoint import CheckpointError, flatten_params, load, save, unflatten_params
from components.paligemma.tokenizer import Tokenizer, train_small_tokenizer
from components.paligemma.hf import from_hf, to_hf
