"""The stage registry: every stage the platform runs, read from its service package's `STAGE`.

Adding a stage = a new service package exposing `STAGE = StageSpec(...)` + one line in
`PACKAGES` (pipeline order: sources first). `up`, `status`, `replay`, `rebuild`, `asyncapi`
and the deploy generators read `stages()`; `tools/` imports service packages only by their
root, never their submodules. `register` adds a stage at run time (a plugin, or a test).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from cryptoflow_runtime import StageSpec

PACKAGES: tuple[str, ...] = (
    "cryptoflow_extractor",
    "cryptoflow_lake_writer",
    "cryptoflow_transformer",
    "cryptoflow_warehouse_loader",
)
# Tools that run beside the stages in a local stack (no StageSpec: they are not part of the pipeline):
# the simulator, and the read API (it reads the warehouse and the public subjects, consumes nothing).
TOOL_MODULES: dict[str, str] = {"exchange-sim": "cryptoflow_exchange_sim.main", "api": "cryptoflow_api.main"}

_registered: list[StageSpec] = []


def stages() -> list[StageSpec]:
    """Every stage, in pipeline order (sources first), registered ones last."""
    found = [importlib.import_module(package).STAGE for package in PACKAGES]
    return [*found, *_registered]


def stage(name: str) -> StageSpec:
    for spec in stages():
        if spec.name == name:
            return spec
    raise LookupError(f"no stage {name!r} (known: {', '.join(s.name for s in stages())})")


def replayable() -> list[str]:
    return [spec.name for spec in stages() if spec.replayable]


def register(spec: StageSpec) -> None:
    if any(s.name == spec.name for s in stages()):
        raise ValueError(f"stage {spec.name!r} is already registered")
    _registered.append(spec)


def unregister(name: str) -> None:
    _registered[:] = [s for s in _registered if s.name != name]


class _Modules(Mapping[str, str]):
    """name → `python -m` module of every stage and tool, resolved when asked."""

    def _all(self) -> dict[str, str]:
        return {**{spec.name: spec.module for spec in stages()}, **TOOL_MODULES}

    def __getitem__(self, name: str) -> str:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


MODULES: Mapping[str, str] = _Modules()
