"""Instance control: each deployment's current release sizes its pools.

`InstanceControl` holds the current release of every deployment (`ReleasePolicy`: version,
hardware, min/max instances, idle timeout) and applies it to the engine's pools:

- The pool of the release's version gets its limits (`Pool.set_policy`): a lower
  `max_instances` stops the surplus once idle; `min_instances` are booted ahead of demand and
  kept (`Pool.keep_warm`), also after a restart (`load` reads every release at start).
- A new release that runs another version drains the pools of the old one (`Pool.drain`): what
  is queued or running there was made for the old version and finishes there (nothing moves, so
  nothing runs twice); then the pool closes (`on_drained`) instead of idling out.
- A new release on other hardware, same version: the pool's members are retired (`Pool.renew`):
  what runs finishes on the old machine, new boots read the new hardware.
- A per-release `idle_timeout` (None: the server's `--idle-timeout`) is the pool's.

Replicas (docs/replicas.md). Every replica reads the releases again every `REFRESH` seconds, so
a release made through another replica reaches its pools too. Warm instances are kept by one
replica per deployment: the live replicas, sorted by id, take deployments in turn (deployment
id modulo their count). Every replica computes the same answer from the `replicas` table; while
one joins or leaves, two may keep a deployment's instances warm (or none) until the next
refresh. Predictions still run on the replica that took them, as ever.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from modelyard.store.deployments import ReleasePolicy, live_replicas, release_policies

from .jobs import PoolKey
from .pools import Pool, PoolPolicy

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)

REFRESH = 5.0  # seconds between reads of the releases (and, shared, of the live replicas)
HARDWARE_CHANGED = "the deployment's hardware changed"


class InstanceControl:
    """Applies deployments' releases to one engine's pools."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.releases: dict[int, ReleasePolicy] = {}
        self.replicas: list[str] = []  # the live replicas, sorted (shared database only)
        self.refresh_every = REFRESH

    async def load(self) -> None:
        """Read every deployment's current release (the engine's start, before recovery)."""
        releases, self.replicas = await asyncio.to_thread(self._read)
        for release in releases:
            self.apply(release)

    def start(self) -> None:
        """Keep the releases and the keepers current (after the replica joined)."""
        self.engine._spawn(self._refresh_forever(), name="instance control")

    def policy(self, release: ReleasePolicy) -> PoolPolicy:
        idle = release.idle_timeout
        return PoolPolicy(
            max_instances=release.max_instances,
            min_instances=release.min_instances,
            idle_timeout=self.engine.settings.idle_timeout if idle is None else idle,
        )

    def apply(self, release: ReleasePolicy) -> None:
        """A deployment's current release (new, or as it was): its pools follow it."""
        engine = self.engine
        deployment_id = release.deployment_id
        old = self.releases.get(deployment_id)
        self.releases[deployment_id] = release
        policy = self.policy(release)
        engine.policies[deployment_id] = policy
        rehost = old is not None and old.hardware != release.hardware
        if rehost:
            engine.metering.forget()  # a deployment's SKU is in its billing context
        if old is not None and (rehost or old.idle_timeout != release.idle_timeout):
            engine.specs.forget(deployment_id)  # boots from now on read the new spec
        for key, pool in list(engine.pools.items()):
            if key.deployment_id != deployment_id:
                continue
            if key.version_pk != release.version_pk:
                pool.drain()
                continue
            pool.draining = False  # back to this version before its pool closed
            pool.set_policy(policy)
            if rehost:
                pool.renew(HARDWARE_CHANGED)
        self._keep_warm(release)

    def configure(self, pool: Pool, key: PoolKey) -> None:
        """A new pool of the engine: warm or not, drained at once if its version is not the
        deployment's any more (a prediction recovered after a restart made for an old one)."""
        pool.on_drained = self._drained
        if key.deployment_id is None:
            return
        release = self.releases.get(key.deployment_id)
        pool.keep_warm = self.keeps(key.deployment_id)
        if release is None or release.version_pk != key.version_pk:
            pool.drain()

    def keeps(self, deployment_id: int) -> bool:
        """Whether this replica keeps the deployment's warm instances."""
        if not self.engine.db.shared:
            return True
        if not self.replicas:
            return False
        return self.replicas[deployment_id % len(self.replicas)] == self.engine.replica.id

    async def forget(self, deployment_id: int) -> None:
        """A deleted deployment (nothing queued or running): its pools close now; its id may
        be given to a new deployment, which must not inherit warm instances."""
        engine = self.engine
        self.releases.pop(deployment_id, None)
        engine.policies.pop(deployment_id, None)
        engine.specs.forget(deployment_id)
        for key in [k for k in engine.pools if k.deployment_id == deployment_id]:
            await engine.pools.pop(key).close()

    # -- internals -------------------------------------------------------------------------

    def _keep_warm(self, release: ReleasePolicy) -> None:
        """The release's pool exists (when it keeps instances) and knows whether it keeps them."""
        engine = self.engine
        if engine._stopping:
            return
        key = PoolKey(release.version_pk, "predict", release.deployment_id)
        keeps = self.keeps(release.deployment_id)
        pool = engine.pools.get(key)
        if pool is None and keeps and release.min_instances > 0:
            pool = engine._new_pool(key)
        if pool is not None and pool.keep_warm != keeps:
            pool.keep_warm = keeps
            pool.set_policy(pool.policy)  # a kick: boot, or let idle ones go

    def _drained(self, pool: Pool) -> None:
        """A drained pool leaves the engine now (no job can be put on it any more) and closes."""
        engine = self.engine
        for key, candidate in list(engine.pools.items()):
            if candidate is pool:
                del engine.pools[key]
        engine._spawn(pool.close(), name=f"close {pool.name}")

    def _read(self) -> tuple[list[ReleasePolicy], list[str]]:
        with self.engine.db.session() as session:
            releases = release_policies(session)
            replicas = live_replicas(session) if self.engine.db.shared else []
            return releases, replicas

    async def refresh(self) -> None:
        """Read the releases and the replicas again and apply what changed."""
        releases, self.replicas = await asyncio.to_thread(self._read)
        current = {r.deployment_id: r for r in releases}
        for deployment_id in [d for d in self.releases if d not in current]:
            # Deleted through another replica: nothing is kept, what runs here finishes.
            del self.releases[deployment_id]
            self.engine.policies.pop(deployment_id, None)
            for key, pool in list(self.engine.pools.items()):
                if key.deployment_id == deployment_id:
                    pool.drain()
        for release in releases:
            if self.releases.get(release.deployment_id) != release:
                self.apply(release)
            else:
                self._keep_warm(release)

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # the database away: the next round tries again
                log.exception("reading the deployments' releases failed")
            await asyncio.sleep(self.refresh_every)
