"""Prometheus metrics of one engine (one server process), in a registry of its own.

Each server process (each API replica) reports what it runs: scrape every replica and sum. The
metrics live in a `CollectorRegistry` per engine, never in prometheus_client's global one, so
that several servers in one process (the tests) each report their own.

What costs nothing on hot paths:
- Gauges are read when Prometheus scrapes (`_Snapshot.collect`): queue depth per pool, instances
  by state and hardware (the `InstanceBoard`), jobs by state. Nothing updates them meanwhile.
- Histograms and counters are observed where the event happens, from what is already at hand:
  the event log's listener (after each commit) gives queue wait and prediction duration from the
  prediction's own timestamps; the instance board's changes give boot and setup durations; the
  webhook outbox reports each settled try.

Labels stay bounded: a model (`owner/name`), its version id on the queue gauge only, a hardware
SKU, a status or state; never a prediction id.

Metered seconds and cost (`modelyard_metered_seconds_total`, `modelyard_cost_dollars_total`)
count the ledger rows this process committed (engine/metering.py tells them), so that the sum
over replicas is the ledger's total.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import select

from modelyard.store.predictions import NewEvent
from modelyard.store.tables import Account, Model, Prediction, Version, utcnow

from .jobs import PoolKey
from .metering import Recorded
from .pools import Member

if TYPE_CHECKING:
    from .engine import Engine

# Seconds: from a quick CPU model to an hour-long training.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# Seconds: a warm pool answers in milliseconds; a cold boot (environment, weights) takes minutes.
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
BOOT_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
log = logging.getLogger(__name__)
UNKNOWN = "unknown"  # a model whose name was not read yet (a pool seen before any prediction)


class EngineMetrics:
    """The engine's metrics (see the module doc); `registry` is what `/metrics` renders."""

    def __init__(self, engine: Engine, registry: CollectorRegistry | None = None) -> None:
        self.engine = engine
        self.registry = registry if registry is not None else CollectorRegistry()
        # version pk -> (model, version id): names for the pools' labels
        self.names: dict[int, tuple[str, str]] = {}
        self._ready: set[str] = set()  # members whose boot was observed
        r = self.registry
        self.queue_wait = Histogram(
            "modelyard_queue_wait_seconds",
            "From create to started (processing): queued, plus a cold boot when one was needed.",
            ["model", "kind"], registry=r, buckets=WAIT_BUCKETS,
        )  # fmt: skip
        self.duration = Histogram(
            "modelyard_prediction_duration_seconds",
            "From started to completed, by final status (predictions that started).",
            ["model", "kind", "status"], registry=r, buckets=DURATION_BUCKETS,
        )  # fmt: skip
        self.completed = Counter(
            "modelyard_predictions_completed",
            "Predictions and trainings that ended here, by final status (started or not).",
            ["model", "kind", "status"], registry=r,
        )  # fmt: skip
        self.boot = Histogram(
            "modelyard_instance_boot_seconds",
            "From asking for an instance to its first free slot (environment, worker, setup), "
            "or to its failure.",
            ["model", "hardware", "outcome"], registry=r, buckets=BOOT_BUCKETS,
        )  # fmt: skip
        self.setup = Histogram(
            "modelyard_instance_setup_seconds",
            "The model's setup() alone, where the backend reports it (Instance.setup_seconds).",
            ["model", "hardware"], registry=r, buckets=BOOT_BUCKETS,
        )  # fmt: skip
        self.webhooks = Counter(
            "modelyard_webhook_deliveries",
            "Webhook tries by event and outcome: delivered, retrying (a terminal webhook tried "
            "again later), abandoned (no try left).",
            ["event", "outcome"], registry=r,
        )  # fmt: skip
        self.metered = Counter(
            "modelyard_metered_seconds",
            "Seconds the metering ledger recorded, by model, hardware and phase (setup, active, "
            "idle, output).",
            ["model", "hardware", "phase"], registry=r,
        )  # fmt: skip
        self.cost = Counter(
            "modelyard_cost_dollars",
            "What those seconds (or outputs) cost, in USD (billed rows only).",
            ["model", "hardware", "phase"], registry=r,
        )  # fmt: skip
        r.register(_Snapshot(self))
        engine.log.add_listener(self.on_events)
        engine.webhooks.on_outcome = self.on_webhook
        engine.instances.listeners.append(self)  # boots (and their ends) of every pool
        engine.metering.listeners.append(self.on_metered)

    # -- what happens --------------------------------------------------------------------------

    def on_events(self, prediction: Prediction, events: list[NewEvent]) -> None:
        """Event log listener: queue wait when it starts, duration and status when it ends."""
        self.names.setdefault(prediction.version_pk, (prediction.model_ref, prediction.version_id))
        model, kind = prediction.model_ref, prediction.kind
        for event in events:
            if event.type == "status" and event.data.get("status") == "processing":
                if prediction.started_at is not None:
                    wait = (prediction.started_at - prediction.created_at).total_seconds()
                    self.queue_wait.labels(model, kind).observe(max(0.0, wait))
            elif event.type == "done":
                status = prediction.status
                self.completed.labels(model, kind, status).inc()
                started, ended = prediction.started_at, prediction.completed_at
                if started is not None and ended is not None:
                    took = max(0.0, (ended - started).total_seconds())
                    self.duration.labels(model, kind, status).observe(took)

    def on_metered(self, row: Recorded) -> None:
        """A ledger row committed (on the loop or the writer's thread: counters are safe)."""
        model = row.model or self.names.get(row.version_pk, (UNKNOWN, ""))[0]
        self.metered.labels(model, row.hardware, row.phase).inc(row.seconds)
        if row.cost_nanos:
            self.cost.labels(model, row.hardware, row.phase).inc(row.cost_nanos / 1e9)

    def on_webhook(self, event: str, outcome: str) -> None:
        self.webhooks.labels(event, outcome).inc()

    def member_changed(self, key: PoolKey, member: Member) -> None:
        """A pool member changed: the first time it is ready, its boot took until now."""
        if not member.ready or member.id in self._ready:
            return
        self._ready.add(member.id)
        model, hardware = self.model_of(key, member.log_to), _hardware(member)
        took = (utcnow() - member.started_at).total_seconds()
        self.boot.labels(model, hardware, "ready").observe(max(0.0, took))
        setup = getattr(member.instance, "setup_seconds", None)  # backends that measure it
        if isinstance(setup, int | float):
            self.setup.labels(model, hardware).observe(max(0.0, float(setup)))

    def member_gone(self, key: PoolKey, member: Member) -> None:
        """A member left; one that never got ready and was not stopped failed its boot."""
        if member.id in self._ready:
            self._ready.discard(member.id)
        elif not member.stopping:
            took = (utcnow() - member.started_at).total_seconds()
            self.boot.labels(
                self.model_of(key, member.log_to), _hardware(member), "failed"
            ).observe(max(0.0, took))

    # -- names ---------------------------------------------------------------------------------

    def model_of(self, key: PoolKey, prediction_id: str = "") -> str:
        """The model of a pool; `prediction_id`, one of its predictions, names it when no event
        of the pool was seen yet (a boot with no build or setup output)."""
        if key.version_pk not in self.names and prediction_id:
            prediction = self.engine.log.known(prediction_id)
            if prediction is not None and prediction.version_pk == key.version_pk:
                self.names[key.version_pk] = (prediction.model_ref, prediction.version_id)
        return self.names.get(key.version_pk, (UNKNOWN, ""))[0]

    def unnamed(self) -> list[int]:
        """Version pks of pools whose names are not known yet (read by `resolve`)."""
        return [
            key.version_pk for key in list(self.engine.pools) if key.version_pk not in self.names
        ]

    def resolve(self, version_pks: Iterable[int]) -> None:
        """Read the names of versions from SQL (blocking: call it off the event loop)."""
        wanted = sorted(set(version_pks))
        if not wanted:
            return
        with self.engine.db.session() as session:
            rows = session.execute(
                select(Version.pk, Version.id, Account.name, Model.name)
                .join(Model, Model.id == Version.model_id)
                .join(Account, Account.id == Model.owner_id)
                .where(Version.pk.in_(wanted))
            )
            for pk, version_id, owner, name in rows:
                self.names[pk] = (f"{owner}/{name}", version_id)

    async def refresh(self) -> None:
        """Before a scrape: names of new pools, read off the loop."""
        missing = self.unnamed()
        if missing:
            await asyncio.to_thread(self.resolve, missing)


def _hardware(member: Member) -> str:
    spec = getattr(member.instance, "spec", None)  # None while the backend makes it
    return spec.hardware.sku if spec is not None else UNKNOWN


class _Snapshot(Collector):
    """The gauges, read from the engine when Prometheus scrapes (on the event loop: the pools
    and the board are the loop's)."""

    def __init__(self, metrics: EngineMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # no description up front: collect() is cheap, and only runs on a scrape

    def collect(self) -> Iterator[Metric]:
        metrics, engine = self.metrics, self.metrics.engine
        depth = GaugeMetricFamily(
            "modelyard_queue_depth",
            "Predictions waiting in a pool's queue for a free slot (not booting, not running).",
            labels=["model", "version", "kind", "pool"],
        )
        for key, pool in list(engine.pools.items()):
            model, version = metrics.names.get(key.version_pk, (UNKNOWN, ""))
            kind = "training" if key.mode == "train" else "prediction"
            where = "model" if key.deployment_id is None else f"deployment-{key.deployment_id}"
            depth.add_metric([model, version, kind, where], len(pool.queue))
        yield depth
        instances = GaugeMetricFamily(
            "modelyard_instances",
            "Instances of this server by state (booting, idle, busy, stopping) and hardware.",
            labels=["model", "hardware", "state"],
        )
        counts: dict[tuple[str, str, str], int] = {}
        for watched in list(engine.instances.watched.values()):
            member = watched.member
            labels = (metrics.model_of(watched.key), _hardware(member), member.state)
            counts[labels] = counts.get(labels, 0) + 1
        for labels, count in sorted(counts.items()):
            instances.add_metric(list(labels), count)
        yield instances
        jobs = GaugeMetricFamily(
            "modelyard_jobs",
            "Predictions this server is responsible for, by where they are "
            "(queued, booting, running, finishing).",
            labels=["state"],
        )
        by_state: dict[str, int] = {}
        for job in list(engine.jobs.values()):
            by_state[str(job.state)] = by_state.get(str(job.state), 0) + 1
        for state, count in sorted(by_state.items()):
            jobs.add_metric([state], count)
        yield jobs
        templates = getattr(engine.backend, "templates", None)  # the local backend's
        if templates is not None:
            warm = GaugeMetricFamily(
                "modelyard_warm_templates",
                "Warm templates kept (runtime/templates.py), by template and state.",
                labels=["template", "state"],
            )
            held = GaugeMetricFamily(
                "modelyard_warm_template_memory_bytes",
                "Resident memory of each warm template's processes.",
                labels=["template"],
            )
            for row in templates.stats():
                warm.add_metric([row.name, row.state], 1)
                held.add_metric([row.name], row.memory_bytes)
            yield warm
            yield held
