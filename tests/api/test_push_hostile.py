"""Hostile pushes against the in-process API: each is refused with a 4xx problem+json naming what
is wrong, in a short body, and leaves nothing behind (no blob, no unpacked folder, no version).

Issue 13: YAML alias bombs (a 72 MB error body; one in `weights:` accepted), cog.yaml nested 10^5
deep and a 200,000-term predict.py (500s), `python_requirements: /etc/passwd` accepted, a tar bomb
left extracted, 100,000 entries accepted.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from test_inprocess import HeldBackend

from modelyard.platform import build_app
from modelyard.settings import Settings
from modelyard.store.accounts import ensure_admin

pytestmark = pytest.mark.asyncio(loop_scope="session")

PREDICT = (
    "from cog import BasePredictor\n\n\nclass Predictor(BasePredictor):\n"
    "    def predict(self) -> str:\n        return 'hi'\n"
)
COG_YAML = "predict: predict.py:Predictor\n"
MAX_ENTRIES = 50
MAX_EXPANDED = 4 << 20


@dataclass
class Api:
    client: httpx.AsyncClient
    data: Path

    async def push(self, archive: bytes, model: str = "admin/m") -> httpx.Response:
        return await self.client.post(f"/v1/models/{model}/versions", content=archive)

    async def refused(self, archive: bytes, status: int, model: str = "admin/m") -> str:
        """Push, expect `status` as problem+json, check nothing stayed; the detail."""
        answer = await self.push(archive, model)
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert len(answer.content) < 1500
        assert self.left() == []
        versions = await self.client.get(f"/v1/models/{model}/versions")
        assert versions.status_code == 404 or versions.json()["results"] == []
        return str(answer.json()["detail"])

    def left(self) -> list[str]:
        """Whatever a push left in blobs/ and packages/ (files, and folders in packages/)."""
        blobs = [p for p in (self.data / "blobs").rglob("*") if p.is_file()]
        packages = self.data / "packages"
        unpacked = list(packages.iterdir()) if packages.exists() else []
        return [str(p) for p in (*blobs, *unpacked)]


@pytest.fixture
def limits() -> dict[str, int]:
    """The server's package limits for the tests of a module (overridden in others)."""
    return {"package_max_entries": MAX_ENTRIES, "package_max_expanded": MAX_EXPANDED}


@pytest_asyncio.fixture(loop_scope="session")
async def api(tmp_path: Path, limits: dict[str, int]) -> AsyncIterator[Api]:
    settings = Settings(data_dir=tmp_path / "data", public_url="http://modelyard.test", **limits)
    app = build_app(settings, backend=HeldBackend())
    with app.state.platform.db.session() as session:
        issued = ensure_admin(session, "admin")
    assert issued is not None
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"Authorization": f"Bearer {issued.token}", "Content-Type": "application/gzip"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url=settings.public_url, headers=headers, timeout=120
        ) as client,
    ):
        yield Api(client, settings.data_dir)


def archive(
    files: dict[str, bytes | str], extra: list[tarfile.TarInfo] = (), level: int = 6
) -> bytes:  # type: ignore[assignment]
    """A gzip'd tar of `files` (name → content) and of the `extra` headers, as an attacker may
    make one (any type, any name, any size)."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=level) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return buffer.getvalue()


def package(cog_yaml: str = COG_YAML, **files: bytes | str) -> bytes:
    return archive({"cog.yaml": cog_yaml, "predict.py": PREDICT, **files})


# --- what cog.yaml and the source say ------------------------------------------------------

ALIASES = "".join(
    f"&{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "], " for i in range(6)
)
COMPLEX_KEY = f"? [&a [x,x,x,x,x,x,x,x,x,x], {ALIASES}[*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]]\n: 1\n"


@pytest.mark.parametrize(
    ("cog_yaml", "detail"),
    [
        (COG_YAML + COMPLEX_KEY, "cog.yaml:2: a mapping key must be a plain value"),
        (
            COG_YAML + "weights:\n  - name: &a w\n    target: *a\n    source: *a\n",
            "cog.yaml:3: YAML anchors and aliases",
        ),
        (COG_YAML + "environment: " + "[" * 100_000 + "]" * 100_000 + "\n",
         "cog.yaml:2: nested more than 32 levels deep"),
    ],
    ids=["alias-bomb-in-a-complex-key", "aliases-in-weights", "nested-10^5"],
)  # fmt: skip
async def test_hostile_cog_yaml(api: Api, cog_yaml: str, detail: str) -> None:
    got = await api.refused(package(cog_yaml), 422)
    assert got.startswith(f"The package is not a valid Cog package: {detail}")


async def test_a_200000_term_expression(api: Api) -> None:
    source = PREDICT + "X = " + "+".join(["1"] * 200_000) + "\n"
    got = await api.refused(package(**{"predict.py": source}), 422)
    assert got == (
        "The package is not a valid Cog package: predict.py: an expression or block is nested "
        "more than 200 levels deep"
    )


@pytest.mark.parametrize("name", ["/etc/passwd", "/etc/no-such-file", "../../secret.key"])
async def test_requirements_outside_the_package(api: Api, name: str) -> None:
    cog_yaml = f"{COG_YAML}build:\n  python_requirements: {name}\n"
    got = await api.refused(package(cog_yaml), 422)
    assert got == (
        "The package is not a valid Cog package: cog.yaml:3: 'build.python_requirements' must "
        f"be a path inside the package (got {name!r})"
    )


@pytest.mark.parametrize("file", ["/etc/passwd", "/etc/no-such-file"])
async def test_a_predictor_outside_the_package_reveals_nothing(api: Api, file: str) -> None:
    got = await api.refused(package(f'predict: "{file}:Predictor"\n'), 422)
    assert got == (
        "The package is not a valid Cog package: cog.yaml:1: 'predict' must name a file inside "
        f"the package (got '{file}:Predictor')"
    )


@pytest.mark.parametrize(
    "line", ["-r /etc/passwd", "--requirement=../../x.txt", "-e /", "./../wheels/x.whl",
             "pkg @ file:///etc/passwd"]
)  # fmt: skip
async def test_a_requirement_line_naming_a_path_outside(api: Api, line: str) -> None:
    cog_yaml = f"{COG_YAML}build:\n  python_requirements: requirements.txt\n"
    got = await api.refused(package(cog_yaml, **{"requirements.txt": f"numpy\n{line}\n"}), 422)
    assert got.startswith("The package is not a valid Cog package: requirements.txt: the ")
    assert got.endswith("must be a path inside the package")


# --- what the archive holds -----------------------------------------------------------------


async def test_more_entries_than_the_limit(api: Api) -> None:
    files = {f"f/{i}": "" for i in range(MAX_ENTRIES)}
    got = await api.refused(package(**files), 413)
    assert got == (
        f"The package is too large: the archive holds more than {MAX_ENTRIES} files and folders."
    )


async def test_more_bytes_than_the_limit(api: Api) -> None:
    import os

    got = await api.refused(package(big=os.urandom(MAX_EXPANDED)), 413)
    assert got == (
        "The package is too large: the archive expands to more than "
        f"{MAX_EXPANDED / 1e6:.1f} MB of files."
    )


def header(
    name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, **attrs: object
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


@pytest.mark.parametrize(
    ("member", "detail"),
    [
        (header("/tmp/abs.txt", size=1), "'/tmp/abs.txt' leaves the destination"),
        (header("a/../../up.txt", size=1), "'a/../../up.txt' leaves the destination"),
        (header("link", tarfile.SYMTYPE, linkname="/etc/passwd"), "'link' is neither"),
        (header("hard", tarfile.LNKTYPE, linkname="/etc/passwd"), "'hard' is neither"),
        (header("dev", tarfile.CHRTYPE, devmajor=1, devminor=3), "'dev' is neither"),
        (header("fifo", tarfile.FIFOTYPE), "'fifo' is neither"),
        (header("x" * 300, size=1), "is not a valid path"),
        (header("p", size=1, pax_headers={"comment": "c" * 100_000}), "a header record of"),
    ],
    ids=["absolute", "dotdot", "symlink", "hardlink", "device", "fifo", "long-name", "big-pax"],
)
async def test_unsafe_members(api: Api, member: tarfile.TarInfo, detail: str) -> None:
    bad = archive({"cog.yaml": COG_YAML, "predict.py": PREDICT}, [member])
    got = await api.refused(bad, 422)
    assert got.startswith("The package is not a valid Cog package: unsafe archive: ")
    assert detail in got


async def test_not_an_archive(api: Api) -> None:
    got = await api.refused(b"\x1f\x8b" + b"junk" * 100, 422)
    assert "not a package archive" in got


# --- refused after it was stored -------------------------------------------------------------


async def test_a_push_to_a_model_one_cannot_push_to_leaves_nothing(api: Api) -> None:
    """The admin never pushes into an account where the model does not exist: refused before
    the body is stored, saying how to create it."""
    got = await api.refused(package(), 404, model="ghost/m")
    assert got.startswith("The model ghost/m does not exist") and "POST /v1/models" in got


async def test_a_good_push_still_works_after_refusals(api: Api) -> None:
    await api.refused(package(COG_YAML + COMPLEX_KEY), 422)
    answer = await api.push(package())
    assert answer.status_code == 201, answer.text
    assert len(api.left()) == 2  # its blob and its unpacked folder
    again = await api.push(package())
    assert again.status_code == 200 and again.json()["id"] == answer.json()["id"]
