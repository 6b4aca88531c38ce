"""The registry: name -> ModelSpec, gathered from the family modules."""

from __future__ import annotations

from types import MappingProxyType

from harness.models import beit, vit
from harness.models.spec import ModelSpec

FAMILY_MODULES = {"vit": vit, "beit": beit}

REGISTRY: MappingProxyType[str, ModelSpec] = MappingProxyType(
    {spec.name: spec for module in FAMILY_MODULES.values() for spec in module.SPECS}
)


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(sorted(REGISTRY))}"
        ) from None
