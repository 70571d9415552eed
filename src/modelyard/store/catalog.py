"""The catalog: listing and searching models, their examples, and collections of models.

Who may see a model is decided here in SQL (public, or owned by the viewer), so a page never
holds fewer rows than asked for because of filtering afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal

from sqlalchemy import ColumnElement, and_, delete, func, or_, select
from sqlalchemy.orm import Session

from .models import ModelRow
from .tables import Account, Collection, CollectionModel, Model, Prediction, UTCDateTime, Version

SortBy = Literal["model_created_at", "latest_version_created_at"]
SORTS: tuple[str, ...] = ("model_created_at", "latest_version_created_at")
ModelCursor = tuple[datetime, int]  # the sort value and id of the last model of a page
#: How many matching models search scores in Python; the best-run ones first beyond that.
SEARCH_CANDIDATES = 1000


def visible_to(viewer_id: int | None) -> ColumnElement[bool]:
    """Public models, and the viewer's own."""
    if viewer_id is None:
        return Model.visibility == "public"
    return or_(Model.visibility == "public", Model.owner_id == viewer_id)


def sort_column(sort_by: SortBy) -> ColumnElement[datetime]:
    """A model without versions sorts by its creation time under `latest_version_created_at`:
    a NULL would need a special case in every cursor comparison."""
    if sort_by == "model_created_at":
        return Model.created_at.expression
    return func.coalesce(Model.latest_version_created_at, Model.created_at, type_=UTCDateTime())


def sort_value(model: Model, sort_by: SortBy) -> datetime:
    if sort_by == "model_created_at":
        return model.created_at
    return model.latest_version_created_at or model.created_at


def list_models(
    session: Session,
    viewer_id: int | None,
    *,
    sort_by: SortBy = "latest_version_created_at",
    descending: bool = True,
    after: ModelCursor | None = None,
    limit: int,
) -> list[ModelRow]:
    """Visible models in order; `after` is the cursor of the previous page's last model."""
    column = sort_column(sort_by)
    query = (
        select(Model, Account.username)
        .join(Account, Account.id == Model.owner_id)
        .where(visible_to(viewer_id))
    )
    if after is not None:
        at, last_id = after
        if descending:
            query = query.where(or_(column < at, and_(column == at, Model.id < last_id)))
        else:
            query = query.where(or_(column > at, and_(column == at, Model.id > last_id)))
    if descending:
        query = query.order_by(column.desc(), Model.id.desc())
    else:
        query = query.order_by(column.asc(), Model.id.asc())
    return [ModelRow(model, owner) for model, owner in session.execute(query.limit(limit))]


def popular_models(session: Session, viewer_id: int | None, limit: int) -> list[ModelRow]:
    """Visible models, most runs first (then newest)."""
    query = (
        select(Model, Account.username)
        .join(Account, Account.id == Model.owner_id)
        .where(visible_to(viewer_id))
        .order_by(Model.run_count.desc(), Model.id.desc())
        .limit(limit)
    )
    return [ModelRow(model, owner) for model, owner in session.execute(query)]


def owner_models(
    session: Session, owner_id: int, viewer_id: int | None, limit: int
) -> list[ModelRow]:
    """One account's models the viewer may see (its public ones; all of them for the owner),
    most runs first, as an owner's page lists them."""
    query = (
        select(Model, Account.username)
        .join(Account, Account.id == Model.owner_id)
        .where(Model.owner_id == owner_id, visible_to(viewer_id))
        .order_by(Model.run_count.desc(), Model.name)
    )
    return [ModelRow(model, username) for model, username in session.execute(query.limit(limit))]


def search_terms(query: str) -> list[str]:
    """Lower-case words of the query; `owner/name` also matches as its two parts."""
    return [term for term in re.split(r"[\s/]+", query.lower()) if term]


def search_models(
    session: Session, viewer_id: int | None, query: str, limit: int
) -> list[tuple[ModelRow, float]]:
    """Visible models whose owner, name, description or readme holds every term of the query
    (case-insensitive), best first: a name match counts most, a readme match least."""
    terms = search_terms(query)
    if not terms:
        return []
    fields = (Account.username, Model.name, Model.description, Model.readme)
    matches = [or_(*(field.icontains(term, autoescape=True) for field in fields)) for term in terms]
    rows = session.execute(
        select(Model, Account.username)
        .join(Account, Account.id == Model.owner_id)
        .where(visible_to(viewer_id), *matches)
        .order_by(Model.run_count.desc(), Model.id.desc())
        .limit(SEARCH_CANDIDATES)
    ).all()
    scored = [(ModelRow(model, owner), _score(model, owner, query, terms)) for model, owner in rows]
    scored.sort(key=lambda item: (-item[1], -item[0].model.run_count, -item[0].model.id))
    return scored[:limit]


def _score(model: Model, owner: str, query: str, terms: list[str]) -> float:
    name, owner = model.name.lower(), owner.lower()
    description, readme = (model.description or "").lower(), (model.readme or "").lower()
    whole = query.strip().lower()
    score = 0.0
    if whole in (name, f"{owner}/{name}"):
        score += 10.0
    for term in terms:
        score += 4.0 if term == name else 3.0 if term in name else 0.0
        score += 2.0 if term in owner else 0.0
        score += 1.0 if term in description else 0.0
        score += 0.5 if term in readme else 0.0
    return score


def latest_versions(session: Session, models: Iterable[Model]) -> dict[int, Version]:
    """Each model's latest version by model id (one query for a whole page)."""
    wanted = {(m.id, m.latest_version_id) for m in models if m.latest_version_id}
    if not wanted:
        return {}
    rows = session.scalars(
        select(Version).where(
            Version.model_id.in_({model_id for model_id, _ in wanted}),
            Version.id.in_({version_id for _, version_id in wanted}),
        )
    )
    return {v.model_id: v for v in rows if (v.model_id, v.id) in wanted}


def predictions_by_id(session: Session, ids: Iterable[str | None]) -> dict[str, Prediction]:
    wanted = {i for i in ids if i}
    if not wanted:
        return {}
    return {p.id: p for p in session.scalars(select(Prediction).where(Prediction.id.in_(wanted)))}


def mark_example(session: Session, prediction_id: str, *, default: bool = False) -> Prediction:
    """Make a prediction one of its model's examples (and, with `default`, the default one)."""
    prediction = session.get(Prediction, prediction_id)
    if prediction is None:
        raise LookupError(f"no prediction {prediction_id}")
    prediction.is_example = True
    if default:
        model = session.get(Model, prediction.model_id)
        assert model is not None  # the foreign key says so
        model.default_example_id = prediction.id
    return prediction


def list_examples(
    session: Session, model_id: int, *, before: tuple[datetime, str] | None, limit: int
) -> list[Prediction]:
    """A model's example predictions, newest first (the default example among them)."""
    query = select(Prediction).where(
        Prediction.model_id == model_id,
        Prediction.kind == "prediction",
        or_(
            Prediction.is_example.is_(True),
            Prediction.id
            == select(Model.default_example_id).where(Model.id == model_id).scalar_subquery(),
        ),
    )
    if before is not None:
        at, last_id = before
        query = query.where(
            or_(
                Prediction.created_at < at,
                and_(Prediction.created_at == at, Prediction.id < last_id),
            )
        )
    query = query.order_by(Prediction.created_at.desc(), Prediction.id.desc()).limit(limit)
    return list(session.scalars(query))


def has_versions(session: Session, model_id: int) -> bool:
    return (
        session.scalar(select(Version.pk).where(Version.model_id == model_id).limit(1)) is not None
    )


def delete_model(session: Session, model_id: int) -> None:
    """Remove a model (its collection memberships go with it, by foreign key)."""
    session.execute(delete(CollectionModel).where(CollectionModel.model_id == model_id))
    session.execute(delete(Model).where(Model.id == model_id))


# --- collections ----------------------------------------------------------------------------


def upsert_collection(
    session: Session,
    slug: str,
    name: str,
    description: str,
    full_description: str | None = None,
) -> Collection:
    """Create the collection or update its texts (its models stay as they are)."""
    collection = session.get(Collection, slug)
    if collection is None:
        collection = Collection(
            slug=slug, name=name, description=description, full_description=full_description
        )
        session.add(collection)
    else:
        collection.name = name
        collection.description = description
        collection.full_description = full_description
    session.flush()
    return collection


def set_collection_models(session: Session, slug: str, model_ids: Sequence[int]) -> None:
    """Replace the collection's models with `model_ids`, kept in that order."""
    if session.get(Collection, slug) is None:
        raise LookupError(f"no collection {slug}")
    session.execute(delete(CollectionModel).where(CollectionModel.collection_slug == slug))
    unique = list(dict.fromkeys(model_ids))
    session.add_all(
        CollectionModel(collection_slug=slug, model_id=model_id, position=position)
        for position, model_id in enumerate(unique)
    )
    session.flush()


def get_collection(session: Session, slug: str) -> Collection | None:
    return session.get(Collection, slug)


def list_collections(
    session: Session, *, after: tuple[datetime, str] | None, limit: int
) -> list[Collection]:
    """In the order the platform created them (the order it meant them to be shown)."""
    query = select(Collection)
    if after is not None:
        at, slug = after
        query = query.where(
            or_(
                Collection.created_at > at,
                and_(Collection.created_at == at, Collection.slug > slug),
            )
        )
    query = query.order_by(Collection.created_at, Collection.slug).limit(limit)
    return list(session.scalars(query))


def collection_models(session: Session, slug: str, viewer_id: int | None) -> list[ModelRow]:
    """The collection's models the viewer may see, in the collection's order."""
    rows = session.execute(
        select(Model, Account.username)
        .join(CollectionModel, CollectionModel.model_id == Model.id)
        .join(Account, Account.id == Model.owner_id)
        .where(CollectionModel.collection_slug == slug, visible_to(viewer_id))
        .order_by(CollectionModel.position, Model.id)
    )
    return [ModelRow(model, owner) for model, owner in rows]


def search_collections(session: Session, query: str, limit: int) -> list[Collection]:
    """Collections whose slug, name or description holds every term of the query."""
    terms = search_terms(query)
    if not terms:
        return []
    fields = (Collection.slug, Collection.name, Collection.description)
    matches = [or_(*(field.icontains(term, autoescape=True) for field in fields)) for term in terms]
    query_ = select(Collection).where(*matches).order_by(Collection.created_at, Collection.slug)
    return list(session.scalars(query_.limit(limit)))
