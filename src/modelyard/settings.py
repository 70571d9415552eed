"""How one `modelyard serve` is configured: where data lives, its public URL, limits and policies.

Every layer reads what it needs from one `Settings`; nothing here imports the rest of Modelyard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

BackendName = Literal["local", "ray"]


@dataclass(frozen=True)
class RateLimits:
    """Requests per minute per account (Replicate's defaults); 0 turns a limit off."""

    creates_per_minute: int = 600
    other_per_minute: int = 3000


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    public_url: str = "http://127.0.0.1:8000"
    database_url: str | None = None  # default: SQLite in data_dir
    max_instances: int = 1  # per version, when no deployment says otherwise
    idle_timeout: float = 300.0  # seconds an idle instance lives (scale to zero)
    upload_limit: int = 100 * 1024 * 1024  # Files API, bytes
    package_limit: int = 2 * 1024 * 1024 * 1024  # pushed packages, bytes
    # What a pushed package may unpack to, checked before extraction (docs/push.md): files and
    # folders, bytes of files, bytes of files per byte of archive (0: no check).
    package_max_entries: int = 20_000
    package_max_expanded: int = 2 * 1024 * 1024 * 1024
    package_max_ratio: int = 100
    file_expiry: float = 24 * 3600.0  # uploaded files, seconds
    output_expiry: float | None = None  # output files, seconds; None keeps them
    # Seconds after it finishes that a prediction's input, output, logs and output files are
    # removed (engine/retention.py): API-made ones, and web-made ones; None keeps them.
    data_retention: float | None = None
    web_data_retention: float | None = None
    sync_wait_max: float = 60.0  # `Prefer: wait` holds at most this long
    webhook_retry_delays: tuple[float, ...] = (1, 2, 4, 8, 16, 30)  # after the first try
    webhook_timeout: float = 10.0
    heartbeat_interval: float = 15.0  # SSE comments
    rate_limits: RateLimits = field(default_factory=RateLimits)
    catalog_dir: Path | None = None  # the starter models to register on start; None: none
    catalog_owner: str = "modelyard"
    allow_private_urls: bool = True  # webhooks and file inputs may reach private addresses
    # -- where it runs (docs/cluster.md) --
    storage_url: str | None = None  # blobs: None (data_dir/blobs), a folder, or s3://bucket/prefix
    backend: BackendName = "local"  # where instances run: worker processes here, or Ray actors
    ray_address: str | None = None  # the Ray cluster to join (backend "ray")
    hardware_file: Path | None = None  # overrides of the hardware table (billing.hardware)
    gpus: str | None = None  # this machine's GPUs for the local backend; None: ask nvidia-smi
    placement_timeout: float = 600.0  # seconds an instance waits for a machine offering its SKU
    lease_ttl: float = 15.0  # seconds a replica's lease on its predictions lasts unrenewed
    # instances' healthcheck() (engine/instances.py): seconds between checks (0: none), and the
    # failed checks in a row that replace an instance (0: never)
    healthcheck_interval: float = 30.0
    healthcheck_replace_after: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_url", self.public_url.rstrip("/"))

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'modelyard.db'}"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def package_dir(self) -> Path:
        return self.data_dir / "packages"
