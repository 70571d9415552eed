"""A real two-node Ray cluster on this machine, for the cluster tests.

    with ray_cluster() as cluster:          # head on 127.0.0.2, a worker node on 127.0.0.3
        cluster.connect()                   # this process becomes a driver (token auth set up)
        ...
        cluster.kill_worker_raylet()        # the worker node dies (its raylet, by PID)
        cluster.restart_worker()            # and comes back, as a new node
    # everything it started is gone here, by PID

Each node is one `ray start --block` in a session of its own, which holds the node's processes
(GCS, raylet, agents, and the actor workers, which make process groups of their own but stay in
the session); the cluster stops by those sessions, PID by PID, and never runs `ray stop`, which
would stop every cluster on the machine. Ports are picked free for
each node (ranges for workers), temporary folders are private (short paths: Ray's Unix sockets
live there and the kernel limits their length), token authentication is on (`RAY_AUTH_MODE=token`
with a token file, for the nodes and for every client), and the dashboard is off.

The head offers CPUs only; the worker node offers CPUs, one GPU (declared: none is needed) and
`GPU_RESOURCES`, so a GPU SKU's actor can only land there. The head's health checks are fast
(`HEALTH_CHECKS`): a dead node is declared dead in about a second and a half, not fifteen.

Processes that outlive their node (a model's worker process runs in a session of its own, and
outlives a killed raylet until it notices) carry `MARKER` in their environment, inherited from
the node, so `stop()` finds them in /proc and kills them too.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEAD_IP = "127.0.0.2"
WORKER_IP = "127.0.0.3"
#: What the worker node offers besides its CPUs and its (declared) GPU: the `gpu-t4` SKU's
#: default Ray resource (billing.hardware), one instance's worth.
GPU_RESOURCES = {"sku-gpu-t4": 1.0}
#: GCS health checks of the nodes: every 500 ms, 1 s to answer, dead after 2 misses.
HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 1000,
    "health_check_failure_threshold": 2,
}
MARKER = "MODELYARD_TEST_RAY_CLUSTER"
WORKER_PORTS = 60  # per node: one per actor, task worker or driver
START_TIMEOUT = 60.0


@dataclass
class Node:
    """One `ray start --block` and what it was started with."""

    name: str
    ip: str
    args: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # its own, over the cluster's

    @property
    def sid(self) -> int:
        assert self.process is not None
        return self.process.pid  # a session of its own: its leader's PID is the session's id

    def pids(self) -> list[int]:
        """The node's processes still running (its session)."""
        if self.process is None:
            return []
        return [pid for pid in _all_pids() if _sid(pid) == self.sid]

    def pid_of(self, command: str) -> int | None:
        """The PID of the node's process named `command` (`raylet`, `gcs_server`)."""
        for pid in self.pids():
            if _comm(pid) == command:
                return pid
        return None


@dataclass
class RayCluster:
    root: Path
    token_path: Path
    cluster_id: str
    head: Node
    worker: Node
    address: str = ""
    env: dict[str, str] = field(default_factory=dict)  # for clients and nodes: auth, the marker
    _connected: bool = False

    # -- nodes ---------------------------------------------------------------------------------

    def _start(self, node: Node) -> None:
        with node.log.open("ab") as out:
            node.process = subprocess.Popen(
                ["ray", "start", "--block", *node.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env, **node.env},
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while "Ray runtime started" not in node.log.read_text(errors="replace"):
            if node.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray {node.name} did not start:\n{_tail(node.log)}")
            time.sleep(0.1)

    def start_worker(self) -> None:
        self.worker.args = _worker_args(self.root / "worker", self.address)
        self._start(self.worker)
        self.wait_for_nodes(2)

    def kill_worker_raylet(self) -> int:
        """SIGKILL the worker node's raylet (what a machine that dies looks like to Ray); its
        `ray start --block` then kills the rest of the node. Returns the raylet's PID."""
        pid = self.worker.pid_of("raylet")
        assert pid is not None, "the worker node has no raylet"
        os.kill(pid, signal.SIGKILL)
        return pid

    def restart_worker(self) -> None:
        """The worker node again, on fresh ports (what was left of it is killed first)."""
        _stop_node(self.worker)
        self.start_worker()

    def wait_for_nodes(self, count: int, timeout: float = START_TIMEOUT) -> None:
        """Until `count` nodes are alive (only once this process is connected)."""
        if not self._connected:
            return
        import ray

        deadline = time.monotonic() + timeout
        while sum(1 for node in ray.nodes() if node["Alive"]) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} Ray nodes are alive")
            time.sleep(0.2)

    def node_id(self, ip: str) -> str:
        """The id of the live node at `ip`."""
        import ray

        for node in ray.nodes():
            if node["Alive"] and node["NodeManagerAddress"] == ip:
                return str(node["NodeID"])
        raise LookupError(f"no live Ray node at {ip}")

    # -- this process as a client --------------------------------------------------------------

    def connect(self) -> None:
        """Make this process a driver of the cluster (`ray.init`), with its token."""
        import ray

        self.use_auth()
        ray.init(address=self.address, namespace="modelyard", log_to_driver=False)
        self._connected = True
        self.wait_for_nodes(1 if self.worker.process is None else 2)

    def use_auth(self) -> None:
        """This process's Ray authentication: the cluster's token. Ray reads its configuration
        when it is imported; its own tests refresh it the same way after changing the env."""
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("RAY_")})
        from ray._private.authentication_test_utils import reset_auth_token_state

        reset_auth_token_state()

    def disconnect(self) -> None:
        if self._connected:
            import ray

            ray.shutdown()
            self._connected = False

    # -- the end -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Every process this cluster started, by session, then the stragglers by PID."""
        self.disconnect()
        for node in (self.worker, self.head):
            _stop_node(node)
        for pid in _all_pids():
            if _environ(pid).get(MARKER) == self.cluster_id:
                _kill(pid)


@contextmanager
def ray_cluster(
    worker: bool = True,
    keep_logs: bool = False,
    env: dict[str, str] | None = None,
    own_homes: bool = False,
) -> Iterator[RayCluster]:
    """A head and (with `worker`) a worker node; stopped, with all they started, at the end.
    A failed start raises with the tail of the node's log. The temporary folder goes at the
    end, unless `keep_logs` (Ray's logs are under `<root>/head` and `<root>/worker`). `env` goes
    to both nodes (S3 credentials, say); with `own_homes` each node has a `MODELYARD_HOME` of
    its own, as two machines would (model environments are built on each)."""
    root = Path(tempfile.mkdtemp(prefix="myray-", dir="/tmp"))  # short: sockets live below
    token_path = root / "token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    cluster_id = secrets.token_hex(6)
    head_port = _free_ports(1)[0]
    cluster = RayCluster(
        root=root,
        token_path=token_path,
        cluster_id=cluster_id,
        head=Node("head", HEAD_IP, _head_args(root / "head", head_port), root / "head.log"),
        worker=Node("worker node", WORKER_IP, [], root / "worker.log"),
        address=f"{HEAD_IP}:{head_port}",
        env={
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token_path),
            "RAY_USAGE_STATS_ENABLED": "0",
            **(env or {}),
            MARKER: cluster_id,
        },
    )
    if own_homes:
        cluster.head.env["MODELYARD_HOME"] = str(root / "home-head")
        cluster.worker.env["MODELYARD_HOME"] = str(root / "home-worker")
    try:
        cluster._start(cluster.head)
        if worker:
            cluster.start_worker()
        yield cluster
    finally:
        cluster.stop()
        if not keep_logs:
            shutil.rmtree(root, ignore_errors=True)


def _common_args(temp_dir: Path, ip: str) -> list[str]:
    ports = _free_ports(7)
    low = _free_range(WORKER_PORTS)
    return [
        f"--node-ip-address={ip}",
        f"--node-manager-port={ports[0]}",
        f"--object-manager-port={ports[1]}",
        f"--dashboard-agent-listen-port={ports[2]}",
        f"--dashboard-agent-grpc-port={ports[3]}",
        f"--runtime-env-agent-port={ports[4]}",
        f"--metrics-export-port={ports[5]}",
        f"--min-worker-port={low}",
        f"--max-worker-port={low + WORKER_PORTS - 1}",
        f"--temp-dir={temp_dir}",
        "--object-store-memory=100000000",  # 100 MB: events are small, and the machine too
        "--disable-usage-stats",
    ]


def _head_args(temp_dir: Path, port: int) -> list[str]:
    client_port, dashboard_port = _free_ports(2)
    return [
        "--head",
        f"--port={port}",
        *_client_server_args(client_port),
        f"--dashboard-port={dashboard_port}",
        "--include-dashboard=false",
        "--num-cpus=2",
        "--num-gpus=0",
        f"--system-config={json.dumps(HEALTH_CHECKS)}",
        *_common_args(temp_dir, HEAD_IP),
    ]


def _client_server_args(port: int) -> list[str]:
    """A free port for Ray Client's server where `ray[client]` is installed (then the head
    starts one, on 10001 unless told: two clusters side by side would collide); minimal Ray
    (`ray`, what `modelyard[ray]` installs) starts none and refuses the option."""
    from ray._private.utils import get_ray_client_dependency_error

    if get_ray_client_dependency_error() is not None:
        return []
    return [f"--ray-client-server-port={port}"]


def _worker_args(temp_dir: Path, address: str) -> list[str]:
    return [
        f"--address={address}",
        "--num-cpus=2",
        "--num-gpus=1",  # declared: Ray hands it out (CUDA_VISIBLE_DEVICES) without a real one
        f"--resources={json.dumps(GPU_RESOURCES)}",
        *_common_args(temp_dir, WORKER_IP),
    ]


# -- ports ---------------------------------------------------------------------------------------


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """Ports free now (the kernel's picks, which it does not hand out again soon)."""
    probes = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("0.0.0.0", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _free_range(size: int) -> int:
    """The first port of `size` consecutive free ports, below the kernel's ephemeral range
    (so the picks of `_free_ports` and of other programs do not land inside it)."""
    for _ in range(200):
        low = random.randrange(20000, 31000)
        if all(_port_free(port) for port in range(low, low + size)):
            return low
    raise RuntimeError(f"no {size} consecutive free ports")


# -- processes -----------------------------------------------------------------------------------


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _stop_node(node: Node) -> None:
    """SIGKILL every process of the node's session. Not SIGTERM: `ray start --block`, the GCS
    and the raylet take seconds to act on it, if they do; a test cluster keeps nothing."""
    if node.process is None:
        return
    for _ in range(3):  # a raylet may start a worker while its siblings are being killed
        for pid in node.pids():
            _kill(pid)
        time.sleep(0.2)
    try:
        node.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def describe(cluster: RayCluster) -> dict[str, Any]:
    """What a failing test prints: addresses, PIDs and the tails of the nodes' logs."""
    return {
        "address": cluster.address,
        "head": {"pids": cluster.head.pids(), "log": _tail(cluster.head.log, 15)},
        "worker": {"pids": cluster.worker.pids(), "log": _tail(cluster.worker.log, 15)},
    }
