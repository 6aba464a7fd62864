"""A served model: the loaded artifact and its drift monitors, swapped together.

`ServedModel.current` is a `Served` bundle. A stage reads it once per batch and uses that
bundle for the whole batch, so every output names the version that actually scored it,
and the batch is observed by that version's monitors (against its own references),
even when a newer version is swapped in meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import torch

from models.artifacts import ArtifactManifest
from models.errors import TributaryError
from models.nn.precision import exact_float32
from stream.monitoring.model_monitors import ModelMonitors


class Servable(Protocol):
    """A model that can be moved to a device and put in eval mode (a torch module, or
    models.gbdt.GbdtFraudModel, which stays on the CPU)."""

    def to(self, device: torch.device) -> Servable: ...

    def eval(self) -> Servable: ...


class LoadedModel(Protocol):
    """What any loaded artifact offers to serving (LoadedFraudModel, LoadedDonorModel)."""

    @property
    def model(self) -> Servable: ...
    @property
    def features(self) -> object: ...
    @property
    def manifest(self) -> ArtifactManifest: ...
    @property
    def version(self) -> str: ...


Loaded = TypeVar("Loaded", bound=LoadedModel)


class ModelSwapError(TributaryError, ValueError):
    pass


@dataclass(frozen=True)
class Served(Generic[Loaded]):
    model: Loaded  # a loaded artifact: `model` (the module), `features`, `manifest`, `version`
    monitors: ModelMonitors


class ServedModel(Generic[Loaded]):
    """Holds the served bundle. `swap` replaces it atomically.

    `monitors_for(loaded)` builds a version's monitors, fresh for every version (None:
    no monitors, for benchmarks and tests of the scoring alone).
    """

    def __init__(self, loaded: Loaded, device: torch.device | str = "cpu",
                 monitors_for: Callable[[Loaded], ModelMonitors] | None = None):
        self.device = torch.device(device)
        exact_float32(self.device)  # scores on CUDA within 1e-5 of the CPU's (offline) scores
        self._monitors_for: Callable[[Loaded], ModelMonitors] = monitors_for or (lambda loaded: ModelMonitors([]))
        self._lock = threading.Lock()
        self._current = self._prepare(loaded)

    @property
    def current(self) -> Served[Loaded]:
        return self._current

    def _prepare(self, loaded: Loaded) -> Served[Loaded]:
        loaded.model.to(self.device).eval()
        return Served(loaded, self._monitors_for(loaded))

    def swap(self, loaded: Loaded) -> Served[Loaded]:
        """Serve `loaded` (with new monitors) from the next batch on; returns what it replaced.

        Refuses a model whose feature settings differ: the live state (window length,
        fan-outs) was built for the current ones.
        """
        current = self._current.model
        if loaded.features != current.features:
            raise ModelSwapError(
                f"model {loaded.manifest.name} {loaded.version} needs features {loaded.features}, the worker's "
                f"state is built for {current.features}; restart the worker with a fresh state to switch"
            )
        prepared = self._prepare(loaded)
        with self._lock:
            previous, self._current = self._current, prepared
        return previous
