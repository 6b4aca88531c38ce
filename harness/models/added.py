"""Backbones beyond the registry, added by spec without touching code: one line of text
(`parse_added_model`, the syntax of `--claims-add-model`) or a TOML file with one table per
model (`load_model_specs`). Both give complete ModelSpecs: what timm knows about the
architecture (patch size, prefix tokens, depth, width, position scheme, final norm) is read
from the module timm builds, normalisation from the tag's pretrained config, and the user's
fields override or, for structural facts, are checked against it. Nothing is downloaded here.

Text syntax:  NAME=SOURCE:FAMILY

  NAME     letters, digits, '.', '_', '-' (first a letter or digit); not a registry name.
           The text is split at its FIRST '='.
  FAMILY   contrastive | MIM | supervised (any case). The text is split at its LAST ':';
           family words hold no ':', so a ':' inside SOURCE (hf-hub:..., C:\\...) is fine.
  SOURCE   [FORMAT@]LOCATION
    LOCATION  hf-hub:ORG/REPO or ORG/REPO   a Hugging Face repo with timm-format weights
                                            (timm's own repos are timm/ARCH.TAG)
              ARCH.TAG                      a timm pretrained tag that has hub weights
              PATH                          a weights file, or a timm hub snapshot folder:
                                            anything that exists, starts with / . or ~, or
                                            ends in .pth .pt .bin .safetensors .ckpt .pkl
    FORMAT@   how to read LOCATION when it does not say itself:
              ARCH.TAG@ or ARCH@   a timm architecture (the tag also gives mean/std);
                                   needed for files and for hub repos outside timm/ unless
                                   a timm config.json lies next to the weights
              REGISTRY_NAME@       the official release format and architecture of a
                                   registry model (e.g. dino@/w/checkpoint.pth)
    Only a LOCATION whose text before its first '@' is a registry name or a timm
    architecture is split there, so a path holding '@' needs no escaping.

  dinov3=hf-hub:timm/vit_base_patch16_dinov3.lvd1689m:contrastive
  dinov2-reg4=vit_base_patch14_reg4_dinov2.lvd142m:contrastive
  mine=vit_base_patch14_reg4_dinov2.lvd142m@/weights/model.safetensors:contrastive
  dino-ft=dino@/weights/checkpoint0100.pth:contrastive

TOML: an array of tables `[[model]]`, fields as ModelSpec (see SPEC_FIELDS): name, family
and one of source (the SOURCE above) / hub_id / file (relative to the TOML file's folder)
are required; timm_arch or format play FORMAT@'s part. Optional: title, notes, release_url,
arch_kwargs (passed to timm.create_model), mean, std, grid_resize, final_norm, checkpoint
(wrappers, prefixes, dropped, renames), and the structural facts patch_size,
num_prefix_tokens, depth, embed_dim, num_heads, native_grid, which must agree with the
architecture (change it through arch_kwargs).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import tomllib
import torch

from harness.models import timm_family
from harness.models.registry import REGISTRY
from harness.models.spec import (
    FAMILIES,
    FINAL_NORMS,
    GRID_RESIZES,
    TIMM_FORMAT,
    CheckpointFormat,
    ModelSpec,
)
from harness.models.weights import CHECKPOINT_SUFFIXES

TEXT_SYNTAX = "NAME=SOURCE:FAMILY (e.g. dinov3=hf-hub:timm/vit_base_patch16_dinov3.lvd1689m:contrastive)"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ARCH = re.compile(r"[A-Za-z0-9_]+")

STRUCTURAL_FIELDS = ("patch_size", "num_prefix_tokens", "depth", "embed_dim", "num_heads", "native_grid")
SPEC_FIELDS = {
    "name": str, "family": str, "source": str, "hub_id": str, "file": str, "timm_arch": str,
    "format": str, "title": str, "notes": str, "release_url": str, "arch_kwargs": dict,
    "mean": list, "std": list, "grid_resize": str, "final_norm": str, "checkpoint": dict,
    **{f: int for f in STRUCTURAL_FIELDS},
}
CHECKPOINT_FIELDS = ("wrappers", "prefixes", "dropped", "renames")


class SpecError(ValueError):
    """A model spec (text or file) that cannot be used; the message names where and why."""


# ------------------------------------------------------------------------------- text form
def parse_added_model(text: str) -> ModelSpec:
    """`NAME=SOURCE:FAMILY` -> a complete ModelSpec (see the module docstring)."""
    where = f"added model {text!r}"
    if not isinstance(text, str) or "=" not in text:
        raise SpecError(f"{where}: expected {TEXT_SYNTAX}")
    name, rest = text.split("=", 1)
    if ":" not in rest:
        raise SpecError(f"{where}: no ':FAMILY' at the end; expected {TEXT_SYNTAX}, FAMILY one of "
                        f"{', '.join(FAMILIES)}")
    source, family = rest.rsplit(":", 1)
    name = _check_name(name.strip(), where)
    family = _check_family(family.strip(), where)
    return _resolve(name, family, source.strip(), where=f"added model {name!r}")


def add_models(texts=(), spec_files=()) -> list[ModelSpec]:
    """Parse `NAME=SOURCE:FAMILY` texts and TOML spec files and register every model, so the
    rest of a run loads them by name (what a pytest option such as --claims-add-model calls
    once per process). All are validated before any is registered."""
    from harness.models.registry import register

    specs = [parse_added_model(text) for text in texts]
    for path in spec_files:
        specs.extend(load_model_specs(path))
    names = [spec.name for spec in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SpecError(f"added models: {', '.join(twice)} given more than once")
    return register(specs)


# ------------------------------------------------------------------------------- TOML form
def load_model_specs(path: str | os.PathLike) -> list[ModelSpec]:
    """The models of a TOML spec file (`[[model]]` tables), validated; messages name the
    file, the model and the field."""
    path = Path(path).expanduser()
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise SpecError(f"model spec file {path} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"model spec file {path} is not valid TOML: {err}") from None
    extra = sorted(set(data) - {"model"})
    if extra:
        raise SpecError(f"{path}: unknown top-level key(s) {extra}; models go in [[model]] tables")
    entries = data.get("model")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise SpecError(f"{path}: expected one or more [[model]] tables (name, family, source, ...)")
    specs: list[ModelSpec] = []
    for index, entry in enumerate(entries, start=1):
        spec = _spec_from_table(entry, path, index)
        if any(s.name == spec.name for s in specs):
            raise SpecError(f"{path}: model {spec.name!r} is defined twice")
        specs.append(spec)
    return specs


def _spec_from_table(entry: dict[str, Any], path: Path, index: int) -> ModelSpec:
    where = f"{path}: model #{index}"
    name = entry.get("name")
    if isinstance(name, str):
        where = f"{path}: model {name!r}"
    unknown = sorted(set(entry) - set(SPEC_FIELDS))
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {unknown}; known fields: {', '.join(SPEC_FIELDS)}")
    for field, kind in SPEC_FIELDS.items():
        if field in entry and not (isinstance(entry[field], kind) and not isinstance(entry[field], bool)):
            raise SpecError(f"{where}: field {field!r} must be {_KIND_NAMES[kind]}, "
                            f"got {entry[field]!r}")
    for field in ("name", "family"):
        if field not in entry:
            raise SpecError(f"{where}: field {field!r} is required")
    name = _check_name(entry["name"], where, field="name")
    family = _check_family(entry["family"], where, field="family")
    locations = [f for f in ("source", "hub_id", "file") if f in entry]
    if len(locations) != 1:
        raise SpecError(f"{where}: give exactly one of the fields 'source', 'hub_id', 'file' "
                        f"(got {locations or 'none'})")
    if "timm_arch" in entry and "format" in entry:
        raise SpecError(f"{where}: fields 'timm_arch' and 'format' both say how to read the weights; give one")
    fmt = entry.get("timm_arch") or entry.get("format")
    if "source" in entry:
        source = entry["source"]
        if fmt:
            if _split_format(source)[0]:
                raise SpecError(f"{where}: field 'source' {source!r} already names its format; "
                                f"drop 'timm_arch'/'format'")
            source = f"{fmt}@{source}"
    elif "hub_id" in entry:
        hub = entry["hub_id"].removeprefix("hf-hub:")
        source = f"{fmt + '@' if fmt else ''}hf-hub:{hub}"
    else:
        file = Path(entry["file"]).expanduser()
        if not file.is_absolute():
            file = path.parent / file
        source = f"{fmt + '@' if fmt else ''}{file}"
    if "format" in entry and entry["format"] not in REGISTRY:
        raise SpecError(f"{where}: field 'format' {entry['format']!r} is not a registry model "
                        f"({', '.join(sorted(REGISTRY))}); a timm architecture goes in 'timm_arch'")
    overrides = {k: v for k, v in entry.items()
                 if k not in ("name", "family", "source", "hub_id", "file", "timm_arch", "format")}
    return _resolve(name, family, source, where=where, overrides=overrides)


_KIND_NAMES = {str: "a string", dict: "a table", list: "a list", int: "an integer"}


# ------------------------------------------------------------------------------- resolution
def _resolve(name: str, family: str, source: str, *, where: str,
             overrides: dict[str, Any] | None = None) -> ModelSpec:
    overrides = dict(overrides or {})
    if not source:
        raise SpecError(f"{where}: empty SOURCE; expected a hub id, a timm tag or a file path")
    fmt, location = _split_format(source)
    kind = _location_kind(location)
    hub_id = location.removeprefix("hf-hub:") if kind == "hub" else None
    weights_file = str(Path(location).expanduser()) if kind == "file" else ""

    if fmt in REGISTRY:
        if kind == "tag":
            raise SpecError(f"{where}: {fmt}@ reads a file or hub repo in {fmt}'s official format, "
                            f"but {location!r} is a timm tag")
        base = REGISTRY[fmt]
        facts = {f: getattr(base, f) for f in (*STRUCTURAL_FIELDS, "grid_resize", "final_norm")}
        spec = dataclasses.replace(
            base, name=name, family=family, hub_id=hub_id, weights_file=weights_file,
            release_file="", release_url="",
            title=f"{name}: {base.title} format, {location}",
            notes=f"weights in the official format of registry model {fmt!r}")
        return _apply_overrides(spec, overrides, facts, module_kind=base.arch_family, where=where)

    arch_text, cfg_stats = _timm_architecture(fmt, kind, location, where)
    if kind == "tag":
        hub_id = _tag_hub_id(location, where)
    arch, _, tag = arch_text.partition(".")
    arch_kwargs = overrides.pop("arch_kwargs", {})
    with torch.device("meta"):
        try:
            module = timm_family.create(arch, **arch_kwargs)
        except Exception as err:  # timm raises many kinds for bad kwargs
            raise SpecError(
                f"{where}: timm cannot build {arch!r} as a ViT-style backbone (VisionTransformer or "
                f"Eva, dynamic_img_size=True, num_classes=0) with arch_kwargs {arch_kwargs}: "
                f"{type(err).__name__}: {err}") from None
    try:
        timm_family.check_supported(module, arch)
        facts = timm_family.describe(module)
    except ValueError as err:
        raise SpecError(f"{where}: {err}") from None
    mean, std = cfg_stats or (None, None)
    if mean is None and not ("mean" in overrides and "std" in overrides):
        raise SpecError(
            f"{where}: the normalisation of the weights is unknown: name the timm tag they come "
            f"from ({arch}.TAG@..., tags: {_tags(arch)}) or give mean and std in a spec file")
    spec = ModelSpec(
        name=name,
        title=f"{name}: {arch_text} ({'hf-hub:' + hub_id if hub_id else weights_file})",
        family=family,
        arch_family="timm",
        timm_arch=arch,
        arch_kwargs=dict(arch_kwargs),
        mean=tuple(mean) if mean is not None else (0.0, 0.0, 0.0),
        std=tuple(std) if std is not None else (1.0, 1.0, 1.0),
        hub_id=hub_id,
        weights_file=weights_file,
        checkpoint=TIMM_FORMAT,
        notes=f"timm {type(module).__name__} {arch_text}",
        **facts,
    )
    return _apply_overrides(spec, overrides, facts, module_kind=type(module).__name__, where=where)


def _split_format(source: str) -> tuple[str | None, str]:
    """'FORMAT@LOCATION' -> (FORMAT, LOCATION) when FORMAT is a registry name or a timm
    architecture (optionally with a tag); otherwise (None, source)."""
    head, sep, tail = source.partition("@")
    if sep and tail and (head in REGISTRY or _is_timm_arch(head.partition(".")[0])):
        return head, tail
    return None, source


def _is_timm_arch(text: str) -> bool:
    import timm

    return bool(_ARCH.fullmatch(text)) and timm.is_model(text)


def _location_kind(location: str) -> str:
    if location.startswith("hf-hub:"):
        return "hub"
    if (Path(location).expanduser().exists() or location.startswith(("/", ".", "~"))
            or location.lower().endswith(CHECKPOINT_SUFFIXES) or "\\" in location):
        return "file"
    if location.count("/") == 1:
        return "hub"
    return "tag"


def _timm_architecture(fmt: str | None, kind: str, location: str, where: str):
    """('arch' or 'arch.tag', (mean, std) or None) for a timm-format location."""
    if fmt:
        if kind == "tag":
            raise SpecError(f"{where}: {location!r} is a timm tag; it names its architecture itself "
                            f"(drop '{fmt}@')")
        return _check_arch_text(fmt, where), _tag_stats(fmt)
    if kind == "tag":
        return _check_arch_text(location, where, need_tag=True), _tag_stats(location)
    if kind == "hub" and location.removeprefix("hf-hub:").startswith("timm/"):
        text = location.removeprefix("hf-hub:").removeprefix("timm/")
        return _check_arch_text(text, where, need_tag=True), _tag_stats(text)
    config = _timm_config(kind, location)
    if config is not None:
        arch = config.get("architecture")
        if not isinstance(arch, str):
            raise SpecError(f"{where}: the timm config.json of {location} names no 'architecture'")
        pretrained = config.get("pretrained_cfg") or {}
        stats = (pretrained.get("mean"), pretrained.get("std"))
        return _check_arch_text(arch, where), (stats if None not in stats else None)
    what = "weights file" if kind == "file" else "hub repo"
    raise SpecError(
        f"{where}: the timm architecture of the {what} {location!r} is unknown (no timm "
        f"config.json next to it): write ARCH.TAG@{location}, e.g. "
        f"vit_base_patch14_reg4_dinov2.lvd142m@{location}, or REGISTRY_NAME@{location} for a "
        f"registry model's official format ({', '.join(sorted(REGISTRY))})")


def _check_arch_text(text: str, where: str, need_tag: bool = False) -> str:
    import timm

    arch, _, tag = text.partition(".")
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch[:12]}*")[:8]
        raise SpecError(f"{where}: timm {timm.__version__} has no architecture {arch!r}"
                        + (f" (close: {', '.join(close)})" if close else ""))
    if tag and _pretrained_cfg(text) is None:
        raise SpecError(f"{where}: timm has no pretrained tag {text!r}; tags of {arch}: {_tags(arch)}")
    if need_tag and not tag:
        raise SpecError(
            f"{where}: give the full timm tag ARCH.TAG, not the bare architecture {arch!r} "
            f"(its default tag may be other weights, e.g. vit_base_patch16_224 is supervised); "
            f"tags: {_tags(arch)}")
    return text


def _tags(arch: str) -> str:
    import timm

    tags = timm.list_pretrained(f"{arch}.*")
    return ", ".join(tags[:10]) + (" ..." if len(tags) > 10 else "") if tags else "none"


def _pretrained_cfg(text: str):
    import timm

    try:
        return timm.models.get_pretrained_cfg(text)
    except Exception:
        return None


def _tag_stats(text: str):
    if "." not in text:
        return None
    cfg = _pretrained_cfg(text)
    if cfg is None or cfg.mean is None or cfg.std is None:
        return None
    return tuple(cfg.mean), tuple(cfg.std)


def _tag_hub_id(tag: str, where: str) -> str:
    cfg = _pretrained_cfg(tag)
    hub = (cfg.hf_hub_id or "").rstrip("/") if cfg is not None else ""
    if not hub:
        raise SpecError(f"{where}: timm tag {tag!r} has no Hugging Face hub weights; download its "
                        f"file and give ARCH.TAG@PATH")
    return hub if "/" in hub else f"{hub}/{tag}"


def _timm_config(kind: str, location: str) -> dict | None:
    """timm's config.json beside a weights file / in a snapshot folder / in the local hub
    cache of a repo; read as JSON, nothing executed, nothing downloaded."""
    if kind == "file":
        path = Path(location).expanduser()
        candidate = (path if path.is_dir() else path.parent) / "config.json"
    else:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(location.removeprefix("hf-hub:"), "config.json")
        candidate = Path(found) if isinstance(found, str) else None
    if candidate is None or not candidate.is_file():
        return None
    try:
        config = json.loads(candidate.read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


# ------------------------------------------------------------------------------- checks
def _check_name(name: Any, where: str, field: str | None = None) -> str:
    label = f"field {field!r}" if field else "NAME"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SpecError(f"{where}: {label} {name!r} must be letters, digits, '.', '_' or '-' "
                        f"(starting with a letter or digit)")
    if name in REGISTRY:
        raise SpecError(f"{where}: {label} {name!r} is a registry model ({REGISTRY[name].title}); "
                        f"choose another name (other weights for {name} go through its weights option)")
    return name


def _check_family(family: Any, where: str, field: str | None = None) -> str:
    canonical = {f.lower(): f for f in FAMILIES}
    key = family.lower() if isinstance(family, str) else None
    if key not in canonical:
        label = f"field {field!r}" if field else "FAMILY"
        raise SpecError(f"{where}: {label} {family!r} must be one of {', '.join(FAMILIES)}")
    return canonical[key]


def _apply_overrides(spec: ModelSpec, overrides: dict[str, Any], facts: dict[str, Any], *,
                     module_kind: str, where: str) -> ModelSpec:
    changes: dict[str, Any] = {}
    for field in STRUCTURAL_FIELDS:
        if field in overrides:
            value = overrides.pop(field)
            if value != facts[field]:
                raise SpecError(
                    f"{where}: field {field!r} = {value} but the architecture has {facts[field]}; "
                    f"structural facts come from the model (change them with arch_kwargs)")
    for field in ("mean", "std"):
        if field in overrides:
            value = overrides.pop(field)
            if (len(value) != 3 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
                    or (field == "std" and not all(v > 0 for v in value))):
                raise SpecError(f"{where}: field {field!r} must be 3 numbers (one per RGB channel"
                                f"{', each > 0' if field == 'std' else ''}), got {value!r}")
            changes[field] = tuple(float(v) for v in value)
    if "grid_resize" in overrides:
        value = overrides.pop("grid_resize")
        allowed = {facts["grid_resize"]}
        if module_kind in ("VisionTransformer", "vit") and facts["grid_resize"] in ("timm", "dino-offset", "bicubic-size"):
            allowed |= {"timm", "dino-offset", "bicubic-size"}
        if value not in GRID_RESIZES:
            raise SpecError(f"{where}: field 'grid_resize' {value!r} must be one of {', '.join(GRID_RESIZES)}")
        if value not in allowed:
            raise SpecError(f"{where}: field 'grid_resize' {value!r} does not fit this architecture "
                            f"(its position scheme is {facts['grid_resize']!r}; possible: {', '.join(sorted(allowed))})")
        changes["grid_resize"] = value
    if "final_norm" in overrides:
        value = overrides.pop("final_norm")
        if value not in FINAL_NORMS:
            raise SpecError(f"{where}: field 'final_norm' {value!r} must be one of {', '.join(FINAL_NORMS)}")
        changes["final_norm"] = value
    for field in ("title", "notes", "release_url"):
        if field in overrides:
            changes[field] = overrides.pop(field)
    if "checkpoint" in overrides:
        changes["checkpoint"] = _checkpoint_format(overrides.pop("checkpoint"), where)
    if "arch_kwargs" in overrides:  # registry formats: the architecture is the registry's
        raise SpecError(f"{where}: field 'arch_kwargs' does not apply to a registry format; "
                        f"its architecture is fixed")
    assert not overrides, overrides
    return dataclasses.replace(spec, **changes)


def _checkpoint_format(table: dict[str, Any], where: str) -> CheckpointFormat:
    unknown = sorted(set(table) - set(CHECKPOINT_FIELDS))
    if unknown:
        raise SpecError(f"{where}: field 'checkpoint' has unknown key(s) {unknown}; "
                        f"known: {', '.join(CHECKPOINT_FIELDS)}")
    values: dict[str, Any] = {}
    for key in ("wrappers", "prefixes", "dropped"):
        items = table.get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise SpecError(f"{where}: field 'checkpoint.{key}' must be a list of strings, got {items!r}")
        values[key] = tuple(items)
    renames = table.get("renames", [])
    if not isinstance(renames, list) or not all(
            isinstance(r, list) and len(r) == 2 and all(isinstance(s, str) for s in r) for r in renames):
        raise SpecError(f"{where}: field 'checkpoint.renames' must be a list of [pattern, replacement] "
                        f"string pairs, got {renames!r}")
    values["renames"] = tuple((a, b) for a, b in renames)
    for pattern in [*values["dropped"], *(a for a, _ in values["renames"])]:
        try:
            re.compile(pattern)
        except re.error as err:
            raise SpecError(f"{where}: field 'checkpoint' pattern {pattern!r} is not a regular "
                            f"expression: {err}") from None
    return CheckpointFormat(**values)

