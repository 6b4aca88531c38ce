"""Where a model's weights come from: the default source of its spec (local Hugging Face
cache first, then `<cache-dir>/weights/<release file>`, then a download attempt), a file
path, or a hub id. Nothing here ever waits on the network when HF_HUB_OFFLINE is set."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from harness import config
from harness.models.checkpoint import file_digest
from harness.models.spec import ModelSpec

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".pkl")
HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub repos hold


class WeightsNotAvailableError(FileNotFoundError):
    """No weights on this machine for the requested source; says what to get and where."""


@dataclass(frozen=True)
class WeightsFile:
    path: Path
    weights_id: str  # what was loaded, for people: a hub id or a file path
    digest: str  # stable id of the exact weights, for cache keys
    is_release_file: bool  # official release format (else timm format from a hub)


def weights_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    return config.cache_dir(cache_dir) / "weights"


def hub_offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "")
    return flag.upper() in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


def hub_cache_folder() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def cached_hub_file(hub_id: str) -> Path | None:
    """The weights file of `hub_id` in the local Hugging Face cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    for filename in HUB_FILES:
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def _hub_digest(hub_id: str, path: Path) -> str:
    # The snapshot folder is named by the commit, so id + commit pins the exact file.
    revision = path.parent.name
    return hashlib.sha256(f"{hub_id}@{revision}/{path.name}".encode()).hexdigest()[:16]


def _download(hub_id: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    for filename in HUB_FILES[:-1]:
        try:
            return Path(hf_hub_download(hub_id, filename, etag_timeout=10))
        except EntryNotFoundError:
            continue  # the repo is reachable but holds the other file name
    return Path(hf_hub_download(hub_id, HUB_FILES[-1], etag_timeout=10))


def hub_weights(hub_id: str, *, how_to: str = "") -> WeightsFile:
    """Weights of a hub repo: local cache, else a download unless offline."""
    path = cached_hub_file(hub_id)
    if path is None and not hub_offline():
        try:
            path = _download(hub_id)
        except Exception as err:
            raise WeightsNotAvailableError(
                _hub_message(hub_id, how_to) + f" (download failed: {type(err).__name__}: {err})"
            ) from err
    if path is None:
        raise WeightsNotAvailableError(_hub_message(hub_id, how_to) + " (HF_HUB_OFFLINE is set)")
    return WeightsFile(path, f"hf-hub:{hub_id}", _hub_digest(hub_id, path), is_release_file=False)


def _hub_message(hub_id: str, how_to: str) -> str:
    return (
        f"weights hf-hub:{hub_id} are not in the local Hugging Face cache {hub_cache_folder()}. "
        f"On a machine with internet run `huggingface-cli download {hub_id}` and copy that "
        f"cache folder here (or set HF_HOME to it)" + (f"; {how_to}" if how_to else "")
    )


def release_file_path(spec: ModelSpec, cache_dir: str | os.PathLike | None = None) -> Path:
    return weights_dir(cache_dir) / spec.release_file


def release_file_hint(spec: ModelSpec, cache_dir: str | os.PathLike | None = None) -> str:
    return (
        f"or download the official release file {spec.release_url} and save it as "
        f"{release_file_path(spec, cache_dir)}"
    )


def local_file(path: str | os.PathLike, *, model: str | None = None) -> WeightsFile:
    """A weights file, or a folder holding a timm hub snapshot (model.safetensors or
    pytorch_model.bin)."""
    path = weights_path(path, model=model)
    return WeightsFile(path, str(path), file_digest(path), is_release_file=True)


def weights_path(path: str | os.PathLike, *, model: str | None = None) -> Path:
    """The file `path` names (inside it when it is a hub snapshot folder); no hashing."""
    path = Path(path).expanduser()
    if path.is_dir():
        inside = [path / name for name in HUB_FILES if (path / name).is_file()]
        if not inside:
            raise WeightsNotAvailableError(
                f"weights folder {path} holds none of {', '.join(HUB_FILES)} (a timm hub snapshot)")
        path = inside[0]
    if not path.is_file():
        named_by = f" (named by the spec of model {model!r})" if model else ""
        raise WeightsNotAvailableError(f"weights file {path}{named_by} does not exist")
    return path


def default_weights(spec: ModelSpec, cache_dir: str | os.PathLike | None = None) -> WeightsFile:
    """The spec's default source, looked up locally first."""
    if spec.weights_file:
        return local_file(spec.weights_file, model=spec.name)
    release = release_file_path(spec, cache_dir)
    if spec.hub_id:
        cached = cached_hub_file(spec.hub_id)
        if cached is not None:
            return WeightsFile(cached, f"hf-hub:{spec.hub_id}", _hub_digest(spec.hub_id, cached), False)
        if spec.release_file and release.is_file():
            return local_file(release)
        return hub_weights(spec.hub_id, how_to=release_file_hint(spec, cache_dir) if spec.release_file else "")
    if release.is_file():
        return local_file(release)
    raise WeightsNotAvailableError(
        f"no weights for {spec.name!r}: the official release file {spec.release_file} is not "
        f"in {release.parent}. Download {spec.release_url} and save it as {release} "
        f"(or pass weights=PATH)"
    )


def resolve(spec: ModelSpec, weights: str | os.PathLike | None, cache_dir=None) -> WeightsFile:
    """None -> the default source; an existing path -> that file; 'hf-hub:org/name',
    'org/name' or a timm pretrained tag ('vit_base_patch16_224.dino') -> that hub repo."""
    if weights is None:
        return default_weights(spec, cache_dir)
    text = str(weights)
    if Path(text).expanduser().exists():
        return local_file(text)
    if text.startswith("hf-hub:"):
        return hub_weights(text.removeprefix("hf-hub:"))
    if text.endswith(CHECKPOINT_SUFFIXES) or text.startswith(("/", ".", "~")):
        raise WeightsNotAvailableError(f"weights file {text} does not exist")
    if "/" in text:
        return hub_weights(text)
    return hub_weights(_timm_tag_hub_id(text))


def _timm_tag_hub_id(tag: str) -> str:
    import timm

    cfg = timm.models.get_pretrained_cfg(tag) if "." in tag else None
    if cfg is None or not cfg.hf_hub_id:
        raise WeightsNotAvailableError(
            f"{tag!r} is neither an existing file, a hub id ('org/name' or 'hf-hub:org/name') "
            "nor a timm pretrained tag with hub weights (e.g. 'vit_base_patch16_224.dino')"
        )
    return cfg.hf_hub_id.rstrip("/")


def local_status(spec: ModelSpec, cache_dir=None) -> tuple[bool, str]:
    """(available offline, where it is or what is missing) without touching the network."""
    if spec.weights_file:
        try:
            return True, str(weights_path(spec.weights_file))
        except WeightsNotAvailableError:
            return False, spec.weights_file
    if spec.hub_id:
        cached = cached_hub_file(spec.hub_id)
        if cached is not None:
            return True, f"hf cache: {spec.hub_id}"
    release = release_file_path(spec, cache_dir)
    if spec.release_file and release.is_file():
        return True, str(release)
    if spec.hub_id:
        return False, f"hf-hub:{spec.hub_id}" + (f" or {release}" if spec.release_file else "")
    return False, f"{release} (from {spec.release_url})"
