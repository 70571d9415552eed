"""The local backend: instances are worker processes on this machine (`runtime.LocalModel`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.runtime.events import Event
from modelyard.runtime.local import LocalModel

from .backend import BootFailed, InstanceSpec, Progress


class LocalInstance:
    """One worker process of a version, with the environment built from its package."""

    def __init__(
        self, spec: InstanceSpec, builder: EnvironmentBuilder, http_client: httpx.AsyncClient
    ) -> None:
        self.spec = spec
        self._builder = builder
        self._http = http_client
        self._model: LocalModel | None = None

    async def start(self, progress: Progress) -> int:
        try:
            self._model = LocalModel(
                self.spec.package_dir,
                mode=self.spec.mode,
                builder=self._builder,
                weights=self.spec.weights,
                setup_timeout=self.spec.setup_timeout,
                http_client=self._http,
                schema=self.spec.schema,
                collect_stream=False,  # the event log keeps a stream's items
            )
            result = await self._model.start(progress)
        except Exception as exc:
            raise BootFailed(str(exc) or type(exc).__name__) from exc
        if result.status != "succeeded":
            raise BootFailed(result.error or "setup failed")
        assert self._model.runner is not None
        return max(1, self._model.runner.slots)  # what the worker reported, not cog.yaml alone

    def predict(self, inputs: dict[str, Any], prediction_id: str) -> AsyncIterator[Event]:
        if self._model is None:
            raise RuntimeError("start() the instance before predicting")
        return self._model.predict(inputs, prediction_id=prediction_id)

    async def cancel(self, prediction_id: str) -> bool:
        return self._model is not None and await self._model.cancel(prediction_id)

    async def stop(self) -> None:
        if self._model is not None:
            await self._model.stop()


class LocalBackend:
    """Starts instances as worker processes of this machine."""

    def __init__(self, builder: EnvironmentBuilder, http_client: httpx.AsyncClient) -> None:
        self.builder = builder
        self.http_client = http_client  # fetches file inputs; the engine serves its own files

    def instance(self, spec: InstanceSpec) -> LocalInstance:
        return LocalInstance(spec, self.builder, self.http_client)

    async def close(self) -> None:
        await self.http_client.aclose()
