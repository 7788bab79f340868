"""Image sources, decoding, splits and the streaming loader."""

from synthdet.data.decode import DecodedImage, ImageDecodeError, load_image
from synthdet.data.labels import CLASS_NAMES, REAL, SYNTHETIC, parse_label
from synthdet.data.loader import Batch, ImageDataset, SkipLog, make_loader
from synthdet.data.sources import ImageRecord, SourceError, collect_records, records_from_arguments

__all__ = [
    "CLASS_NAMES", "REAL", "SYNTHETIC", "Batch", "DecodedImage", "ImageDataset", "ImageDecodeError",
    "ImageRecord", "SkipLog", "SourceError", "collect_records", "load_image", "make_loader",
    "parse_label", "records_from_arguments",
]
