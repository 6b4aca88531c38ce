"""The six models of the paper as data (`REGISTRY`) and one way to load them (`load`).

    from harness.models import load
    backbone = load("dinov2")                     # default weights, offline-first
    backbone = load("dino", weights="dino_vitbase16_pretrain.pth")   # official file
    backbone = load("mae", random_init=True, smoke=True)             # tiny, untrained
    tokens = backbone.patch_tokens(backbone.preprocess(images_uint8_nhwc), layers=[4, 12])

Conventions (see harness/models/backbone.py): layers 1..12 are block outputs, the final
LayerNorm is applied to every layer, patch tokens only, [B, h, w, D], no masking.
"""

from harness.models.backbone import Backbone
from harness.models.checkpoint import (
    CheckpointError,
    CheckpointFormatError,
    CheckpointKeyError,
)
from harness.models.loader import load
from harness.models.registry import REGISTRY, UnknownModelError, get_spec
from harness.models.spec import CheckpointFormat, ModelSpec
from harness.models.weights import WeightsNotAvailableError, local_status

__all__ = [
    "REGISTRY",
    "Backbone",
    "CheckpointError",
    "CheckpointFormat",
    "CheckpointFormatError",
    "CheckpointKeyError",
    "ModelSpec",
    "UnknownModelError",
    "WeightsNotAvailableError",
    "get_spec",
    "load",
    "local_status",
]
