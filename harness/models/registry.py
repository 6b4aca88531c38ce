"""The registry: name -> ModelSpec, gathered from the family modules, plus the models a run
adds by spec (`register`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from harness.models import beit, scale_mae, timm_family, vit
from harness.models.spec import ModelSpec

FAMILY_MODULES = {"vit": vit, "beit": beit, "timm": timm_family, "scale_mae": scale_mae}

REGISTRY: MappingProxyType[str, ModelSpec] = MappingProxyType(
    {spec.name: spec for module in FAMILY_MODULES.values() for spec in module.SPECS}
)

# Models added at run time (e.g. from --claims-add-model or a spec file); process-wide, so
# a pytest plugin registers them in every xdist worker (pytest_configure runs in each).
_ADDED: dict[str, ModelSpec] = {}


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name] if name in REGISTRY else _ADDED[name]
    except KeyError:
        added = f"; added by spec: {', '.join(sorted(_ADDED))}" if _ADDED else ""
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(sorted(REGISTRY))}{added}"
        ) from None


def register(specs: ModelSpec | Iterable[ModelSpec]) -> list[ModelSpec]:
    """Make models added by spec loadable by name (`load(name)`, `get_spec(name)`).
    Registering the same spec again is a no-op; another spec under a taken name is an error."""
    specs = [specs] if isinstance(specs, ModelSpec) else list(specs)
    for spec in specs:
        if not isinstance(spec, ModelSpec):
            raise TypeError(f"register expects ModelSpec objects, got {type(spec).__name__}")
        if spec.name in REGISTRY:
            raise ValueError(
                f"model name {spec.name!r} is taken by the registry's {REGISTRY[spec.name].title}; "
                "choose another name (other weights for a registry model go through its weights option)")
        if spec.name in _ADDED and _ADDED[spec.name] != spec:
            raise ValueError(f"model name {spec.name!r} is already added with another spec "
                             f"({_ADDED[spec.name].source}); choose another name")
    for spec in specs:
        _ADDED[spec.name] = spec
    return specs


def unregister(name: str) -> None:
    _ADDED.pop(name, None)


def all_specs() -> Mapping[str, ModelSpec]:
    """The registry's models followed by the ones added in this process."""
    return MappingProxyType({**REGISTRY, **_ADDED})
