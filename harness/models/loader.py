"""`load`: registry name or ModelSpec (+ optional weights) -> Backbone with strictly loaded weights."""

from __future__ import annotations

import hashlib
import os

import torch

from harness import config
from harness.models import scale_mae
from harness.models.backbone import Backbone
from harness.models.checkpoint import convert, load_strict, read_checkpoint
from harness.models.registry import FAMILY_MODULES, get_spec
from harness.models.spec import ModelSpec
from harness.models.weights import resolve

# Small width for smoke runs: the whole pipeline on CPU in minutes, same architecture
# family (patch size, position scheme, layer scale, shared rel-pos bias) and depth.
SMOKE_EMBED_DIM = 64
SMOKE_NUM_HEADS = 2


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_module(spec: ModelSpec, *, smoke: bool = False) -> torch.nn.Module:
    """The spec's architecture with timm's random initialisation (caller seeds it)."""
    family = FAMILY_MODULES[spec.arch_family]
    if smoke:
        return family.build(spec, embed_dim=SMOKE_EMBED_DIM, num_heads=SMOKE_NUM_HEADS)
    return family.build(spec, embed_dim=spec.embed_dim, num_heads=spec.num_heads)


def _empty_module(spec: ModelSpec) -> torch.nn.Module:
    """The architecture without timm's (slow, soon overwritten) random initialisation:
    built on the meta device, given uninitialised CPU storage, with the buffers that are
    not in a state dict (BEiT's position index and zero k-bias) recomputed."""
    with torch.device("meta"):
        module = build_module(spec)
    module.to_empty(device="cpu")
    persistent = set(module.state_dict())
    for prefix, sub in module.named_modules():
        own = [n for n, _ in sub.named_buffers(recurse=False)
               if f"{prefix}.{n}".lstrip(".") not in persistent]
        if own:
            if not hasattr(sub, "init_non_persistent_buffers"):
                return build_module(spec)  # cannot rebuild these buffers: take the slow path
            sub.init_non_persistent_buffers()
    return module


def load(
    model: str | ModelSpec,
    weights: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    random_init: bool = False,
    smoke: bool = False,
    cache_dir: str | os.PathLike | None = None,
    gsd: float | None = None,
) -> Backbone:
    """Load a model: a registry name, the name of a model added with `register`, or a
    ModelSpec (e.g. from `parse_added_model` / `load_model_specs`).

    weights: None (the spec's default source: a file the spec names, else the local Hugging
        Face cache, else `<cache-dir>/weights/<release file>`, else a hub download unless
        offline), a path to the official release file or to a timm-format file (or a timm
        hub snapshot folder), or a hub id ('hf-hub:org/name', 'org/name', or a timm tag like
        'vit_base_patch16_224.dino').
    random_init: timm's initialisation, seeded from seed_for('random_init', name).
    smoke: only with random_init; the same family at width 64 with 2 heads.
    gsd: the input's ground sample distance in metres per pixel; required by models whose
        position encoding takes it (scale_mae), refused by the others. It is part of the
        backbone's weights id and digest.
    """
    spec = model if isinstance(model, ModelSpec) else get_spec(model)
    name = spec.name
    if smoke and not random_init:
        raise ValueError("smoke=True builds a small untrained model; pass random_init=True too")
    if random_init and weights is not None:
        raise ValueError("pass either weights or random_init=True, not both")
    if spec.gsd_aware:
        if gsd is None:
            raise ValueError(
                f"{name}: its position encoding needs the input's ground sample distance: "
                f"load({name!r}, gsd=<metres per pixel>), e.g. gsd=harness.models.FAIR1M_GSD_M "
                f"({scale_mae.FAIR1M_GSD_M}) for FAIR1M tiles at native resolution")
        gsd = scale_mae.check_gsd(gsd)
    elif gsd is not None:
        raise ValueError(f"{name}: gsd is only for models whose position encoding takes the ground "
                         f"sample distance (scale_mae); {name}'s position scheme is {spec.grid_resize!r}")
    device = torch.device(device) if device is not None else default_device()

    if random_init:
        seed = config.seed_for("random_init", name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = build_module(spec, smoke=smoke)
        weights_id = "random-init" + ("-smoke" if smoke else "")
        digest = f"random-init-{seed}" + ("-smoke" if smoke else "")
    else:
        source = resolve(spec, weights, cache_dir)
        state = convert(read_checkpoint(source.path), spec.checkpoint, str(source.path))
        module = _empty_module(spec)
        load_strict(module, state, source.weights_id)
        weights_id, digest = source.weights_id, source.digest

    if spec.gsd_aware:
        scale_mae.set_gsd(module, gsd)
        weights_id = f"{weights_id} (gsd {gsd:g} m/px)"
        digest = (f"{digest}-gsd{gsd:g}" if random_init
                  else hashlib.sha256(f"{digest}|gsd={gsd!r}".encode()).hexdigest()[:16])

    family = FAMILY_MODULES[spec.arch_family]
    module.eval().requires_grad_(False).to(device)
    return Backbone(
        name=name,
        spec=spec,
        module=module,
        device=device,
        weights_id=weights_id,
        weights_digest=digest,
        embed_dim=module.embed_dim,
        _set_input_grid=family.set_input_grid,
    )
