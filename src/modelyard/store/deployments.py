"""Deployments and their releases.

A deployment is a name owned by an account; what it runs (model, version, hardware, scaling
limits) lives in its releases. Every change adds a release with the next number, so the history
stays and `current_release` is simply the one with the highest number.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .tables import Account, Deployment, Model, Prediction, Release, Replica, Version, utcnow


@dataclass(frozen=True)
class ReleaseRow:
    """A release with what rendering it needs: the model's `owner/name`, the version id and
    the account that made it."""

    release: Release
    model_ref: str
    version_id: str
    created_by: Account


@dataclass(frozen=True)
class DeploymentRow:
    deployment: Deployment
    owner: str  # the owner's username
    current: ReleaseRow | None  # None only if its model was deleted from under it

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.deployment.name}"


@dataclass(frozen=True)
class ReleaseConfig:
    """What a release runs and how it scales."""

    model_id: int
    version_pk: int
    hardware: str
    min_instances: int
    max_instances: int
    idle_timeout: float | None = None  # seconds; None: the server's --idle-timeout


@dataclass(frozen=True)
class ReleasePolicy:
    """What the engine needs of a deployment's current release to size its pools."""

    deployment_id: int
    version_pk: int
    hardware: str
    min_instances: int
    max_instances: int
    idle_timeout: float | None


def get_deployment(session: Session, owner: str, name: str) -> DeploymentRow | None:
    row = session.execute(
        select(Deployment, Account.username)
        .join(Account, Account.id == Deployment.owner_id)
        .where(Account.username == owner, Deployment.name == name)
    ).first()
    if row is None:
        return None
    return DeploymentRow(row[0], row[1], current_release(session, row[0].id))


def list_deployments(
    session: Session, owner: Account, *, before: tuple[datetime, str] | None, limit: int
) -> list[DeploymentRow]:
    """Newest first; `before` is the (created_at, name) of the last row of the previous page."""
    query = select(Deployment).where(Deployment.owner_id == owner.id)
    if before is not None:
        at, name = before
        query = query.where(
            (Deployment.created_at < at)
            | ((Deployment.created_at == at) & (Deployment.name < name))
        )
    query = query.order_by(Deployment.created_at.desc(), Deployment.name.desc()).limit(limit)
    return [
        DeploymentRow(d, owner.username, current_release(session, d.id))
        for d in session.scalars(query)
    ]


def current_release(session: Session, deployment_id: int) -> ReleaseRow | None:
    creator = Account.__table__.alias("creator")
    owner = Account.__table__.alias("model_owner")
    row = session.execute(
        select(Release, owner.c.username, Model.name, Version.id, creator.c.id)
        .join(Model, Model.id == Release.model_id)
        .join(owner, owner.c.id == Model.owner_id)
        .join(Version, Version.pk == Release.version_pk)
        .join(creator, creator.c.id == Release.created_by_id)
        .where(Release.deployment_id == deployment_id)
        .order_by(Release.number.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    release, model_owner, model_name, version_id, creator_id = row
    created_by = session.get(Account, creator_id)
    assert created_by is not None
    return ReleaseRow(release, f"{model_owner}/{model_name}", version_id, created_by)


def create_deployment(
    session: Session, owner: Account, name: str, config: ReleaseConfig
) -> DeploymentRow:
    """A new deployment with release 1 (the caller checks that the name is free)."""
    deployment = Deployment(owner_id=owner.id, name=name, created_at=utcnow())
    session.add(deployment)
    session.flush()
    add_release(session, deployment, config, created_by=owner)
    found = get_deployment(session, owner.username, name)
    assert found is not None
    return found


def add_release(
    session: Session, deployment: Deployment, config: ReleaseConfig, *, created_by: Account
) -> Release:
    """The next release of `deployment` (numbers count from 1 without gaps)."""
    last = session.scalar(
        select(func.max(Release.number)).where(Release.deployment_id == deployment.id)
    )
    release = Release(
        deployment_id=deployment.id,
        number=(last or 0) + 1,
        model_id=config.model_id,
        version_pk=config.version_pk,
        hardware=config.hardware,
        min_instances=config.min_instances,
        max_instances=config.max_instances,
        idle_timeout=config.idle_timeout,
        created_by_id=created_by.id,
        created_at=utcnow(),
    )
    session.add(release)
    session.flush()
    return release


def busy(session: Session, deployment_id: int) -> bool:
    """Whether predictions of this deployment are still queued or running."""
    return (
        session.scalar(
            select(Prediction.id)
            .where(
                Prediction.deployment_id == deployment_id,
                Prediction.status.in_(("starting", "processing")),
            )
            .limit(1)
        )
        is not None
    )


def delete_deployment(session: Session, deployment_id: int) -> None:
    """The deployment and its releases; its past predictions stay (they lose the link only)."""
    deployment = session.get(Deployment, deployment_id)
    if deployment is not None:
        for release in session.scalars(
            select(Release).where(Release.deployment_id == deployment_id)
        ):
            session.delete(release)
        session.delete(deployment)


def release_policies(session: Session) -> list[ReleasePolicy]:
    """The current release of every deployment, as the engine sizes its pools."""
    latest = (
        select(Release.deployment_id, func.max(Release.number).label("number"))
        .group_by(Release.deployment_id)
        .subquery()
    )
    rows = session.execute(
        select(
            Release.deployment_id,
            Release.version_pk,
            Release.hardware,
            Release.min_instances,
            Release.max_instances,
            Release.idle_timeout,
        ).join(
            latest,
            (latest.c.deployment_id == Release.deployment_id) & (latest.c.number == Release.number),
        )
    )
    return [ReleasePolicy(*row) for row in rows]


def release_policy(release: Release) -> ReleasePolicy:
    """One release, as `release_policies` gives it."""
    return ReleasePolicy(
        release.deployment_id,
        release.version_pk,
        release.hardware,
        release.min_instances,
        release.max_instances,
        release.idle_timeout,
    )


def live_replicas(session: Session) -> list[str]:
    """The ids of the replicas whose lease has not expired, sorted (on a shared database every
    replica computes the same list, so each deployment's warm instances have one keeper)."""
    now = (
        func.statement_timestamp() if session.get_bind().dialect.name == "postgresql" else utcnow()
    )
    rows = session.scalars(select(Replica.id).where(Replica.expires_at > now).order_by(Replica.id))
    return list(rows)
