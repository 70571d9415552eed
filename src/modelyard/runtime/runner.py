"""The parent-side handle of one worker process: start, predict, cancel, health, stop.

A prediction is an async stream of events. Predictions wait for a free slot (never refused).
If the worker dies, the predictions in flight end `failed` with what happened, and the next
prediction starts a fresh worker.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from modelyard_worker import protocol
from modelyard_worker.protocol import Mode

from . import limits as limiting
from . import sandbox
from .connection import Connection
from .events import Done, Event, Log, Metric, Output, Started
from .runnerspec import LIVE, Health, RunnerSpec, RunnerState, SetupFailed, SetupReply, SetupResult
from .waiting import CANCEL_GRACE, Backoff, Deadline, Kill, acquire_unless
from .workerproc import decode_files, describe_exit, sandbox_prefix, worker_environment

__all__ = [
    "Health",
    "Mode",
    "Runner",
    "RunnerSpec",
    "RunnerState",
    "SetupFailed",
    "SetupResult",
    "describe_exit",
]

HEALTHCHECK_TIMEOUT = 5.0
STDERR_TAIL_LINES = 30


class Runner:
    """Owns one worker process at a time; replaces it when it dies."""

    def __init__(self, spec: RunnerSpec, on_setup_log: Callable[[str], None] | None = None) -> None:
        self.spec = spec
        self.on_setup_log = on_setup_log
        self.state: RunnerState = RunnerState.STOPPED
        self.setup_result: SetupResult | None = None
        self.slots = 1
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.Transport | None = None
        self._control: socket.socket | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._inflight: dict[str, asyncio.Queue[Event]] = {}
        self._last_active = time.monotonic()  # when a prediction last started or ended
        self._ready: asyncio.Future[SetupReply] | None = None
        self._health_waiters: dict[int, asyncio.Future[protocol.HealthReply]] = {}
        self._health_ids = itertools.count()
        self._ids = itertools.count()
        self._setup_logs: list[str] = []
        self._semaphore: asyncio.Semaphore | None = None
        self._stopping = False
        self._waiting: dict[str, asyncio.Event] = {}
        # Why we killed the worker, and for which prediction (None: for all of them).
        self._kill_reason: Kill | None = None
        # Canceled predictions: the kill that ends each if it has not ended within CANCEL_GRACE.
        self._overdue: dict[str, asyncio.TimerHandle] = {}
        self.setup_backoff = Backoff()  # a failed setup is not rerun for each prediction
        self._generation = 0  # counts workers, so a prediction can tell its worker was replaced
        self._start_task: asyncio.Task[SetupResult] | None = None
        self._draining: set[asyncio.Task[None]] = set()
        self._guard: asyncio.Task[None] | None = None  # limits and leftovers (runtime/limits.py)
        # The boot's phases, in seconds ("import_time", "setup_time"), and the modules loading
        # and setup() imported: what a template of this version preloads (runtime/templates.py).
        self.phases: dict[str, float] = {}
        self.modules: list[str] = []
        # What the worker's load and setup() (for a template: its imports) changed of its
        # variables and import path: a template is used only where they agree (templates.py).
        self.environ: dict[str, str | None] = {}
        self.from_template = False  # this worker was a template: its imports were done ahead
        self._warm: asyncio.Future[protocol.WarmMessage] | None = None
        self._warmed = False  # a template's worker waits for `setup`

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> SetupResult:
        """Start the worker and run `setup()`; raises SetupFailed with the reason.

        Callers share one start; one that is canceled while waiting does not abort it.
        """
        if self.state in LIVE and self.setup_result is not None:
            return self.setup_result
        backoff = self.setup_backoff
        if self.state == RunnerState.SETUP_FAILED and backoff.remaining() > 0 and backoff.error:
            raise SetupFailed(backoff.error)  # what is waiting fails with it; no rerun yet
        # One start at a time: a new task only when the last one has ended.
        if self._start_task is None or self._start_task.done():
            self._start_task = asyncio.ensure_future(self._start())
            self._start_task.add_done_callback(_retrieve)
        return await asyncio.shield(self._start_task)

    def quiet_for(self) -> float:
        """Seconds since a prediction last ran here (0 while one runs)."""
        return 0.0 if self._inflight else time.monotonic() - self._last_active

    async def prewarm(self, preload: list[str], timeout: float | None) -> bool:
        """Start the worker as a template: it imports `preload` and the predictor's module, then
        waits; `start` runs its setup(). False (the worker gone) when it failed or timed out."""
        self._warm = asyncio.get_running_loop().create_future()
        error = await self._spawn({"warm": True, "preload": preload})
        if error is None:
            assert self._ready is not None
            waiting: set[asyncio.Future[Any]] = {self._warm, self._ready}
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if self._warm.done() and not self._ready.done() and not self._stopping:
                self._warmed = True
                self.phases = {"import_time": self._warm.result()["import_time"]}
                self.environ = self._warm.result().get("environ", {})
                return True
            await self._kill("the template was not used")
            await self._reap()
        self.state = RunnerState.STOPPED
        return False

    async def _start(self) -> SetupResult:
        started_at = time.time()
        if self._warmed and self._process is not None and self._process.returncode is None:
            self._warmed, self.from_template = False, True
            self.state = RunnerState.STARTING
            try:
                self._send_control({"t": "setup"})
            except (ConnectionError, RuntimeError) as exc:
                return self._setup_failed(started_at, f"the template did not take setup: {exc}")
        else:
            self._warmed = self.from_template = False
            error = await self._spawn({})
            if error is not None:
                return self._setup_failed(started_at, error)
        return await self._until_ready(started_at)

    async def _spawn(self, extra: dict[str, Any]) -> str | None:
        """Start a worker process (`extra`: more of its config); the error when it could not."""
        await self._reap()
        self._stopping = False
        self._kill_reason = None
        self._generation += 1
        self.state = RunnerState.STARTING
        self._setup_logs = []
        self._stderr_tail.clear()
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        control_sock, child_control = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        child_fds = (child_sock.fileno(), child_control.fileno())
        config: protocol.WorkerConfig = {
            "ref": self.spec.ref,
            "mode": self.spec.mode,
            "weights": self.spec.weights,
            "max_concurrency": self.spec.max_concurrency,
        }
        if extra.get("warm"):
            config["warm"] = True
            config["preload"] = list(extra.get("preload", []))
        env = worker_environment(self.spec)
        env[protocol.WORKER_FD_ENV] = ",".join(map(str, child_fds))
        env[protocol.WORKER_CONFIG_ENV] = json.dumps(config)
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        try:
            argv = [str(self.spec.python), "-u", "-m", "modelyard_worker"]
            if self.spec.sandbox is not None:
                await asyncio.to_thread(self.spec.sandbox.prepare)  # a fresh scratch
                argv = sandbox_prefix(self.spec, env) + argv
            self._process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=self.spec.package_dir,
                env=env,
                pass_fds=child_fds,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                preexec_fn=limiting.child_setup(self.spec.limits),
            )
        except (OSError, sandbox.SandboxError) as exc:
            parent_sock.close()
            control_sock.close()
            return f"cannot start the worker: {exc}"
        finally:
            child_sock.close()
            child_control.close()
        # Limits, and what the worker leaves behind: ends by itself when the worker does.
        self._guard = asyncio.create_task(
            limiting.guard(
                self._process,
                self.spec.limits,
                self.spec.sandbox.scratch if self.spec.sandbox is not None else None,
                self._signal_kill,
            )
        )
        self._control = control_sock
        connection_lost = loop.create_future()
        self._writer, _ = await loop.create_unix_connection(
            lambda: Connection(self._handle, connection_lost, self._protocol_error),
            sock=parent_sock,
        )
        self._reader_task = asyncio.create_task(self._watch(connection_lost, self._process))
        self._stderr_task = asyncio.create_task(self._read_stderr(self._process))
        return None

    async def _until_ready(self, started_at: float) -> SetupResult:
        """Wait for the worker's answer to setup()."""
        assert self._ready is not None
        try:
            ready = await asyncio.wait_for(asyncio.shield(self._ready), self.spec.setup_timeout)
        except TimeoutError:
            await self._kill("setup timed out")
            return self._setup_failed(
                started_at, f"setup timed out after {self.spec.setup_timeout:g} seconds"
            )
        if self._stopping:
            await self._reap()
            self.state = RunnerState.STOPPED
            raise SetupFailed("the runner was stopped during setup")
        if ready["t"] == "setup_failed":
            await self._reap()
            return self._setup_failed(started_at, ready["error"])
        self.slots = ready["slots"]
        self.modules = ready.get("modules", [])
        self.environ = ready.get("environ", {})
        # Import: all until setup() began (the sandbox, the interpreter, `cog`, the modules);
        # for a template, only what is left of it now (its imports were done ahead).
        setup_time = ready.get("setup_time", 0.0)
        import_time = max(0.0, time.time() - started_at - setup_time)
        self.phases = {"import_time": import_time, "setup_time": setup_time}
        self._semaphore = asyncio.Semaphore(self.slots)
        self.state = RunnerState.READY
        self._last_active = time.monotonic()  # quiet from now: the boot's prediction comes next
        self.setup_backoff.succeeded()
        self.setup_result = SetupResult(
            "succeeded", "".join(self._setup_logs), None, started_at, time.time()
        )
        return self.setup_result

    def _setup_failed(self, started_at: float, error: str) -> SetupResult:
        self.state = RunnerState.SETUP_FAILED
        self.setup_backoff.failed(error)
        self.setup_result = SetupResult(
            "failed", "".join(self._setup_logs), error, started_at, time.time()
        )
        raise SetupFailed(error)

    async def stop(self) -> None:
        """Ask the worker to exit, and kill it if it does not within a few seconds.

        Predictions waiting for a slot end `canceled`; running ones finish first (up to 5 s).
        """
        self._stopping = True
        for waiting in self._waiting.values():
            waiting.set()
        if self.state == RunnerState.STARTING:
            await self._kill("the runner was stopped during setup")  # no messages read until then
        if self._process is not None and self._process.returncode is None:
            try:
                self._send_control({"t": "shutdown"})
                await asyncio.wait_for(self._process.wait(), 5)
            except (TimeoutError, ConnectionError, RuntimeError):
                await self._kill("The runner was stopped while the prediction ran")
        for task in list(self._draining):
            await task
        await self._reap()
        self.state = RunnerState.STOPPED

    async def _kill(
        self, reason: str, prediction_id: str | None = None, kill: Kill | None = None
    ) -> None:
        """Kill the worker; `reason` becomes the error of `prediction_id` (or of all in flight)."""
        if self._signal_kill(reason, prediction_id, kill) and self._process is not None:
            await self._process.wait()

    def _signal_kill(
        self, reason: str, prediction_id: str | None = None, kill: Kill | None = None
    ) -> bool:
        """`_kill` without waiting for the process to end (`_watch` reports its end); False
        when there is no live worker. `kill`, when given, says how each prediction ends."""
        if self._process is None or self._process.returncode is not None:
            return False
        self._kill_reason = kill or Kill(reason, prediction_id)
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return True

    async def _reap(self) -> None:
        """Forget a finished worker: wait for its reader tasks and close the socket."""
        if self._process is not None and self._process.returncode is None:
            await self._kill("The worker was replaced")
        for task in (self._reader_task, self._stderr_task):
            if task is not None:
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        if self._writer is not None:
            self._writer.close()
        if self._control is not None:
            self._control.close()
        self._process = self._writer = self._control = None
        self._reader_task = self._stderr_task = None

    # --- receiving ----------------------------------------------------------------------

    async def _watch(
        self, connection_lost: asyncio.Future[None], process: asyncio.subprocess.Process
    ) -> None:
        """Wait for the worker to exit, then for the rest of what it sent, and report it.

        The process is what is awaited: a child the model forked may hold the socket open.
        """
        await process.wait()
        try:
            await asyncio.wait_for(asyncio.shield(connection_lost), 1)
        except TimeoutError:
            if self._writer is not None:
                self._writer.abort()
        if self._stderr_task is not None:
            await asyncio.wait([self._stderr_task], timeout=1)
        self._worker_gone(process.returncode)

    def _queue(self, prediction_id: str | None) -> asyncio.Queue[Event] | None:
        return None if prediction_id is None else self._inflight.get(prediction_id)

    def _handle(self, message: protocol.WorkerMessage) -> None:
        if message["t"] == "log":
            queue = self._queue(message["id"])
            if queue is not None:
                queue.put_nowait(Log(message["text"], message["source"]))
            else:  # setup output, or the worker's own output between predictions
                if self.state == RunnerState.STARTING:
                    self._setup_logs.append(message["text"])
                if self.on_setup_log is not None:
                    self.on_setup_log(message["text"])
        elif message["t"] == "output":
            queue = self._queue(message["id"])
            if queue is not None:
                queue.put_nowait(Output(message["index"], decode_files(message["value"])))
        elif message["t"] == "metric":
            queue = self._queue(message["id"])
            if queue is not None:
                queue.put_nowait(Metric(message["name"], message["value"], message["mode"]))
        elif message["t"] == "done":
            queue = self._queue(message["id"])
            if queue is not None:
                queue.put_nowait(
                    Done(
                        message["status"],
                        decode_files(message["output"]),
                        message.get("error"),
                        message["metrics"],
                        message["predict_time"],
                        message.get("is_stream", False),
                    )
                )
        elif message["t"] == "warm":
            if self._warm is not None and not self._warm.done():
                self._warm.set_result(message)
        elif message["t"] == "ready" or message["t"] == "setup_failed":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(message)
        elif message["t"] == "health":
            waiter = self._health_waiters.pop(message["id"], None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message)

    def _protocol_error(self, error: protocol.ProtocolError) -> None:
        """The worker sent a frame that cannot be accepted (too big, not JSON): the stream is out
        of step, so the worker is replaced and what it was running fails with the reason."""
        reason = str(error)
        self._signal_kill(reason[0].upper() + reason[1:])

    async def _read_stderr(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        async for line in process.stderr:
            self._stderr_tail.append(line.decode("utf-8", errors="replace"))

    def _worker_gone(self, returncode: int | None) -> None:
        """The worker process ended: fail what it was doing and say why."""
        reason = describe_exit(returncode, self.spec.sandbox is not None)
        kill, self._kill_reason = self._kill_reason, None
        tail = "".join(self._stderr_tail).strip()
        if self._ready is not None and not self._ready.done():
            error = kill.reason if kill else f"the worker exited during setup: {reason}"
            if tail:
                error += f"\n{tail}"
            self._ready.set_result({"t": "setup_failed", "error": error})
        if self.state in LIVE:
            self.state = RunnerState.DEFUNCT
        for prediction_id, queue in self._inflight.items():
            if tail:
                queue.put_nowait(Log(tail + "\n", "stderr"))
            if kill is None:
                queue.put_nowait(Done("failed", error=f"The worker process died: {reason}"))
            else:
                for event in kill.ending(prediction_id):
                    queue.put_nowait(event)
        for request_id, waiter in self._health_waiters.items():
            if not waiter.done():
                waiter.set_result({"t": "health", "id": request_id, "ok": False, "error": reason})

    # --- predicting ---------------------------------------------------------------------

    def _send(self, frame: bytes) -> None:
        """A frame made by `protocol.encode` (for a `PredictMessage`), on the data socket."""
        if self._writer is None:
            raise RuntimeError("the worker is not running")
        self._writer.write(frame)

    def _send_control(self, message: protocol.ControlMessage) -> None:
        """Cancel, health and shutdown: small frames on a socket the worker always reads.

        Never blocks: a worker that stops reading them (stuck with the GIL held) would block the
        event loop. ConnectionError when the frame did not all go (the worker is then killed:
        its control stream is out of step)."""
        if self._control is None:
            raise RuntimeError("the worker is not running")
        self._control.setblocking(False)
        try:
            self._control.sendall(protocol.encode(message))
        except BlockingIOError:
            self._signal_kill("The worker stopped reading its control messages")
            raise ConnectionError("the worker stopped reading its control messages") from None

    async def predict(
        self,
        inputs: dict[str, Any],
        *,
        prediction_id: str | None = None,
        context: dict[str, str] | None = None,
        timeout: float | None = None,
        collect: bool = True,
    ) -> AsyncIterator[Event]:
        """Run one prediction; yields Started, then Log/Output/Metric events, then Done.

        With `collect`, a stream's Done carries every item as its output; a caller that keeps
        the items itself (the engine's event log) passes False, so they are not kept twice."""
        prediction_id = prediction_id or f"local-{next(self._ids)}"
        if prediction_id in self._inflight or prediction_id in self._waiting:
            yield Done("failed", error=f"a prediction with id {prediction_id} is already running")
            return
        message: protocol.PredictMessage = {
            "t": "predict",
            "id": prediction_id,
            "input": inputs,
            "context": context or {},
        }
        try:  # before anything waits: a message the worker would refuse ends only this prediction
            frame = protocol.encode(message)
        except protocol.FrameTooLarge as exc:
            yield Done("failed", error=f"The input is too large to send to the worker: {exc}")
            return
        except (TypeError, ValueError) as exc:
            yield Done("failed", error=f"The input cannot be sent to the worker: {exc}")
            return
        canceled = asyncio.Event()
        self._waiting[prediction_id] = canceled
        try:
            semaphore = await self._take_slot(canceled)
        except SetupFailed as exc:
            yield Done("failed", error=f"setup failed: {exc}")
            return
        finally:
            self._waiting.pop(prediction_id, None)
        if semaphore is None:
            yield Done("canceled")
            return
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._inflight[prediction_id] = queue
        self._last_active = time.monotonic()
        finished = False
        try:
            self._send(frame)
            del frame
            self.state = (
                RunnerState.BUSY if len(self._inflight) >= self.slots else RunnerState.READY
            )
            yield Started(time.time())
            watch = Deadline(self, prediction_id, timeout)
            items: list[Any] = []
            while True:
                event = await (queue.get() if watch.deadline is None else watch.next(queue))
                if isinstance(event, Output) and collect:
                    items.append(event.value)
                elif isinstance(event, Done):
                    finished = True
                    yield watch.final(event, items)
                    return
                yield event
        finally:
            if finished:
                self._release(prediction_id, semaphore)
            else:  # the caller stopped listening: cancel, and free the slot when the worker is done
                await self.cancel(prediction_id)
                task = asyncio.ensure_future(self._drain(prediction_id, queue, semaphore))
                self._draining.add(task)
                task.add_done_callback(self._draining.discard)

    async def _take_slot(self, canceled: asyncio.Event) -> asyncio.Semaphore | None:
        """A slot on a live worker (started if needed), or None when canceled first."""
        while True:
            await self._ensure_ready()
            semaphore, generation = self._semaphore, self._generation
            assert semaphore is not None
            if canceled.is_set() or not await acquire_unless(semaphore, canceled):
                return None
            alive = self._writer is not None and not self._writer.is_closing()
            if generation == self._generation and self.state in LIVE and alive:
                return semaphore
            semaphore.release()  # the worker died while we waited: take a slot on a fresh one

    def _release(self, prediction_id: str, semaphore: asyncio.Semaphore) -> None:
        self._inflight.pop(prediction_id, None)
        self._last_active = time.monotonic()
        overdue = self._overdue.pop(prediction_id, None)
        if overdue is not None:
            overdue.cancel()
        if self.state == RunnerState.BUSY:
            self.state = RunnerState.READY
        semaphore.release()

    async def _drain(
        self, prediction_id: str, queue: asyncio.Queue[Event], semaphore: asyncio.Semaphore
    ) -> None:
        while not isinstance(await queue.get(), Done):
            pass
        self._release(prediction_id, semaphore)

    async def _ensure_ready(self) -> None:
        if self.state in LIVE:
            return
        await self.start()

    async def cancel(self, prediction_id: str) -> bool:
        """Stop a prediction, running or waiting for a slot; False when it is not here."""
        waiting = self._waiting.get(prediction_id)
        if waiting is not None:
            waiting.set()
            return True
        if prediction_id not in self._inflight:
            return False
        self.interrupt(prediction_id, Kill.canceled(prediction_id))
        return True

    def interrupt(self, prediction_id: str, kill: Kill) -> None:
        """Ask the worker to cancel a running prediction, and kill the worker (`kill` says how
        the prediction ends) if it has not ended within CANCEL_GRACE seconds: a cancel cannot
        reach code blocked in C, in a sleep, or that swallows it."""
        if prediction_id not in self._overdue:
            self._overdue[prediction_id] = asyncio.get_running_loop().call_later(
                CANCEL_GRACE, self._overdue_kill, prediction_id, self._generation, kill
            )
        try:
            self._send_control({"t": "cancel", "id": prediction_id})
        except (OSError, RuntimeError):  # no worker to ask: it ends with the worker's death
            self._overdue_kill(prediction_id, self._generation, kill)

    def _overdue_kill(self, prediction_id: str, generation: int, kill: Kill) -> None:
        self._overdue.pop(prediction_id, None)
        if generation == self._generation and prediction_id in self._inflight:
            self._signal_kill(kill.reason, prediction_id, kill)

    async def health(self) -> Health:
        """Cog's health status, running the user's `healthcheck()` when the worker is idle or busy."""
        if self.state not in LIVE:
            error = (
                self.setup_result.error
                if self.setup_result and self.state == RunnerState.SETUP_FAILED
                else None
            )
            return Health(self.state, error)
        request_id = next(self._health_ids)
        waiter: asyncio.Future[protocol.HealthReply] = asyncio.get_running_loop().create_future()
        self._health_waiters[request_id] = waiter
        try:
            self._send_control({"t": "health", "id": request_id})
        except (OSError, RuntimeError) as exc:
            self._health_waiters.pop(request_id, None)
            return Health(RunnerState.UNHEALTHY, f"the worker cannot be asked: {exc}")
        try:
            reply = await asyncio.wait_for(waiter, HEALTHCHECK_TIMEOUT)
        except TimeoutError:
            self._health_waiters.pop(request_id, None)
            return Health(
                RunnerState.UNHEALTHY,
                f"user-defined healthcheck timed out after {HEALTHCHECK_TIMEOUT} seconds",
            )
        if not reply["ok"]:
            state = RunnerState.UNHEALTHY if self.state in LIVE else self.state
            return Health(state, reply["error"])
        return Health(self.state)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a background task's exception as seen (its awaiters, if any, get it too)."""
    if not task.cancelled():
        task.exception()
