"""Packing a Cog package into a deterministic archive and unpacking one safely."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import threading
from pathlib import Path

import pytest

from modelyard.runtime.package import (
    DockerIgnore,
    PackageError,
    pack_package,
    unpack_package,
)

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello-world"


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A copy of examples/hello-world with a few more files (one executable, one nested)."""
    folder = tmp_path / "pkg"
    shutil.copytree(HELLO, folder)
    (folder / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (folder / "run.sh").chmod(0o700)
    (folder / "lib" / "deep").mkdir(parents=True)
    (folder / "lib" / "helpers.py").write_text("X = 1\n")
    (folder / "lib" / "deep" / "data.txt").write_text("data\n")
    return folder


def names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.getnames()


def files(folder: Path) -> dict[str, tuple[bytes, bool]]:
    """Every file below `folder`: relative path → (content, executable)."""
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes(), os.access(p, os.X_OK))
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --- determinism ----------------------------------------------------------------------------


def test_packing_twice_gives_the_same_bytes() -> None:
    first, second = pack_package(HELLO), pack_package(HELLO)
    assert first.data == second.data
    assert first.sha256 == second.sha256
    assert len(first.sha256) == 64
    assert first.files == 2
    assert first.size == sum(p.stat().st_size for p in HELLO.iterdir())


def test_mtimes_owners_and_modes_do_not_change_the_archive(package: Path, tmp_path: Path) -> None:
    before = pack_package(package)
    for path in package.rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    (package / "predict.py").chmod(0o600)  # still not executable: same archive
    copy = tmp_path / "elsewhere" / "other-name"
    shutil.copytree(package, copy)  # a new path, new inodes, new times
    assert pack_package(package).sha256 == before.sha256
    assert pack_package(copy).sha256 == before.sha256


def test_header_fields_are_normalised(package: Path) -> None:
    data = pack_package(package).data
    assert data[4:8] == b"\0\0\0\0"  # gzip mtime
    assert not data[3] & 0x08  # no FNAME
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert list(members) == sorted(members, key=lambda n: n.split("/"))
    for member in members.values():
        assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (0, 0, 0, "", "")
    assert members["run.sh"].mode == 0o755
    assert members["predict.py"].mode == 0o644
    assert members["lib"].isdir() and members["lib"].mode == 0o755


def test_content_changes_change_the_sha(package: Path) -> None:
    before = pack_package(package).sha256
    (package / "lib" / "helpers.py").write_text("X = 2\n")
    assert pack_package(package).sha256 != before
    (package / "lib" / "helpers.py").write_text("X = 1\n")
    (package / "run.sh").chmod(0o644)  # the executable bit counts
    assert pack_package(package).sha256 != before


# --- what is left out ----------------------------------------------------------------------


def test_tool_folders_and_bytecode_are_left_out(package: Path) -> None:
    for folder in (".git", "__pycache__", ".cog/tmp", ".venv/bin", "lib/__pycache__"):
        (package / folder).mkdir(parents=True)
        (package / folder / "junk").write_text("x")
    (package / "lib" / "helpers.pyc").write_bytes(b"\0")
    packed = pack_package(package)
    assert names(packed.data) == [
        "cog.yaml", "lib", "lib/deep", "lib/deep/data.txt", "lib/helpers.py", "predict.py", "run.sh"
    ]
    assert packed.files == 5


def test_dockerignore_is_honoured(package: Path) -> None:
    (package / "weights").mkdir()
    (package / "weights" / "model.bin").write_bytes(b"w" * 100)
    (package / "notes.md").write_text("n")
    (package / "lib" / "notes.md").write_text("n")  # Docker: *.md matches at the root only
    (package / "lib" / "deep" / "x.ckpt").write_text("c")
    (package / ".dockerignore").write_text(
        "# comment\n\nweights/\n*.md\n**/*.ckpt\n/lib/deep/data.txt\n"
    )
    got = names(pack_package(package).data)
    assert "weights" not in got and "weights/model.bin" not in got
    assert "notes.md" not in got
    assert "lib/notes.md" in got
    assert "lib/deep/x.ckpt" not in got and "lib/deep/data.txt" not in got
    assert ".dockerignore" in got and "lib/deep" in got


def test_dockerignore_negation(package: Path) -> None:
    (package / "data").mkdir()
    for name in ("a.txt", "b.txt", "keep.txt"):
        (package / "data" / name).write_text(name)
    (package / "README.md").write_text("r")
    (package / "other.md").write_text("o")
    (package / ".dockerignore").write_text("data\n!data/keep.txt\n*.md\n!README.md\n")
    got = names(pack_package(package).data)
    assert "data/keep.txt" in got
    assert "data/a.txt" not in got and "data/b.txt" not in got
    assert "README.md" in got and "other.md" not in got


def test_cog_yaml_is_always_kept(package: Path) -> None:
    (package / ".dockerignore").write_text("*\n!predict.py\n")
    assert names(pack_package(package).data) == ["cog.yaml", "predict.py"]


@pytest.mark.parametrize(("pattern", "path", "excluded"), [
    ("foo", "foo/bar/baz", True),
    ("foo", "a/foo", False),
    ("**/foo", "a/b/foo", True),
    ("**/foo", "foo", True),
    ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/y/b", True),
    ("a/*", "a/x/y", True),
    ("*/x", "a/b/x", False),
    ("f?o", "fao", True),
    ("f[a-c]o", "fdo", False),
    ("f[^a-c]o", "fdo", True),
    ("dir/", "dir/x", True),
    ("/abs", "abs", True),
    ("./rel", "rel", True),
    ("x.y", "xzy", False),
])
def test_dockerignore_pattern_rules(pattern: str, path: str, excluded: bool) -> None:
    assert DockerIgnore([pattern]).excludes(path) is excluded


# --- symlinks -------------------------------------------------------------------------------


def test_symlinks_inside_are_stored_as_content(package: Path) -> None:
    (package / "alias.py").symlink_to("lib/helpers.py")
    (package / "libalias").symlink_to("lib", target_is_directory=True)
    with tarfile.open(fileobj=io.BytesIO(pack_package(package).data), mode="r:gz") as tar:
        alias = tar.getmember("alias.py")
        assert alias.isfile() and tar.extractfile(alias).read() == b"X = 1\n"
        assert tar.getmember("libalias/deep/data.txt").isfile()
        assert not any(m.issym() or m.islnk() for m in tar.getmembers())


def test_symlink_escaping_the_package_is_refused(package: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s")
    (package / "lib" / "leak").symlink_to(secret)
    with pytest.raises(PackageError, match="lib/leak points outside the package"):
        pack_package(package)


def test_dangling_symlink_and_loop_are_refused(package: Path) -> None:
    (package / "gone").symlink_to("nowhere")
    with pytest.raises(PackageError, match="gone points to nowhere, which does not exist"):
        pack_package(package)
    (package / "gone").unlink()
    (package / "lib" / "up").symlink_to("..", target_is_directory=True)
    with pytest.raises(PackageError, match="symlink loop at lib/up"):
        pack_package(package)


# --- errors ---------------------------------------------------------------------------------


def test_missing_cog_yaml(tmp_path: Path) -> None:
    (tmp_path / "predict.py").write_text("")
    with pytest.raises(PackageError, match="has no cog.yaml") as info:
        pack_package(tmp_path)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


def test_size_limit(package: Path) -> None:
    (package / "big.bin").write_bytes(b"\0" * 5000)
    with pytest.raises(PackageError, match="more than the limit"):
        pack_package(package, limit=4000)
    (package / ".dockerignore").write_text("big.bin\n")
    assert pack_package(package, limit=4000).files == 6


# --- unpack ---------------------------------------------------------------------------------


def test_round_trip_keeps_files_and_exec_bits(package: Path, tmp_path: Path) -> None:
    packed = pack_package(package)
    target = tmp_path / "out" / "version"
    unpack_package(packed.data, target)
    assert files(target) == files(package)
    assert os.access(target / "run.sh", os.X_OK)
    assert not os.access(target / "predict.py", os.X_OK)
    assert pack_package(target).sha256 == packed.sha256  # repacking gives the same version
    assert [p.name for p in target.parent.iterdir()] == ["version"]  # no scratch left


def test_unpack_from_a_path_leaves_an_existing_destination(package: Path, tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(pack_package(package).data)
    target = tmp_path / "version"
    target.mkdir()
    (target / "mine").write_text("keep")
    unpack_package(archive, target)
    assert [p.name for p in target.iterdir()] == ["mine"]


def test_concurrent_unpacks_to_one_destination(package: Path, tmp_path: Path) -> None:
    data = pack_package(package).data
    target = tmp_path / "versions" / "v1"
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work() -> None:
        try:
            barrier.wait()
            unpack_package(data, target)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert files(target) == files(package)
    assert [p.name for p in target.parent.iterdir()] == ["v1"]


def malicious(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        ok = tarfile.TarInfo("cog.yaml")
        ok.size = 3
        tar.addfile(ok, io.BytesIO(b"x: 1"))
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        payload = b"pwned"
        info.size = len(payload) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(payload) if kind == tarfile.REGTYPE else None)
    return buffer.getvalue()


@pytest.mark.parametrize(("name", "kind", "linkname"), [
    ("../escaped.txt", tarfile.REGTYPE, ""),
    ("lib/../../escaped.txt", tarfile.REGTYPE, ""),
    ("/tmp/escaped.txt", tarfile.REGTYPE, ""),
    ("link", tarfile.SYMTYPE, "../../escaped.txt"),
    ("hard", tarfile.LNKTYPE, "/etc/passwd"),
])
def test_unpack_refuses_paths_leaving_the_destination(
    tmp_path: Path, name: str, kind: bytes, linkname: str
) -> None:
    target = tmp_path / "a" / "b" / "version"
    with pytest.raises(PackageError, match="unsafe archive"):
        unpack_package(malicious(name, kind, linkname), target)
    assert not target.exists()
    assert not (tmp_path / "a" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the scratch folder is gone


def test_unpack_refuses_what_is_not_an_archive(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="not a package archive"):
        unpack_package(b"not gzip at all", tmp_path / "v")
    with pytest.raises(PackageError, match="not a package archive"):
        unpack_package(pack_package(HELLO).data[:-40], tmp_path / "v")
    assert not (tmp_path / "v").exists()


def test_unpack_size_limit(package: Path, tmp_path: Path) -> None:
    data = pack_package(package).data
    with pytest.raises(PackageError, match="more than"):
        unpack_package(data, tmp_path / "v", limit=10)
    assert not (tmp_path / "v").exists()
