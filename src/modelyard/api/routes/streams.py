"""Server-sent events at `urls.stream`: a view of the prediction's event log.

No auth (the JS client sends no token here): the URL carries an unguessable key. Replays from the
first event; every event has an `id:`; only `output`, `logs`, `error`, `done`; heartbeats are
comments, because the Python client rejects any other event name.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from modelyard.engine.eventlog import LoggedEvent
from modelyard.store.tables import Prediction

from ..errors import not_found
from ..limits import parse_count
from ..platform import PlatformDep

router = APIRouter(tags=["streams"])


@router.get("/streams/{stream_key}")
async def stream(stream_key: str, request: Request, platform: PlatformDep) -> StreamingResponse:
    def find() -> str | None:
        with platform.db.session() as session:
            return session.scalar(select(Prediction.id).where(Prediction.stream_key == stream_key))

    prediction_id = await asyncio.to_thread(find)
    if prediction_id is None:
        raise not_found("The requested stream does not exist.")
    after, skip = _last_event_id(request.headers.get("last-event-id"))
    events = platform.engine.log.follow(
        prediction_id, after=after, heartbeat=platform.settings.heartbeat_interval
    )
    return StreamingResponse(
        _sse(prediction_id, events, request, skip),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _sse(
    prediction_id: str,
    events: AsyncIterator[LoggedEvent | None],
    request: Request,
    skip: int = 0,
) -> AsyncIterator[str]:
    """Frames with unique ids: `<prediction>:<seq>` for an event's last frame, and
    `<prediction>:<seq>.<n>` for the frames before it (a `done` can carry output and an error)."""
    yield ": connected\n\n"
    async for event in events:
        if event is None:
            if await request.is_disconnected():
                return
            yield ": keepalive\n\n"
            continue
        frames = _translate(event)
        for n, (name, data) in enumerate(frames):
            if n < skip:
                continue
            suffix = "" if n == len(frames) - 1 else f".{n}"
            yield _frame(f"{prediction_id}:{event.seq}{suffix}", name, data)
        skip = 0


def _translate(event: LoggedEvent) -> list[tuple[str, str]]:
    if event.type == "output":
        return [("output", _text(event.data))]
    if event.type == "logs":
        return [("logs", event.data.rstrip("\n"))]
    if event.type != "done":
        return []
    data: dict[str, Any] = event.data
    frames: list[tuple[str, str]] = []
    status = data["status"]
    if status == "succeeded" and "output" in data and not _streamed(event):
        output = data["output"]
        items = output if isinstance(output, list) else [output]
        frames.extend(("output", _text(item)) for item in items if item is not None)
    if status == "failed":
        frames.append(("error", json.dumps({"detail": data.get("error") or "failed"})))
        return [*frames, ("done", json.dumps({"reason": "error"}))]
    if status == "canceled":
        return [*frames, ("done", json.dumps({"reason": "canceled"}))]
    return [*frames, ("done", "{}")]


def _streamed(event: LoggedEvent) -> bool:
    """Iterator outputs already went out item by item as `output` events."""
    return bool(event.data.get("streamed"))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _frame(event_id: str, name: str, data: str) -> str:
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"id: {event_id}\nevent: {name}\n{lines}\n"


def _last_event_id(value: str | None) -> tuple[int, int]:
    """Where to resume: (the last event fully seen, frames of the next event already seen).

    `<prediction>:<seq>` was an event's last frame; `<prediction>:<seq>.<n>` was frame n of it.
    Anything else replays everything.
    """
    seq_text, _, frame_text = (value or "").rpartition(":")[2].partition(".")
    seq, frame = parse_count(seq_text, 12), parse_count(frame_text, 6)
    if seq is None or (frame_text and frame is None):
        return -1, 0
    return (seq - 1, frame + 1) if frame is not None else (seq, 0)
