"""Input representations computed in torch on the batch (see :mod:`.extractor`)."""

from synthdet.features.extractor import (
    REPRESENTATIONS,
    FeatureExtractor,
    Normalize,
    Representation,
    register_representation,
)

__all__ = ["REPRESENTATIONS", "FeatureExtractor", "Normalize", "Representation", "register_representation"]
