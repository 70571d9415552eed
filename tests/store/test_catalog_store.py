"""The catalog's queries on SQLite and PostgreSQL: visibility, sort orders with cursors, search,
examples and collections."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from test_database import db  # noqa: F401 - the fixture: SQLite and PostgreSQL

from modelyard.store.accounts import create_account
from modelyard.store.catalog import (
    collection_models,
    delete_model,
    has_versions,
    list_collections,
    list_examples,
    list_models,
    mark_example,
    search_collections,
    search_models,
    set_collection_models,
    sort_value,
    upsert_collection,
)
from modelyard.store.database import Database
from modelyard.store.models import add_version, create_model, get_version
from modelyard.store.predictions import NewPrediction, create_prediction
from modelyard.store.tables import Account, CollectionModel, Model, utcnow


def _catalog(db: Database) -> tuple[int, int]:  # noqa: F811
    """alice: five public models and a private one; bob: one private. Returns their ids."""
    with db.session() as session:
        alice, bob = create_account(session, "alice"), create_account(session, "bob")
        start = utcnow() - timedelta(hours=1)
        for i, name in enumerate(["m0", "m1", "m2", "m3", "m4", "secret"]):
            row = create_model(session, alice, name, created_at=start + timedelta(minutes=i),
                               visibility="private" if name == "secret" else "public")  # fmt: skip
            if name == "m1":  # a version makes m1 the newest by latest_version_created_at
                add_version(session, row.model, version_id="a" * 64, package_key="b" * 64,
                            cog_version="0.16.12", openapi_schema={})  # fmt: skip
        create_model(
            session, bob, "bobs", visibility="private", created_at=start - timedelta(minutes=1)
        )
        return alice.id, bob.id


def _pages(db: Database, viewer: int | None, **sort: object) -> list[list[str]]:  # noqa: F811
    pages, after = [], None
    while True:
        with db.session() as session:
            rows = list_models(session, viewer, after=after, limit=2, **sort)  # type: ignore[arg-type]
        if not rows:
            return pages
        pages.append([r.model.name for r in rows])
        last = rows[-1].model
        after = (sort_value(last, sort.get("sort_by", "latest_version_created_at")), last.id)  # type: ignore[arg-type]


def test_list_models_sorts_pages_and_hides_private_models(db: Database) -> None:  # noqa: F811
    alice, bob = _catalog(db)
    assert _pages(db, alice) == [["m1", "secret"], ["m4", "m3"], ["m2", "m0"]]
    assert _pages(db, bob, sort_by="model_created_at", descending=False) == [
        ["bobs", "m0"], ["m1", "m2"], ["m3", "m4"]]  # fmt: skip
    assert _pages(db, None, sort_by="model_created_at") == [["m4", "m3"], ["m2", "m1"], ["m0"]]


def test_search_is_case_insensitive_and_ranks_names_first(db: Database) -> None:  # noqa: F811
    alice, bob = _catalog(db)
    with db.session() as session:
        m2 = session.scalar(select(Model).where(Model.name == "m2"))
        m2.description = "Makes 100% LLAMA_art"
        m3 = session.scalar(select(Model).where(Model.name == "m3"))
        m3.readme = "A llama in the readme"
        create_model(session, session.get(Account, alice), "llama")
    with db.session() as session:
        found = [(row.ref, score) for row, score in search_models(session, bob, "Llama", 10)]
        assert [ref for ref, _ in found] == ["alice/llama", "alice/m2", "alice/m3"]
        assert found[0][1] > found[1][1] > found[2][1] > 0
        # LIKE wildcards in the query are plain characters.
        assert [r.ref for r, _ in search_models(session, bob, "100%", 10)] == ["alice/m2"]
        assert [r.ref for r, _ in search_models(session, bob, "llama_art", 10)] == ["alice/m2"]
        assert search_models(session, bob, "secret", 10) == []  # alice's private model
        assert [r.ref for r, _ in search_models(session, alice, "SECRET", 10)] == ["alice/secret"]
        assert [r.ref for r, _ in search_models(session, bob, "alice/m4", 10)] == ["alice/m4"]
        assert search_models(session, bob, "   ", 10) == []


def test_examples_and_delete(db: Database) -> None:  # noqa: F811
    alice, _ = _catalog(db)
    with db.session() as session:
        model = session.scalar(select(Model).where(Model.name == "m1"))
        row = get_version(session, model, model.latest_version_id)
        ids = [
            create_prediction(session, NewPrediction(
                account_id=alice, model_id=model.id, model_ref="alice/m1", version_pk=row.pk,
                version_id=row.id, input={"i": i})).id
            for i in range(3)
        ]  # fmt: skip
        mark_example(session, ids[0])
        mark_example(session, ids[2], default=True)
        assert model.default_example_id == ids[2]
    with db.session() as session:
        first = list_examples(session, model.id, before=None, limit=1)
        rest = list_examples(session, model.id, before=(first[0].created_at, first[0].id), limit=5)
        assert {p.id for p in first + rest} == {ids[0], ids[2]} and len(first + rest) == 2
        assert has_versions(session, model.id)
        empty = session.scalar(select(Model).where(Model.name == "m0"))
        assert not has_versions(session, empty.id)
        upsert_collection(session, "c", "C", "d")
        set_collection_models(session, "c", [empty.id])
        delete_model(session, empty.id)
    with db.session() as session:
        assert session.get(Model, empty.id) is None
        assert session.scalars(select(CollectionModel)).all() == []


def test_collections(db: Database) -> None:  # noqa: F811
    alice, bob = _catalog(db)
    with db.session() as session:
        ids = {m.name: m.id for m in session.scalars(select(Model))}
        upsert_collection(session, "first", "First", "The first one")
        upsert_collection(session, "second", "Second", "Another", "# Long")
        set_collection_models(session, "first", [ids["m3"], ids["secret"], ids["bobs"], ids["m3"]])
    with db.session() as session:
        assert [m.model.name for m in collection_models(session, "first", alice)] == [
            "m3",
            "secret",
        ]
        assert [m.model.name for m in collection_models(session, "first", bob)] == ["m3", "bobs"]
        assert [m.model.name for m in collection_models(session, "first", None)] == ["m3"]
        page = list_collections(session, after=None, limit=1)
        assert [c.slug for c in page] == ["first"]
        after = (page[0].created_at, page[0].slug)
        assert [c.slug for c in list_collections(session, after=after, limit=5)] == ["second"]
        assert [c.slug for c in search_collections(session, "ANOTHER", 5)] == ["second"]
        upsert_collection(session, "first", "Renamed", "New text")  # keeps its models
    with db.session() as session:
        renamed = list_collections(session, after=None, limit=5)[0]
        assert (renamed.slug, renamed.name, renamed.full_description) == ("first", "Renamed", None)
        assert len(collection_models(session, "first", alice)) == 2
        set_collection_models(session, "first", [])
        assert collection_models(session, "first", alice) == []
