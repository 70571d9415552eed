"""What each pool's instances run (`InstanceSpec`): read once per pool from the stored version,
with the hardware its model or deployment chose, and read again after a hardware change."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from modelyard.billing.hardware import HardwareTable
from modelyard.settings import Settings
from modelyard.store.blobs import BlobStore
from modelyard.store.database import Database
from modelyard.store.tables import Version

from .backend import Backend, InstanceSpec
from .hardware import chosen_sku, needs_gpu, resolve
from .jobs import PoolKey
from .packages import PackageInfo, inspect_package, package_limits, unpacked
from .pools import PoolPolicy


class Specs:
    """The specs of the engine's pools, cached by pool key."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        blobs: BlobStore,
        backend: Backend,
        hardware: HardwareTable,
        policies: Mapping[int, PoolPolicy],  # the engine's, by deployment id (read, not copied)
    ) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self.backend = backend
        self.hardware = hardware
        self.policies = policies
        self._cache: dict[PoolKey, InstanceSpec] = {}

    async def get(self, key: PoolKey) -> InstanceSpec:
        """The pool's spec (read off the loop the first time)."""
        spec = self._cache.get(key)
        if spec is None:
            spec = await asyncio.to_thread(self._load, key)
            self._cache[key] = spec
        return spec

    def forget(self, deployment_id: int | None) -> None:
        """A deployment's (or, with None, the models') pools read their spec again."""
        for key in [k for k in self._cache if k.deployment_id == deployment_id]:
            self._cache.pop(key, None)

    def _load(self, key: PoolKey) -> InstanceSpec:
        with self.db.session() as session:
            version = session.get(Version, key.version_pk)
            if version is None:
                raise LookupError("this version was deleted")
            version_id, package_key = version.id, version.package_key
            weights_key, schema = version.weights_key, version.openapi_schema
            chooser, sku = chosen_sku(session, version, key.deployment_id)
        package_dir = self.package_dir(package_key)
        # Checked when the pool loads its spec, not only when the hardware was chosen: the
        # model's hardware may have changed since the push, and the table since the choice.
        # A refusal (BootFailed) is not cached: the next prediction tries again.
        gpu = needs_gpu(package_key, package_dir)
        hardware = resolve(self.hardware, self.backend, chooser, sku, gpu)
        policy = self.policies.get(key.deployment_id) if key.deployment_id is not None else None
        return InstanceSpec(
            version_id=version_id,
            package_key=package_key,
            package_dir=package_dir,
            mode=key.mode,
            schema=schema,
            weights_key=weights_key,  # the backend fetches them where the instance runs
            hardware=hardware,
            idle_timeout=policy.idle_timeout if policy else self.settings.idle_timeout,
            pool="model" if key.deployment_id is None else f"deployment-{key.deployment_id}",
        )

    def package_dir(self, package_key: str) -> Path:
        """The unpacked package of a version (unpacked once, shared by its instances)."""
        return unpacked(
            self.blobs, self.settings.package_dir, package_key, package_limits(self.settings)
        )

    def inspect_package(self, package_key: str) -> PackageInfo:
        """A pushed archive's config, schema and Cog version; raises `InvalidPackage`."""
        return inspect_package(
            self.blobs, self.settings.package_dir, package_key, package_limits(self.settings)
        )
