"""The training finisher on a real database and blob folder: it takes the weights from the File
records that storing the output made (no lookup by URL, no second read of the bytes) and adds
the trained version to the destination model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelyard.engine.files import FileService
from modelyard.engine.trainings import NO_WEIGHTS, trained_version_id, training_finisher
from modelyard.store.models import add_version, create_model, model_by_id
from modelyard.store.predictions import NewEvent, NewPrediction, create_prediction
from modelyard.store.tables import Account, File, Prediction, Version

from .test_files import account, make_service, output_file

PACKAGE = "c" * 64


@pytest.fixture
def files(tmp_path: Path) -> Iterator[FileService]:
    service = make_service(tmp_path / "data")
    yield service
    service.db.dispose()


def training(files: FileService, owner: Account) -> Prediction:
    """A stored training of owner/trainer into owner/trained."""
    with files.db.session() as session:
        holder = session.get(Account, owner.id)
        trainer = create_model(session, holder, "trainer")
        destination = create_model(session, holder, "trained")
        version, _ = add_version(
            session,
            trainer.model,
            version_id=PACKAGE,
            package_key=PACKAGE,
            cog_version="0.16.8",
            openapi_schema={"openapi": "3.0.2"},
        )
        new = NewPrediction(
            account_id=owner.id,
            model_id=trainer.model.id,
            model_ref=f"{owner.username}/trainer",
            version_pk=version.pk,
            version_id=version.id,
            input={},
            kind="training",
            destination_model_id=destination.model.id,
            destination_ref=f"{owner.username}/trained",
        )
        return create_prediction(session, new)


def done(output: Any) -> NewEvent:
    return NewEvent(
        "done", {"status": "succeeded", "output": output, "error": None, "metrics": {"n": 1}}
    )


def forbid_lookups(files: FileService, monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on the finisher must use the records it is handed: finding or reading files
    again fails."""

    def refuse(*_: Any) -> Any:
        raise AssertionError("the finisher looked the weights up again")

    monkeypatch.setattr(files, "delivered", refuse)
    monkeypatch.setattr(files.blobs, "read_bytes", refuse)
    monkeypatch.setattr(files.blobs, "put_file", refuse)


async def test_the_weights_record_becomes_the_new_versions_weights(
    files: FileService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada = account(files, "ada")
    run = training(files, ada)
    finish = training_finisher(files.db, files)
    stored = await _store(files, ada, run, {
        "weights": output_file(tmp_path / "w", "weights.tar", b"trained"),
        "sample": output_file(tmp_path / "s", "sample.txt", b"a sample"),
    })  # fmt: skip
    weights, _sample = stored.files
    forbid_lookups(files, monkeypatch)
    event = await finish(run, done(stored.value), stored.files)
    assert event.type == "done" and event.data["status"] == "succeeded"
    version_id = trained_version_id(PACKAGE, weights.blob_key)
    assert event.data["output"] == {
        "version": f"ada/trained:{version_id}",
        "weights": stored.value["weights"],
    }
    assert event.data["metrics"] == {"n": 1}
    with files.db.session() as session:
        version = session.query(Version).filter_by(id=version_id).one()
        assert version.weights_key == weights.blob_key and version.package_key == PACKAGE
        assert model_by_id(session, run.destination_model_id).model.latest_version_id == version_id
        kept = session.get(File, weights.id)
        assert kept.purpose == "weights" and kept.expires_at is None
        assert session.get(File, _sample.id).purpose == "output"


async def test_a_bare_path_output_is_the_weights(
    files: FileService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada = account(files, "ada")
    run = training(files, ada)
    stored = await _store(files, ada, run, output_file(tmp_path, "lora.safetensors", b"w"))
    forbid_lookups(files, monkeypatch)
    event = await training_finisher(files.db, files)(run, done(stored.value), stored.files)
    assert event.data["status"] == "succeeded"
    assert event.data["output"]["weights"] == stored.value


@pytest.mark.parametrize(
    "output",
    [{"weights": None}, "just text", {"weights": "https://elsewhere.example/w.bin"}],
)
async def test_no_weights_file_means_no_version(
    files: FileService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: Any
) -> None:
    ada = account(files, "ada")
    run = training(files, ada)
    # A file in the output that the weights URL does not name is not taken for the weights.
    stored = await _store(files, ada, run, output_file(tmp_path, "other.bin", b"o"))
    forbid_lookups(files, monkeypatch)
    event = await training_finisher(files.db, files)(run, done(output), stored.files)
    assert event.data == {"status": "failed", "error": NO_WEIGHTS, "metrics": {"n": 1}}
    with files.db.session() as session:
        assert session.query(Version).filter(Version.weights_key.is_not(None)).count() == 0


async def test_a_deleted_destination_fails_the_training_with_a_reason(
    files: FileService, tmp_path: Path
) -> None:
    ada = account(files, "ada")
    run = training(files, ada)
    stored = await _store(files, ada, run, output_file(tmp_path, "w.bin", b"w"))
    gone = Prediction(id=run.id, version_pk=run.version_pk, destination_model_id=None)
    event = await training_finisher(files.db, files)(gone, done(stored.value), stored.files)
    assert event.data["status"] == "failed" and "deleted" in event.data["error"]


async def _store(files: FileService, owner: Account, run: Prediction, value: Any) -> Any:
    return await files.store_outputs(owner.id, run.id, value)
