"""Find adapters by name through the ``orchestra.adapters`` entry-point group.

Built-in adapters are declared in ``pyproject.toml`` exactly as a third-party
package would declare its own, so there is one way to add an agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from orchestra.agents.base import Adapter, AdapterFactory
from orchestra.domain.errors import InvalidInput

GROUP = "orchestra.adapters"


@cache
def adapter_factories() -> dict[str, AdapterFactory]:
    """Every installed adapter, by name."""
    return {ep.name: ep.load() for ep in entry_points(group=GROUP)}


def adapter_names() -> list[str]:
    return sorted(adapter_factories())


def create_adapter(name: str, options: Mapping[str, Any] | None = None) -> Adapter:
    """Build the adapter ``name`` with ``options``; unknown names are bad input."""
    factory = adapter_factories().get(name)
    if factory is None:
        known = ", ".join(adapter_names()) or "none"
        raise InvalidInput(
            f"unknown agent adapter {name!r}; installed adapters: {known}",
            details={"adapter": name},
        )
    return factory(dict(options or {}))
