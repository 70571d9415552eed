"""The sandbox a model's worker runs in: Debian's bubblewrap (`bwrap`), without privileges.

The worker gets a user namespace (uid and gid 65534, no capabilities), a PID namespace of its own
(every process the model starts dies with the worker: bwrap's init is PID 1 there, and it is
killed when its parent dies or exits), a new session, and a file system made of:

- `/usr` (and the `/bin`, `/lib*`, `/sbin` links), `/sys`, a few entries of `/etc` (DNS, TLS
  certificates, the dynamic linker's cache, time zone) and a `/etc/passwd` of its own, read-only;
- the interpreter's install folder, the model's environment, the worker package, the model's
  package, its weights file and the instance's inbox (its input files), read-only, at the same
  paths as outside (so paths in messages mean the same on both sides);
- `/tmp` and `$HOME` (`/home/model`): the instance's scratch folder, writable, new for each worker;
- its own `/proc`, a minimal `/dev` (plus the GPUs' device nodes), a `/dev/shm` of bounded size.

Never the data folder (database, blobs, packages of other models, `secret.key`), the server's home
or its environment variables. The network is shared with the host. docs/security.md states what
this does and does not stop.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: `off` turns the sandbox off for every worker this process starts (`modelyard serve
#: --no-sandbox` sets it); anything else, or unset: on where bubblewrap works.
SANDBOX_ENV = "MODELYARD_SANDBOX"
#: Folders every worker may read, at the same paths (`serve --sandbox-share`), os.pathsep apart.
SHARED_ENV = "MODELYARD_SANDBOX_SHARE"
UID = GID = 65534
USER = "model"
HOME_INSIDE = "/home/model"
TMP_INSIDE = "/tmp"

#: What of `/etc` a worker sees: name resolution, certificates, the linker's cache, time zone.
ETC_ENTRIES = (
    "resolv.conf",
    "hosts",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "crypto-policies",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "alternatives",
    "mime.types",
    "fonts",
    "os-release",
    "protocols",
    "services",
)

#: The server's variables a sandboxed worker keeps; the rest (tokens, storage keys, database
#: URLs) stay outside. Certificate bundles named by these are shown read-only.
ENV_KEPT = ("LANG", "LANGUAGE", "TZ", "TERM", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")
ENV_KEPT_PREFIXES = ("LC_", "OMP_", "MKL_", "OPENBLAS_", "NVIDIA_", "CUDA_")
PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")
CERTIFICATE_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")


class SandboxError(Exception):
    """The sandbox cannot be set up for this worker; the message says why, in one line."""


@dataclass(frozen=True)
class Limits:
    """What one instance may use; None: no limit. Enforced by runtime/limits.py."""

    memory: int | None = None  # bytes of resident memory, all its processes together
    processes: int | None = None  # processes and threads, all together
    open_files: int | None = None  # per process
    scratch: int | None = None  # bytes in its /tmp and $HOME (and the size of /dev/shm)
    output: int | None = None  # bytes of output files of one prediction
    owner: str = "this hardware"  # named in errors: "the limit of hardware cpu"


@dataclass(frozen=True)
class SandboxSpec:
    """Where one instance's sandbox lives on this machine, and what more it may read.

    `root` holds `scratch/` (the worker's /tmp and $HOME), `inbox/` (input files, read-only
    inside), `outputs/` (output files moved out of the worker's reach) and `etc/`.
    """

    root: Path
    read_only: tuple[Path, ...] = ()  # shown read-only where they are (the weights file)

    @property
    def scratch(self) -> Path:
        return self.root / "scratch"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    def prepare(self) -> None:
        """A fresh scratch for a new worker; the other folders made if missing."""
        shutil.rmtree(self.scratch, ignore_errors=True)
        for folder in (self.scratch / "tmp", self.scratch / "home", self.inbox, self.outputs):
            folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        etc = self.root / "etc"
        etc.mkdir(exist_ok=True)
        (etc / "passwd").write_text(
            f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"{USER}:x:{UID}:{GID}:model:{HOME_INSIDE}:/bin/sh\n"
        )
        (etc / "group").write_text(f"root:x:0:\n{USER}:x:{GID}:\n")

    def host_path(self, inside: str) -> Path | None:
        """Where a path the worker named is on this machine, for the writable folders only
        (None for any other path). Nothing is resolved: callers must not follow links."""
        for mount, folder in ((TMP_INSIDE, "tmp"), (HOME_INSIDE, "home")):
            if inside == mount or inside.startswith(mount + "/"):
                return self.scratch / folder / inside[len(mount) :].lstrip("/")
        return None


def shared_folders() -> tuple[Path, ...]:
    """The folders `serve --sandbox-share` showed to every worker, read-only."""
    value = os.environ.get(SHARED_ENV, "")
    return tuple(Path(part) for part in value.split(os.pathsep) if part)


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def wanted() -> bool:
    """Whether workers are sandboxed: not when `MODELYARD_SANDBOX=off`."""
    return os.environ.get(SANDBOX_ENV, "").strip().lower() not in ("off", "0", "false", "no")


@functools.cache
def unavailable_reason() -> str | None:
    """Why bubblewrap cannot run a sandbox on this machine (None: it can). Runs it once."""
    bwrap = bwrap_path()
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    probe = [bwrap, *_namespaces(), "--ro-bind", "/", "/", "--proc", "/proc", "--", "true"]
    try:
        result = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap does not run: {exc}"
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()
        return "bubblewrap cannot create user namespaces here" + (
            f" ({detail[-1]})" if detail else ""
        )
    return None


def _namespaces() -> list[str]:
    return [
        "--unshare-user",
        "--uid",
        str(UID),
        "--gid",
        str(GID),
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
    ]


def interpreter_home(python: Path) -> Path:
    """The install folder of the interpreter a venv's `python` links to (`.../3.11.7`)."""
    real = Path(os.path.realpath(python))
    home = real.parent.parent
    if home in (Path("/"), Path.home()) or not real.exists():
        raise SandboxError(f"the interpreter {real} is not in an install folder of its own")
    return home


def command(
    spec: SandboxSpec,
    *,
    python: Path,
    package_dir: Path,
    worker_paths: Sequence[Path],
    limits: Limits | None,
    environment: Mapping[str, str],
) -> list[str]:
    """The `bwrap ... --` prefix that runs a worker in `spec`'s sandbox."""
    shm_size = limits.scratch if limits is not None and limits.scratch else None
    args = _frame(spec, shm_size)
    venv = Path(python).parent.parent
    shown = [interpreter_home(python), venv, *worker_paths, package_dir, *spec.read_only]
    args += _read_only(shown, environment)
    args += ["--ro-bind", str(spec.inbox), str(spec.inbox)]
    args += ["--chdir", str(package_dir), "--"]
    return args


def build_command(
    spec: SandboxSpec,
    *,
    python: Path,
    env_dir: Path,
    package_dir: Path,
    environment: Mapping[str, str],
) -> list[str]:
    """The `bwrap ... --` prefix for a model's own build commands (`build.run`, `pre_install`):
    a worker's sandbox, except that the environment being built and the package (their working
    folder, as in Cog's image build) are writable, and pip's configuration and local wheel
    folders are shown, so `pip install` inside finds what the builder's uv would."""
    args = _frame(spec, None)
    args += _read_only([interpreter_home(python), *spec.read_only], environment)
    for path in (env_dir, package_dir):
        args += ["--bind", str(path), str(path)]
    args += ["--chdir", str(package_dir), "--"]
    return args


def _frame(spec: SandboxSpec, shm_size: int | None) -> list[str]:
    """bwrap with the namespaces, the system, `/proc`, `/dev`, `/dev/shm`, and `spec`'s scratch
    as `/tmp` and home (before what is shown inside them: a package under /tmp, in tests)."""
    bwrap = bwrap_path()
    if bwrap is None:
        raise SandboxError("bubblewrap (bwrap) is not installed")
    args = [bwrap, *_namespaces(), "--hostname", "modelyard", "--disable-userns"]
    args += _system()
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += (["--size", str(shm_size)] if shm_size else []) + ["--tmpfs", "/dev/shm"]
    args += _devices()
    args += ["--bind", str(spec.scratch / "tmp"), TMP_INSIDE]
    args += ["--bind", str(spec.scratch / "home"), HOME_INSIDE]
    args += ["--ro-bind", str(spec.root / "etc" / "passwd"), "/etc/passwd"]
    args += ["--ro-bind", str(spec.root / "etc" / "group"), "/etc/group"]
    return args


def _read_only(paths: Sequence[Path], environment: Mapping[str, str]) -> list[str]:
    """`paths`, and the certificate bundles `environment` names, read-only where they are."""
    shown = [*paths, *(Path(environment[n]) for n in CERTIFICATE_VARIABLES if n in environment)]
    return [arg for path in shown for arg in ("--ro-bind-try", str(path), str(path))]


def _system() -> list[str]:
    """`/usr`, the top-level links into it (or the folders, where they are not links), `/sys`
    and the chosen entries of `/etc`, read-only."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        top = Path("/") / name
        if top.is_symlink():
            args += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            args += ["--ro-bind", str(top), str(top)]
    args += ["--ro-bind-try", "/sys", "/sys"]
    for entry in ETC_ENTRIES:
        args += ["--ro-bind-try", f"/etc/{entry}", f"/etc/{entry}"]
    return args


def _devices() -> list[str]:
    """The NVIDIA device nodes, where there are any (which GPUs a worker uses is still
    `CUDA_VISIBLE_DEVICES`'s to say)."""
    dev = Path("/dev")
    nodes = sorted(dev.glob("nvidia*")) + sorted((dev / "nvidia-caps").glob("*"))
    return [arg for node in nodes for arg in ("--dev-bind-try", str(node), str(node))]


def environment(base: Mapping[str, str]) -> dict[str, str]:
    """The server's variables a sandboxed worker keeps (see ENV_KEPT), with its own home."""
    kept = {
        name: value
        for name, value in base.items()
        if name in ENV_KEPT or name.startswith(ENV_KEPT_PREFIXES) or name.lower() in PROXY_VARIABLES
    }
    kept.update(
        HOME=HOME_INSIDE,
        USER=USER,
        LOGNAME=USER,
        TMPDIR=TMP_INSIDE,
        PATH="/usr/local/bin:/usr/bin:/bin",
    )
    return kept


def worker_package_paths(pythonpath_dir: Path) -> list[Path]:
    """The worker's import folder and the package its link points to."""
    link = pythonpath_dir / "modelyard_worker"
    return [pythonpath_dir, Path(os.path.realpath(link))]


def loud_warning() -> str:
    """What `serve` prints when workers run without a sandbox."""
    return (
        "WARNING: model workers run WITHOUT a sandbox (--no-sandbox): any model can read this "
        "server's data folder, keys and files, and processes it starts may outlive it. "
        "Use this only with models you trust (docs/security.md)."
    )
