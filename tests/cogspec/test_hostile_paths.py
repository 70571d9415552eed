"""Every file cog.yaml names must be inside the package, symlinks resolved, and one outside is
refused with the same words whether or not it exists (the answer tells nothing about the server).

Issue 13: `python_requirements: /etc/passwd` was accepted (its lines then shown in a prediction's
error) and `predict: "/etc/passwd:Predictor"` told whether a file exists.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelyard.cogspec.config import load_config
from modelyard.cogspec.errors import CogSpecError

PREDICTOR = "class Predictor:\n    def predict(self) -> str:\n        return 'hi'\n"


@pytest.fixture
def package(tmp_path: Path) -> Path:
    folder = tmp_path / "pkg"
    (folder / "sub").mkdir(parents=True)
    (folder / "predict.py").write_text(PREDICTOR)
    (folder / "requirements.txt").write_text("numpy\n")
    (tmp_path / "outside.py").write_text(PREDICTOR)
    (tmp_path / "outside.txt").write_text("secret-line\n")
    os.symlink(tmp_path / "outside.txt", folder / "link.txt")
    os.symlink(tmp_path / "outside.py", folder / "link.py")
    os.symlink(tmp_path, folder / "up")
    return folder


def error_of(package: Path, cog_yaml: str) -> str:
    (package / "cog.yaml").write_text(cog_yaml)
    with pytest.raises(CogSpecError) as excinfo:
        load_config(package)
    assert "secret-line" not in str(excinfo.value)
    return str(excinfo.value)


@pytest.mark.parametrize(
    "name",
    ["/etc/passwd", "/nonexistent/file", "../outside.txt", "../missing.txt", "link.txt",
     "up/outside.txt", "sub/../../outside.txt", "~/.bashrc"],
)  # fmt: skip
def test_python_requirements_outside_the_package(package: Path, name: str) -> None:
    error = error_of(
        package, f"predict: predict.py:Predictor\nbuild:\n  python_requirements: {name}\n"
    )
    if name.startswith("~"):  # a folder named "~" inside the package: simply missing
        assert error == f"cog.yaml:3: python_requirements file {name!r} not found"
        return
    assert error == (
        f"cog.yaml:3: 'build.python_requirements' must be a path inside the package (got {name!r})"
    )


@pytest.mark.parametrize("key", ["predict", "run", "train"])
@pytest.mark.parametrize(
    "file", ["/etc/passwd", "/etc/no-such-file", "../outside.py", "link.py", "up/outside.py"]
)
def test_predictor_references_outside_the_package(package: Path, key: str, file: str) -> None:
    ref = f"{file}:Predictor"
    head = "predict: predict.py:Predictor\n" if key == "train" else ""
    error = error_of(package, f'{head}{key}: "{ref}"\n')
    line = 2 if head else 1
    # The same words for a file that exists and one that does not.
    assert error == f"cog.yaml:{line}: {key!r} must name a file inside the package (got {ref!r})"


@pytest.mark.parametrize(
    "source", ["file:///etc/passwd", "/etc/passwd", "../outside.txt", "link.txt"]
)
def test_a_local_weights_source_outside_the_package(package: Path, source: str) -> None:
    cog_yaml = (
        "predict: predict.py:Predictor\nweights:\n  - name: w\n    target: /src/weights\n"
        f"    source:\n      uri: {source}\n"
    )
    assert error_of(package, cog_yaml) == (
        f"cog.yaml:6: 'weights[].source' must be a path inside the package or a URL "
        f"(got {source!r})"
    )


def test_paths_inside_the_package_are_read(package: Path) -> None:
    os.symlink("../requirements.txt", package / "sub" / "reqs.txt")
    os.symlink("../predict.py", package / "sub" / "entry.py")
    (package / "cog.yaml").write_text(
        "predict: sub/entry.py:Predictor\nbuild:\n  python_requirements: sub/../sub/reqs.txt\n"
        "weights:\n  - name: w\n    target: /src/w\n    source: {uri: 'hf://org/model'}\n"
        "  - name: v\n    target: /src/v\n    source: [{uri: 'file://sub/weights'}, sub/w2]\n"
    )
    config = load_config(package)
    assert config.requirements == ("numpy",)
    assert config.predictor is not None and config.predictor.name == "Predictor"


def test_a_cog_yaml_that_is_a_link_out_is_refused(package: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere.yaml").write_text("predict: predict.py:Predictor\n")
    os.symlink(tmp_path / "elsewhere.yaml", package / "cog.yaml")
    with pytest.raises(CogSpecError) as excinfo:
        load_config(package)
    assert str(excinfo.value) == "cog.yaml: must be a file inside the package, not a link out of it"
