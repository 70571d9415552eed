"""The SQL tables. Migrations in `migrations/versions/` create them; change both together.

Types are portable (SQLite and PostgreSQL): JSON columns, timezone-aware timestamps stored as UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out (SQLite forgets the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(20), default="user")  # user | organization
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    webhook_secret: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    github_url: Mapped[str | None] = mapped_column(String(500))
    avatar_url: Mapped[str | None] = mapped_column(String(500))
    # A monthly spend limit in nano-USD (None: none), and the UTC month ("2026-12") its owner was
    # last told it was reached, so that they are told once a month (billing/limits).
    spend_limit_nanos: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    spend_notified_month: Mapped[str | None] = mapped_column(String(7), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(20))  # the first characters, to tell tokens apart
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    visibility: Mapped[str] = mapped_column(String(10), default="public")  # public | private
    hardware: Mapped[str] = mapped_column(String(50), default="cpu")
    github_url: Mapped[str | None] = mapped_column(String(500))
    paper_url: Mapped[str | None] = mapped_column(String(500))
    license_url: Mapped[str | None] = mapped_column(String(500))
    weights_url: Mapped[str | None] = mapped_column(String(500))
    cover_image_url: Mapped[str | None] = mapped_column(String(500))
    readme: Mapped[str | None] = mapped_column(Text)
    run_count: Mapped[int] = mapped_column(Integer, default=0)
    latest_version_id: Mapped[str | None] = mapped_column(String(64))
    default_example_id: Mapped[str | None] = mapped_column(String(32))
    # A price per output instead of per second (billing/), e.g. {"unit": "image",
    # "price_nanos": 3000000}; None: its hardware's price per second.
    pricing: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    latest_version_created_at: Mapped[datetime | None]


class Version(Base):
    """Immutable code + schema (+ weights); `id` is the content hash, unique within a model."""

    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("model_id", "id"),)

    pk: Mapped[int] = mapped_column(primary_key=True)
    id: Mapped[str] = mapped_column(String(64), index=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    package_key: Mapped[str] = mapped_column(String(64))  # blob key of the package archive
    weights_key: Mapped[str | None] = mapped_column(String(64))  # blob key, from a training
    cog_version: Mapped[str] = mapped_column(String(50))
    openapi_schema: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Prediction(Base):
    """A prediction or a training. Status, output, logs and metrics are a projection of `events`."""

    __tablename__ = "predictions"
    __table_args__ = (
        Index("ix_predictions_account_created", "account_id", "created_at"),
        Index("ix_predictions_status", "status"),
        Index("ix_predictions_model_examples", "model_id", "is_example", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), default="prediction")  # prediction | training
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version_pk: Mapped[int] = mapped_column(ForeignKey("versions.pk", ondelete="CASCADE"))
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL")
    )
    destination_model_id: Mapped[int | None] = mapped_column(
        ForeignKey("models.id", ondelete="SET NULL")
    )
    # Denormalised for rendering without joins (models are never renamed).
    model_ref: Mapped[str] = mapped_column(String(200))  # owner/name
    version_id: Mapped[str] = mapped_column(String(64))
    deployment_ref: Mapped[str | None] = mapped_column(String(200))
    destination_ref: Mapped[str | None] = mapped_column(String(200))
    input: Mapped[dict[str, Any]]
    output: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    logs: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12), default="starting")
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source: Mapped[str] = mapped_column(String(10), default="api")  # api | web
    stream_key: Mapped[str | None] = mapped_column(String(64))  # set when the output streams
    webhook: Mapped[str | None] = mapped_column(String(2000))
    webhook_events_filter: Mapped[list[Any] | None] = mapped_column(JSON)
    deadline: Mapped[datetime | None]
    data_removed: Mapped[bool] = mapped_column(Boolean, default=False)
    # What it cost, in nano-USD: the sum of its billed `usage` rows, written with them (None
    # until it is metered).
    cost_nanos: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    # Shown by `GET /models/{o}/{n}/examples`; chosen by the platform or the owner, never by default.
    is_example: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    # The API replica that runs it while it is unfinished (`Replica.id`, no foreign key: a
    # replica's row goes when it stops or dies, and its predictions are then claimed).
    owner: Mapped[str | None] = mapped_column(String(32))
    # The caller's W3C trace context (`traceparent`, and `tracestate` when it came with one), as
    # Cog takes it from the request's headers: sent on its webhooks and given to the worker.
    trace_context: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]


class Event(Base):
    """One entry of a prediction's event log: `seq` counts from 0 without gaps."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("prediction_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    prediction_id: Mapped[str] = mapped_column(
        ForeignKey("predictions.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(12))  # status | logs | output | metric | done
    data: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class File(Base):
    """An uploaded file (`purpose` upload), a prediction's output file, or training weights."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_account_created", "account_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(10), default="upload")  # upload | output | weights
    prediction_id: Mapped[str | None] = mapped_column(
        ForeignKey("predictions.id", ondelete="CASCADE"), index=True
    )
    access_key: Mapped[str] = mapped_column(String(64), unique=True)
    blob_key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    md5: Mapped[str] = mapped_column(String(32))
    file_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]


class WebhookDelivery(Base):
    """The outbox: a webhook is stored before it is sent, and kept until it is delivered."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhooks_pending", "delivered_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[str] = mapped_column(String(40), unique=True)
    prediction_id: Mapped[str] = mapped_column(ForeignKey("predictions.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2000))
    event: Mapped[str] = mapped_column(String(12))  # start | output | logs | completed
    body: Mapped[bytes] = mapped_column(LargeBinary)
    terminal: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]
    abandoned_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Collection(Base):
    __tablename__ = "collections"

    slug: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    full_description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CollectionModel(Base):
    __tablename__ = "collection_models"

    collection_slug: Mapped[str] = mapped_column(
        ForeignKey("collections.slug", ondelete="CASCADE"), primary_key=True
    )
    model_id: Mapped[int] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, default=0)


class Deployment(Base):
    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Release(Base):
    """One configuration of a deployment; every update adds a release with the next number."""

    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("deployment_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version_pk: Mapped[int] = mapped_column(ForeignKey("versions.pk", ondelete="CASCADE"))
    hardware: Mapped[str] = mapped_column(String(50))
    min_instances: Mapped[int] = mapped_column(Integer, default=0)
    max_instances: Mapped[int] = mapped_column(Integer, default=1)
    # Seconds an idle instance of this release lives (None: the server's --idle-timeout).
    idle_timeout: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Usage(Base):
    """The metering ledger: seconds of hardware (or outputs) by phase, and what they cost.

    One row per `key`, so a row recorded twice (a retry, a restart, two replicas) exists once:
    `<prediction id>:setup`, `<prediction id>:active`, `<prediction id>:output`,
    `<instance id>:idle:<n>`. Money is in nano-USD (10⁻⁹ $), integers, so sums are exact on
    every database. `billed` is false for what the rules do not charge (a public model's setup
    and idle time): such a row keeps its seconds with cost 0.
    """

    __tablename__ = "usage"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(120), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    prediction_id: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    model_id: Mapped[int | None] = mapped_column(
        ForeignKey("models.id", ondelete="SET NULL"), nullable=True
    )
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL"), nullable=True
    )
    hardware: Mapped[str] = mapped_column(String(50))
    phase: Mapped[str] = mapped_column(String(10))  # setup | active | idle | output
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    quantity: Mapped[float] = mapped_column(Float)  # of `unit`: seconds, or outputs
    unit: Mapped[str] = mapped_column(String(20), default="second")  # second | image | ...
    unit_price_nanos: Mapped[int] = mapped_column(BigInteger)
    cost_nanos: Mapped[int] = mapped_column(BigInteger)
    billed: Mapped[bool] = mapped_column(Boolean, default=True)
    day: Mapped[date] = mapped_column(Date, index=True)  # UTC day the usage ended
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_usage_account_day", "account_id", "day"),)


class WebSession(Base):
    """A signed-in browser: the cookie holds the token, the table its hash (sign-out revokes)."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Replica(Base):
    """An API replica sharing the database (PostgreSQL): its lease on the predictions it owns
    lasts until `expires_at` (the database's clock); renewing this one row renews them all."""

    __tablename__ = "replicas"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))  # who it is, for people reading the table
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class InstanceSnapshot(Base):
    """One running instance as its replica last saw it (store/instances.py): written when its
    state or health changes, deleted when it stops, so any replica can show every instance."""

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    replica: Mapped[str] = mapped_column(String(32))  # the engine that runs it (its lease)
    version_pk: Mapped[int] = mapped_column(
        ForeignKey("versions.pk", ondelete="CASCADE"), index=True
    )
    mode: Mapped[str] = mapped_column(String(10))  # predict | train
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    hardware: Mapped[str | None] = mapped_column(String(50))  # None until its spec is read
    state: Mapped[str] = mapped_column(String(20))  # booting | idle | busy | stopping
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    health_status: Mapped[str | None] = mapped_column(String(20))  # Cog's: READY, UNHEALTHY...
    health_error: Mapped[str | None] = mapped_column(Text)
    checked_at: Mapped[datetime | None]
