"""Reading checkpoint files, converting official release formats to timm names, and
loading strictly: every missing, unexpected or mis-shaped key is an error that names it."""

from __future__ import annotations

import argparse
import functools
import hashlib
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from harness.models.spec import CheckpointFormat

# Keys by which a top-level mapping is recognised as a state dict rather than a wrapper.
_STATE_DICT_MARKERS = ("cls_token", "patch_embed.proj.weight", "norm.weight")


class CheckpointError(ValueError):
    """A checkpoint file that does not fit the model; the message names the keys."""


class CheckpointFormatError(CheckpointError):
    """The file's top level is not a known wrapper around a state dict."""


class CheckpointKeyError(CheckpointError):
    """Missing, unexpected or mis-shaped keys after conversion."""

    def __init__(self, source: str, missing, unexpected, mismatched):
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)
        parts = []
        if self.missing:
            parts.append(f"missing keys: {_names(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys: {_names(self.unexpected)}")
        if self.mismatched:
            parts.append("shape mismatches: " + ", ".join(
                f"{k} (file {tuple(a)} vs model {tuple(b)})" for k, a, b in self.mismatched))
        super().__init__(f"checkpoint {source} does not match the model: " + "; ".join(parts))


def _names(keys: list[str], shown: int = 40) -> str:
    more = f" ... and {len(keys) - shown} more" if len(keys) > shown else ""
    return str(keys[:shown]) + more


# Everything besides tensors and containers that an official release file pickles, mapped to
# what it is rebuilt as. Nothing else is ever unpickled: not even for a file the user names.
ALLOWED_GLOBALS: tuple[tuple[Any, str], ...] = (
    # 'args' of training checkpoints: facebookresearch/dino main_dino.py (save_dict),
    # bytedance/ibot main_ibot.py (save_dict), facebookresearch/mae util/misc.py and
    # bair-climate-initiative/scale-mae mae/util/misc.py (save_model). Rebuilding it sets
    # attributes on an empty Namespace.
    (argparse.Namespace, "argparse.Namespace"),
    # 'config' of microsoft/SimMIM utils.py save_checkpoint: a yacs CfgNode (a dict subclass
    # with flags in its __dict__). It is rebuilt as a plain OrderedDict with the same items
    # and flags (the weights-only reader fills only dict/OrderedDict instances); yacs is never
    # imported and none of its code runs.
    (OrderedDict, "yacs.config.CfgNode"),
)
ALLOWED_GLOBAL_NAMES = tuple(name for _, name in ALLOWED_GLOBALS)

_REFUSED_NAME = re.compile(r"GLOBAL ([\w.]+)|unrecognized function ([^\s]+)|but got (<[^>]+>)")


def read_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """The content of a .safetensors / .pth / .bin file, on CPU.

    Pickled files are read with torch's weights-only unpickler, allowing only the globals of
    ALLOWED_GLOBALS (inside a `torch.serialization.safe_globals` context: no global state
    changes). A file that needs anything else is refused with a CheckpointError naming the
    file and what it holds; a file that is not a checkpoint at all, likewise."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"checkpoint {path} is not a readable safetensors file ({err})") from err
    with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
        try:
            # torch.save archives are memory-mapped: a ViT-L file is not held twice in RAM
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except pickle.UnpicklingError as err:
            refused = _unsafe_globals(path, err)
            if refused is None:
                raise CheckpointError(
                    f"checkpoint {path} is not a PyTorch checkpoint or is damaged: it is neither a "
                    f"torch.save archive nor a pickle the weights-only reader can parse "
                    f"({_reason(err)}). Download the file again") from None
            raise CheckpointError(
                f"checkpoint {path} was refused: besides tensors it pickles {refused}, which "
                f"unpickling would import and run. The harness never unpickles a checkpoint in "
                f"full; it allows only {list(ALLOWED_GLOBAL_NAMES)} (what the official release "
                f"files hold). Use the official release file or the timm hub weights, or, for a "
                f"file you trust, save its state dict alone (or as .safetensors) on another "
                f"machine") from None
        except (RuntimeError, EOFError, ValueError, OSError) as err:
            if isinstance(err, FileNotFoundError):
                raise
            raise CheckpointError(
                f"checkpoint {path} could not be read: {_reason(err)} (truncated or damaged "
                f"download?)") from None


def _reason(err: BaseException) -> str:
    """The first informative line of torch's error (its weights_only preamble removed)."""
    text = str(err)
    for marker in ("WeightsUnpickler error:", "Unpickler error:"):
        if marker in text:
            text = text.split(marker, 1)[1]
    return " ".join(text.strip().split("\n")[0].split())[:300] or type(err).__name__


def _unsafe_globals(path: Path, err: BaseException) -> list[str] | None:
    """The disallowed globals in the file (static scan, nothing runs), or None when the file
    is no checkpoint at all."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (ValueError, RuntimeError, OSError):
        found = None  # not a torch.save zip archive: legacy format or garbage
    if found:
        return sorted(found)
    # Legacy (pre-zip) files and globals pushed at run time: torch's error names the culprit.
    match = _REFUSED_NAME.search(str(err))
    if match:
        return [next(g for g in match.groups() if g)]
    return None


def file_digest(path: str | Path, chars: int = 16) -> str:
    """sha256 of the file's bytes, first `chars` hex digits (hashed once per process per
    file version: a 1 GB training checkpoint takes seconds)."""
    stat = Path(path).stat()
    return _file_digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)[:chars]


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            sha.update(block)
    return sha.hexdigest()


def _is_state_dict(obj: Any) -> bool:
    if not isinstance(obj, Mapping) or not obj:
        return False
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return False
    return any(k.endswith(m) for k in obj for m in _STATE_DICT_MARKERS)


def unwrap(raw: Mapping[str, Any], fmt: CheckpointFormat, source: str) -> dict[str, torch.Tensor]:
    """The state dict inside `raw`: raw itself when flat, else under one of fmt.wrappers."""
    if isinstance(raw, Mapping) and any("embeddings.patch_embeddings.projection" in str(k) for k in raw):
        raise CheckpointFormatError(
            f"checkpoint {source} is in Hugging Face transformers format (ViTModel/Dinov2Model "
            "keys such as 'embeddings.patch_embeddings.projection.weight'); give the official "
            "release file or the timm weights (a timm hub id such as 'timm/vit_base_patch16_224.dino')"
        )
    if _is_state_dict(raw):
        return dict(raw)
    if isinstance(raw, Mapping):
        for key in fmt.wrappers:
            inner = raw.get(key)
            if isinstance(inner, Mapping) and _is_state_dict(inner):
                return dict(inner)
    top = sorted(raw)[:20] if isinstance(raw, Mapping) else type(raw).__name__
    raise CheckpointFormatError(
        f"checkpoint {source}: no state dict found. Expected a flat state dict or one under "
        f"{list(fmt.wrappers) or '(no wrapper)'}; top-level keys are {top}"
    )


def convert(raw: Mapping[str, Any], fmt: CheckpointFormat, source: str) -> dict[str, torch.Tensor]:
    """Official release content -> state dict with timm's parameter names."""
    state = unwrap(raw, fmt, source)
    for prefix in fmt.prefixes:
        if any(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    dropped = [re.compile(p) for p in fmt.dropped]
    state = {k: v for k, v in state.items() if not any(p.search(k) for p in dropped)}
    for pattern, replacement in fmt.renames:
        state = {re.sub(pattern, replacement, k): v for k, v in state.items()}
    return state


def load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load `state` into `module`; any key difference or shape difference raises."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        (k, state[k].shape, expected[k].shape)
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        raise CheckpointKeyError(source, missing, unexpected, mismatched)
    module.load_state_dict(state, strict=True)
