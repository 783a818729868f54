"""Labelled images in many formats -> a PaliGemma dataset directory (see docs/ARCHITECTURE.md).

`convert(ConvertConfig(...))` is the core the CLI (`python -m components.convert`) and the KFP component
call; `boxes_to_loc_text` / `loc_text_to_boxes` are the detection text both convert and evaluate use.
"""
from components.convert.core import ConversionError, ConvertConfig, convert, parse_splits
from components.convert.locations import boxes_to_loc_text, check_class_name, detect_prefix, loc_text_to_boxes
from components.convert.readers import FORMATS
from components.common.records import decode_record, encode_record, list_shards, read_shard, shard_name

__all__ = [
    "ConversionError", "ConvertConfig", "convert", "parse_splits", "boxes_to_loc_text", "loc_text_to_boxes",
    "check_class_name", "detect_prefix", "FORMATS", "decode_record", "encode_record", "list_shards", "read_shard",
    "shard_name",
]
