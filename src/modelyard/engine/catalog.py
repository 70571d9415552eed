"""The starter catalog: the Cog packages under `models/`, registered as public models of one owner
and grouped into collections by task (`models/catalog.yaml`).

Registration packs each package and pushes it as a version (the same content gives the same
version, so running it on every start is cheap and idempotent), with its recorded example as the
model's default example and its cover image (`showcase.py`). Environments are not built here:
a model's environment is built on its first prediction, so the server never waits for them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from modelyard.runtime.package import PackageError, pack_package
from modelyard.store.accounts import account_by_username, create_account
from modelyard.store.catalog import set_collection_models, upsert_collection
from modelyard.store.database import Database
from modelyard.store.models import add_version, create_model, get_model
from modelyard.store.tables import Model

from .engine import Engine
from .examples import ExampleError
from .packages import InvalidPackage, inspect_package
from .showcase import publish_cover, publish_example

log = logging.getLogger(__name__)
COLLECTIONS = {
    "text": ("Text", "Generate, embed and classify text."),
    "image": ("Images", "Read, classify, upscale and cut out images."),
    "audio": ("Audio", "Turn speech into text and text into speech."),
}


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    directory: Path
    collection: str
    description: str


@dataclass
class Registered:
    models: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "name: why"


def default_catalog_dir() -> Path:
    """`models/` of this checkout (the catalog ships with the source, not inside the wheel)."""
    return Path(__file__).resolve().parents[3] / "models"


def read_catalog(root: Path) -> list[CatalogEntry]:
    """`catalog.yaml`: `{name: {collection, description}}`; packages not listed go to `text`."""
    index_path = root / "catalog.yaml"
    index = yaml.safe_load(index_path.read_text()) if index_path.exists() else {}
    entries = []
    for directory in sorted(p for p in root.iterdir() if (p / "cog.yaml").is_file()):
        meta = (index or {}).get(directory.name) or {}
        entries.append(
            CatalogEntry(
                name=directory.name,
                directory=directory,
                collection=meta.get("collection", "text"),
                description=meta.get("description") or _first_paragraph(directory),
            )
        )
    return entries


def register_catalog(engine: Engine, db: Database, root: Path, owner: str) -> Registered:
    """Push every package under `root` as a public model of `owner`; fill the collections.
    Replicas starting together register one after the other (the later ones find it done)."""
    with db.exclusive("catalog"):
        return _register_all(engine, db, root, owner)


def _register_all(engine: Engine, db: Database, root: Path, owner: str) -> Registered:
    done = Registered()
    members: dict[str, list[int]] = {slug: [] for slug in COLLECTIONS}
    for entry in read_catalog(root):
        try:
            model_id = _register(engine, db, entry, owner)
        except (PackageError, InvalidPackage) as exc:
            done.skipped.append(f"{entry.name}: {exc}")
            log.warning("catalog: %s skipped: %s", entry.name, exc)
            continue
        members.setdefault(entry.collection, []).append(model_id)
        done.models.append(f"{owner}/{entry.name}")
    with db.session() as session:
        for slug, ids in members.items():
            name, description = COLLECTIONS.get(slug, (slug.title(), ""))
            upsert_collection(session, slug, name, description)
            set_collection_models(session, slug, ids)
    return done


def _register(engine: Engine, db: Database, entry: CatalogEntry, owner: str) -> int:
    packed = pack_package(entry.directory)
    blob = engine.blobs.put_bytes(packed.data)
    package = inspect_package(engine.blobs, engine.settings.package_dir, blob.key)
    card = entry.directory / "README.md"
    readme = card.read_text() if card.exists() else None
    with db.session() as session:
        account = account_by_username(session, owner) or create_account(session, owner)
        row = get_model(session, owner, entry.name) or create_model(
            session, account, entry.name, visibility="public", hardware="cpu"
        )
        model = session.get(Model, row.model.id)
        assert model is not None
        model.description = entry.description
        model.readme = readme
        version, _ = add_version(
            session,
            model,
            version_id=blob.key,
            package_key=blob.key,
            cog_version=package.cog_version,
            openapi_schema=package.openapi_schema,
        )
        if model.latest_version_id != version.id:
            # A catalog model runs what `models/` holds: a version pushed over it (an admin's
            # forced push) is kept, but each start makes the catalog's own version latest again.
            log.warning("catalog: %s/%s: latest restored to %s", owner, entry.name, version.id)
            model.latest_version_id = version.id
            model.latest_version_created_at = version.created_at
        try:
            publish_example(engine.files, session, model, owner, version, entry.directory)
        except ExampleError as exc:  # the model still runs; it only lacks its example
            log.warning("catalog: %s has no example: %s", entry.name, exc)
        publish_cover(engine.files, session, model, entry.directory)
        return model.id


def _first_paragraph(directory: Path) -> str:
    readme = directory / "README.md"
    if not readme.exists():
        return ""
    paragraphs = [p.strip() for p in readme.read_text().split("\n\n")]
    return next((p for p in paragraphs if p and not p.startswith("#")), "")
