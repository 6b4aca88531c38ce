"""The paper's six models and Scale-MAE as data (`REGISTRY`), backbones added by spec
(`parse_added_model`, `load_model_specs`, `register`), and one way to load them (`load`).

    from harness.models import load
    backbone = load("dinov2")                     # default weights, offline-first
    backbone = load("dino", weights="dino_vitbase16_pretrain.pth")   # official file
    backbone = load("mae", random_init=True, smoke=True)             # tiny, untrained
    backbone = load("scale_mae", gsd=FAIR1M_GSD_M)                   # GSD-aware encoding
    backbone = load(parse_added_model("dinov3=hf-hub:timm/vit_base_patch16_dinov3.lvd1689m:contrastive"))
    tokens = backbone.patch_tokens(backbone.preprocess(images_uint8_nhwc), layers=[4, 12])

Conventions (see harness/models/backbone.py): layers 1..depth are block outputs, the final
LayerNorm is applied to every layer, patch tokens only (class token and registers removed),
[B, h, w, D], no masking.
"""

from harness.models.added import SpecError, add_models, load_model_specs, parse_added_model
from harness.models.backbone import Backbone
from harness.models.checkpoint import (
    ALLOWED_GLOBAL_NAMES,
    CheckpointError,
    CheckpointFormatError,
    CheckpointKeyError,
    read_checkpoint,
)
from harness.models.loader import load
from harness.models.registry import (
    REGISTRY,
    UnknownModelError,
    all_specs,
    get_spec,
    register,
    unregister,
)
from harness.models.scale_mae import FAIR1M_GSD_M, FAIR1M_GSD_RANGE_M
from harness.models.spec import CheckpointFormat, ModelSpec
from harness.models.weights import WeightsNotAvailableError, local_status

__all__ = [
    "ALLOWED_GLOBAL_NAMES",
    "FAIR1M_GSD_M",
    "FAIR1M_GSD_RANGE_M",
    "REGISTRY",
    "Backbone",
    "CheckpointError",
    "CheckpointFormat",
    "CheckpointFormatError",
    "CheckpointKeyError",
    "ModelSpec",
    "SpecError",
    "UnknownModelError",
    "WeightsNotAvailableError",
    "add_models",
    "all_specs",
    "get_spec",
    "load",
    "load_model_specs",
    "local_status",
    "parse_added_model",
    "read_checkpoint",
    "register",
    "unregister",
]
