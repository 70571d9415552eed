"""Data retention: the engine's periodic sweep removes the input, output, logs and output files of
predictions (and trainings) that finished longer ago than `settings.data_retention` seconds
(`web_data_retention` for those made on the web pages), as Replicate does after an hour; both
default to keeping everything (docs/platform.md "Retention").

Each batch is one transaction (store/retention.py), a sweep runs a bounded number of batches, and
several replicas may sweep at once. The blobs of removed output files go after the commit, when
nothing else refers to the same bytes.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from modelyard.settings import Settings
from modelyard.store.blobs import BlobStore
from modelyard.store.database import Database
from modelyard.store.retention import Cutoffs, remove_data
from modelyard.store.tables import utcnow

if TYPE_CHECKING:
    from .engine import Engine

BATCH = 200  # predictions per transaction
BATCHES = 10  # transactions per sweep at most: a backlog drains over several sweeps
log = logging.getLogger(__name__)


def retention_of(settings: Settings, source: str) -> float | None:
    """Seconds a finished prediction of that source keeps its data; None: for ever."""
    return settings.web_data_retention if source == "web" else settings.data_retention


def cutoffs(settings: Settings, now: datetime) -> Cutoffs:
    def before(seconds: float | None) -> datetime | None:
        return None if seconds is None else now - timedelta(seconds=seconds)

    return Cutoffs(api=before(settings.data_retention), web=before(settings.web_data_retention))


def remove_expired_data(
    settings: Settings, db: Database, blobs: BlobStore, now: datetime | None = None
) -> list[str]:
    """Remove the data of predictions past their retention at `now` (default: the clock), in
    batches of `BATCH`, at most `BATCHES` of them; the ids removed. Blocking: run it off the loop."""
    if settings.data_retention is None and settings.web_data_retention is None:
        return []
    limits = cutoffs(settings, now or utcnow())
    removed: list[str] = []
    for _ in range(BATCHES):
        with db.session() as session:
            batch = remove_data(session, limits, BATCH)
        for key in batch.unused_blobs:
            try:
                blobs.delete(key)
            except Exception:  # the records are gone; a blob left behind only takes space
                log.warning("could not delete the blob %s of removed outputs", key, exc_info=True)
        removed.extend(batch.prediction_ids)
        if len(batch.prediction_ids) < BATCH:
            break
    if removed:
        log.info("removed the data of %d predictions past their retention", len(removed))
    return removed


async def sweep(engine: Engine) -> None:
    """One housekeeping round: expired files, then data past its retention. The removed
    predictions leave the event log's memory too, so this replica reads them again."""
    try:
        await asyncio.to_thread(engine.files.purge_expired)
    except Exception:  # the retention below must run even when this fails
        log.exception("sweeping expired files failed")
    removed = await asyncio.to_thread(remove_expired_data, engine.settings, engine.db, engine.blobs)
    for prediction_id in removed:
        engine.log.forget(prediction_id)
