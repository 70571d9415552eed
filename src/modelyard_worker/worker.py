"""The worker process: set the predictor up once, then run the predictions the runner sends.

Sync predictors run on the main thread, one at a time, so that cancelation can raise
`CancelationException` inside them; the main thread reads the next prediction off the data socket
itself (no thread hop on the hot path). Async predictors run as tasks on an event loop in the main
thread, as many at once as the runner allows, fed by a reader thread. Cancel, health and shutdown
come on a separate control socket, read by a thread of their own, so they reach a busy worker.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import faulthandler
import inspect
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, TextIO, TypedDict, cast

from . import boot, capture, predictor, protocol, scope

#: The longest text one log message carries: a longer line goes as several messages, so that no
#: frame is over protocol.MAX_FRAME (JSON escapes a character as at most 6 bytes).
LOG_CHUNK = protocol.MAX_FRAME // 8


@dataclass
class WorkerConfig:
    """What the runner tells the worker at start (as JSON in an environment variable)."""

    ref: str
    mode: protocol.Mode = "predict"
    weights: str | None = None
    max_concurrency: int | None = None
    preload: list[str] = field(default_factory=list)  # modules to import first (boot.py)
    warm: bool = False  # a template: wait for `setup` after the imports (boot.py)

    @property
    def method_names(self) -> tuple[str, ...]:
        return ("train",) if self.mode == "train" else ("run", "predict")


class _OutcomeRequired(TypedDict):
    status: protocol.Status
    output: Any


class Outcome(_OutcomeRequired, total=False):
    """How a prediction ended: the part of its `DoneMessage` that depends on the outcome."""

    error: str
    is_stream: bool


class CancelationFallback(BaseException):
    """Raised in a canceled sync prediction when the cog SDK has no CancelationException."""


def _cancel_exception() -> type[BaseException]:
    try:
        from cog import CancelationException

        return CancelationException
    except ImportError:
        return CancelationFallback


def _install_scope() -> None:
    """Point the cog SDK's `current_scope()` (and the old `emit_metric`) at our scopes."""
    try:
        import coglet

        coglet._sdk.current_scope = scope.current_scope
    except (ImportError, AttributeError):
        pass
    try:
        import cog

        if hasattr(cog, "current_scope"):
            cog.current_scope = scope.current_scope
        cog.emit_metric = lambda name, value: scope.current_scope().record_metric(name, value)
    except ImportError:
        pass


@dataclass
class Running:
    """One prediction in flight inside the worker."""

    id: str
    message: protocol.PredictMessage
    thread_id: int | None = None
    task: asyncio.Task[Any] | None = None
    canceled: bool = False
    _output_dir: str | None = None

    def output_dir(self) -> str:
        """Where file-object outputs are saved; made only when a prediction returns one."""
        if self._output_dir is None:
            self._output_dir = tempfile.mkdtemp(prefix="modelyard-out-")
        return self._output_dir


class Worker:
    """The child side of one runner."""

    def __init__(self, sock: socket.socket, control: socket.socket, config: WorkerConfig) -> None:
        self.sock = sock
        self.incoming = sock.makefile("rb")
        self.control = control
        self.control_in = control.makefile("rb")  # one buffer: a template reads it first
        self.config = config
        self.send_lock = threading.Lock()
        self.running: dict[str, Running] = {}
        self.running_lock = threading.Lock()
        self.early_cancels: collections.deque[str] = collections.deque(maxlen=1000)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.cancel_exception = _cancel_exception()
        self.predictor: predictor.LoadedPredictor | None = None
        self.log_capture: capture.FdCapture | None = None  # fds 1 and 2, once main() set it up
        self.crash_log: TextIO | None = sys.__stderr__  # for what the runner cannot be sent
        self._stopping = False
        self._stopped: asyncio.Event | None = None

    # --- sending ------------------------------------------------------------------------

    def send(self, message: protocol.WorkerMessage) -> None:
        frame = protocol.encode(message)
        with self.send_lock:
            self.sock.sendall(frame)

    def send_log(self, prediction_id: str | None, source: protocol.LogSource, text: str) -> None:
        for start in range(0, len(text), LOG_CHUNK):  # a huge line: in pieces that fit a frame
            chunk = text[start : start + LOG_CHUNK]
            try:
                self.send({"t": "log", "id": prediction_id, "source": source, "text": chunk})
            except UnicodeEncodeError:  # lone surrogates: shown as U+FFFD rather than lost
                chunk = _encodable(chunk)
                self.send({"t": "log", "id": prediction_id, "source": source, "text": chunk})

    def drain_captured(self) -> None:
        """Forward what reached fds 1 and 2 so far (C extensions, subprocesses)."""
        if self.log_capture is not None:
            self.log_capture.drain()

    def sole_prediction(self) -> str | None:
        with self.running_lock:
            return next(iter(self.running)) if len(self.running) == 1 else None

    # --- lifecycle ----------------------------------------------------------------------

    def setup(self) -> bool:
        started = time.perf_counter()
        before, state = set(sys.modules), boot.snapshot()
        try:
            boot.preload(self.config.preload)
            self.predictor = predictor.load(self.config.ref, self.config.method_names)
            import_time = time.perf_counter() - started
            if self.config.warm:  # a template: setup() runs for the instance that takes it
                sys.stdout.flush()
                sys.stderr.flush()
                self.drain_captured()
                warm: protocol.WarmMessage = {
                    "t": "warm",
                    "import_time": import_time,
                    "environ": boot.changes(state),
                }
                self.send(warm)
                if not boot.wait_for_setup(self.control_in):
                    os._exit(0)  # given back unused
            setup_started = time.perf_counter()
            slots = self._slots(self.predictor)
            # COG_WEIGHTS may also come from cog.yaml's environment, as in Cog.
            weights = self.config.weights or os.environ.get("COG_WEIGHTS") or None
            result = predictor.call_setup(self.predictor, weights)
            if inspect.isawaitable(result):
                self.loop = asyncio.new_event_loop()
                self.loop.run_until_complete(result)
        except BaseException as exc:  # noqa: BLE001 - every setup failure is reported, not raised
            traceback.print_exc()
            sys.stderr.flush()
            self.drain_captured()
            self.send({"t": "setup_failed", "error": _describe(exc)})
            return False
        sys.stdout.flush()
        sys.stderr.flush()
        self.drain_captured()
        self.send(
            {
                "t": "ready",
                "slots": slots,
                "is_async": self.predictor.is_async,
                "import_time": import_time,
                "setup_time": time.perf_counter() - setup_started,
                "modules": boot.imported_since(before, os.getcwd()),
                "environ": boot.changes(state),
            }
        )
        return True

    def _slots(self, loaded: predictor.LoadedPredictor) -> int:
        # Cog's order: the environment variable, then cog.yaml's concurrency.max, then
        # @cog.concurrent(max=N) on the predictor.
        from_env = os.environ.get("COG_MAX_CONCURRENCY", "").strip()
        slots = int(from_env) if from_env.isdigit() else None
        slots = slots or self.config.max_concurrency or loaded.concurrent_max or 1
        if slots > 1 and not loaded.is_async:
            raise ValueError("COG_MAX_CONCURRENCY > 1 requires an async run()")
        return slots

    def serve(self) -> None:
        assert self.predictor is not None
        if self.predictor.is_async:  # before the control thread starts: its shutdown uses them
            self.loop = self.loop or asyncio.new_event_loop()
            self._stopped = asyncio.Event()
        threading.Thread(target=self._control_loop, name="modelyard-control", daemon=True).start()
        if self.loop is not None and self._stopped is not None:
            threading.Thread(target=self._data_loop, name="modelyard-reader", daemon=True).start()
            self.loop.run_until_complete(self._stopped.wait())
        else:
            self._serve_sync()

    def _control_loop(self) -> None:
        control = self.control_in
        try:
            while True:
                message = cast(protocol.ControlMessage, self._read(control))
                if message["t"] == "cancel":
                    self._cancel(message["id"])
                elif message["t"] == "health":
                    threading.Thread(target=self._healthcheck, args=(message["id"],)).start()
                elif message["t"] == "shutdown":
                    break
        except (EOFError, OSError):
            os._exit(0)  # the runner is gone: nobody will read what this process does
        self._shutdown()

    def _read(self, stream: Any) -> dict[str, Any]:
        """The next message from the runner. A frame that cannot be accepted leaves the stream
        out of step, so the worker exits: the runner fails what was in flight and starts anew."""
        try:
            return protocol.read_message(stream, "the runner")
        except protocol.ProtocolError as exc:
            if self.crash_log is not None:
                print(f"modelyard worker: {exc}", file=self.crash_log, flush=True)
            os._exit(protocol.EXIT_PROTOCOL_ERROR)

    def _shutdown(self) -> None:
        """Stop taking predictions: wake whoever waits on the data socket; async predictions
        already running finish first."""
        if self.loop is not None and self.predictor is not None and self.predictor.is_async:
            self.loop.call_soon_threadsafe(self._stop_when_idle)
        else:
            try:
                self.sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def _stop_when_idle(self) -> None:
        self._stopping = True
        with self.running_lock:
            idle = not self.running
        if idle and self._stopped is not None:
            self._stopped.set()

    def _data_loop(self) -> None:
        """Async predictors: hand each prediction to the event loop."""
        assert self.loop is not None
        try:
            while True:
                message = cast(protocol.PredictMessage, self._read(self.incoming))
                self.loop.call_soon_threadsafe(self._dispatch_async, message)
        except (EOFError, OSError):
            self._shutdown()

    # --- sync predictions ---------------------------------------------------------------

    def _serve_sync(self) -> None:
        while True:
            try:
                message = cast(protocol.PredictMessage, self._read(self.incoming))
            except (EOFError, OSError):
                return
            self._run_sync(message)

    def _register(self, run: Running) -> bool:
        """Record a prediction as running; when a cancel for it already arrived, report it
        canceled instead and return False."""
        with self.running_lock:
            self.running[run.id] = run
            canceled = run.id in self.early_cancels
            if canceled:
                self.early_cancels.remove(run.id)
                run.canceled = True
            elif run.thread_id is None and self.loop is not None:
                run.task = self.loop.create_task(self._run_async(run))
        if canceled:
            outcome: Outcome = {"status": "canceled", "output": None}
            self._done(run, outcome, self._scope(run), time.perf_counter())
        return not canceled

    def _run_sync(self, message: protocol.PredictMessage) -> None:
        run = Running(message["id"], message, thread_id=threading.get_ident())
        if not self._register(run):
            return
        started = time.perf_counter()
        token = capture.current_prediction.set(run.id)
        metric_scope = self._scope(run)
        scope_token = scope.enter(metric_scope)
        outcome: Outcome
        try:
            assert self.predictor is not None
            inputs = predictor.convert_inputs(self.predictor, message["input"])
            result = self.predictor.fn(**inputs)
            outcome = self._finish_sync(run, result)
            self._stop_cancelation(run)
        except BaseException as exc:  # noqa: BLE001 - user code may raise anything
            self._stop_cancelation(run)
            outcome = self._failure(run, exc)
        finally:
            scope.leave(scope_token)
        self._done(run, outcome, metric_scope, started)
        capture.current_prediction.reset(token)

    def _finish_sync(self, run: Running, result: Any) -> Outcome:
        if inspect.isgenerator(result) or _is_plain_iterator(result):
            for index, item in enumerate(result):
                self._send_output(run, index, item)
            return {"status": "succeeded", "output": None, "is_stream": True}
        return {"status": "succeeded", "output": predictor.encode_output(result, run.output_dir)}

    def _cancel(self, prediction_id: str) -> None:
        with self.running_lock:
            run = self.running.get(prediction_id)
            if run is None:
                # The cancel overtook its prediction (they travel on different sockets).
                self.early_cancels.append(prediction_id)
                return
            if run.canceled:
                return
            run.canceled = True
            if run.task is not None and self.loop is not None:
                self.loop.call_soon_threadsafe(run.task.cancel)
            elif run.thread_id is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(run.thread_id), ctypes.py_object(self.cancel_exception)
                )

    def _stop_cancelation(self, run: Running) -> None:
        """Withdraw the right to cancel this prediction: a cancel that was sent but has not
        fired yet fires here, harmlessly, instead of inside the worker's own code.

        (Clearing it with `PyThreadState_SetAsyncExc(tid, NULL)` instead would leave CPython
        3.11's eval breaker set, and a profiler installed later makes the interpreter spin.)
        """
        with self.running_lock:
            sent = run.canceled and run.thread_id is not None
            run.thread_id = None
        if sent:
            try:
                _let_pending_exceptions_fire()
            except self.cancel_exception:
                pass

    # --- async predictions --------------------------------------------------------------

    def _dispatch_async(self, message: protocol.PredictMessage) -> None:
        self._register(Running(message["id"], message))

    async def _run_async(self, run: Running) -> None:
        message = run.message
        started = time.perf_counter()
        capture.current_prediction.set(run.id)
        metric_scope = self._scope(run)
        scope.enter(metric_scope)
        outcome: Outcome = {"status": "failed", "output": None, "error": "internal error"}
        try:
            assert self.predictor is not None
            inputs = predictor.convert_inputs(self.predictor, message["input"])
            result = self.predictor.fn(**inputs)
            if inspect.isasyncgen(result):
                index = 0
                async for item in result:
                    self._send_output(run, index, item)
                    index += 1
                outcome = {"status": "succeeded", "output": None, "is_stream": True}
            else:
                if inspect.isawaitable(result):
                    result = await result
                outcome = self._finish_sync(run, result)
        except BaseException as exc:  # noqa: BLE001 - CancelledError included
            outcome = self._failure(run, exc)
        finally:  # a done message always goes out, or the runner's slot would never free
            self._done(run, outcome, metric_scope, started)
            if self._stopping:
                self._stop_when_idle()

    # --- shared -------------------------------------------------------------------------

    def _scope(self, run: Running) -> scope.Scope:
        def sink(name: str, value: Any, mode: protocol.MetricMode) -> None:
            self.send({"t": "metric", "id": run.id, "name": name, "value": value, "mode": mode})

        return scope.Scope(sink, run.message.get("context"))

    def _send_output(self, run: Running, index: int, item: Any) -> None:
        value = predictor.encode_output(item, run.output_dir)
        try:
            self.send({"t": "output", "id": run.id, "index": index, "value": value})
        except protocol.FrameTooLarge as exc:
            raise ValueError(
                f"output item {index} is too large to send to the runner: {exc}"
            ) from None
        except ValueError as exc:  # not valid UTF-8 (a lone surrogate), NaN
            raise ValueError(f"output item {index} cannot be encoded as JSON: {exc}") from None

    def _failure(self, run: Running, exc: BaseException) -> Outcome:
        if run.canceled and isinstance(exc, (self.cancel_exception, asyncio.CancelledError)):
            return {"status": "canceled", "output": None}
        # SystemExit included: Cog fails the prediction and keeps the worker.
        traceback.print_exception(exc)
        return {"status": "failed", "output": None, "error": _describe(exc)}

    def _done(
        self, run: Running, outcome: Outcome, metric_scope: scope.Scope, started: float
    ) -> None:
        predict_time = time.perf_counter() - started
        try:  # whatever happens to its logs, the end goes out: the runner's slot waits for it
            self.flush_logs(run.id)
        except Exception:  # noqa: BLE001 - reported where the runner reads crashes
            if self.crash_log is not None:
                traceback.print_exc(file=self.crash_log)
        with self.running_lock:
            self.running.pop(run.id, None)
        message: protocol.DoneMessage = {
            "t": "done",
            "id": run.id,
            "predict_time": predict_time,
            "metrics": metric_scope.metrics.nested(),
            **outcome,
        }
        try:
            frame = protocol.encode(message)
        except (TypeError, ValueError) as exc:  # values that JSON cannot carry, or too big
            if isinstance(exc, protocol.FrameTooLarge):
                error = f"the output is too large to send to the runner: {exc}"
            else:
                error = f"output cannot be encoded as JSON: {exc}"
            failed: protocol.DoneMessage = {
                "t": "done",
                "id": run.id,
                "predict_time": predict_time,
                "metrics": {},
                "status": "failed",
                "output": None,
                "error": error[:10000],
            }
            if outcome.get("is_stream"):
                failed["is_stream"] = True
            frame = protocol.encode(failed)
        try:
            with self.send_lock:
                self.sock.sendall(frame)
        except OSError:  # the runner is gone: nobody will read what this process does
            os._exit(0)

    def flush_logs(self, prediction_id: str | None) -> None:
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, capture.RoutedStream):
                stream.flush_prediction(prediction_id)
        _flush_c_stdio()
        self.drain_captured()

    def _healthcheck(self, request_id: int) -> None:
        check = getattr(self.predictor.instance, "healthcheck", None) if self.predictor else None
        ok: bool = True
        error: str | None = None
        if check is not None:
            try:
                result = check()
                if inspect.isawaitable(result):
                    result = self._await_elsewhere(result)
                if result is False:
                    ok, error = False, "user-defined healthcheck returned False"
            except Exception as exc:  # noqa: BLE001 - reported to the runner
                ok, error = False, f"user-defined healthcheck failed: {_describe(exc)}"
        self.send({"t": "health", "id": request_id, "ok": ok, "error": error})

    def _await_elsewhere(self, awaitable: Any) -> Any:
        """Run a coroutine from a helper thread: on the predictor's loop when it has one, since
        an async healthcheck may use what setup() made there."""
        if self.loop is not None and self.loop.is_running():
            return asyncio.run_coroutine_threadsafe(awaitable, self.loop).result()
        return asyncio.run(awaitable)


def _let_pending_exceptions_fire() -> None:
    for _ in range(3):  # backward jumps: where the interpreter raises asynchronous exceptions
        pass


def _is_plain_iterator(value: Any) -> bool:
    """Iterators that are not containers or files (those are outputs in their own right)."""
    return hasattr(value, "__next__") and hasattr(value, "__iter__") and not hasattr(value, "read")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"the model called sys.exit({exc.code!r})"
    text = _encodable(str(exc))
    return text if text else type(exc).__name__


_SURROGATES = re.compile("[\ud800-\udfff]")


def _encodable(text: str) -> str:
    """`text` with lone surrogates (which UTF-8 cannot carry) replaced by U+FFFD."""
    return _SURROGATES.sub("\ufffd", text)


_libc = None


def _flush_c_stdio() -> None:
    """Flush C-level stdio buffers so output from C extensions reaches the captured fds."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None)
        _libc.fflush(None)
    except (OSError, AttributeError):
        pass


def main() -> None:
    data_fd, control_fd = (int(fd) for fd in os.environ.pop(protocol.WORKER_FD_ENV).split(","))
    for fd in (data_fd, control_fd):  # a subprocess of the model must not hold them open
        os.set_inheritable(fd, False)
    config = WorkerConfig(**json.loads(os.environ.pop(protocol.WORKER_CONFIG_ENV)))
    # Keep the original stderr for crash reports: the runner reads it if this process dies.
    crash_log = os.fdopen(os.dup(2), "w")
    faulthandler.enable(file=crash_log)
    sys.path.insert(0, os.getcwd())
    worker = Worker(socket.socket(fileno=data_fd), socket.socket(fileno=control_fd), config)
    worker.crash_log = crash_log
    worker.log_capture = capture.FdCapture(worker.send_log, worker.sole_prediction)
    stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    sys.stdout = capture.RoutedStream("stdout", worker.send_log, stdout, worker.sole_prediction)
    sys.stderr = capture.RoutedStream("stderr", worker.send_log, stderr, worker.sole_prediction)
    _install_scope()
    if worker.setup():
        worker.serve()
