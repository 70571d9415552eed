"""Environment builder: real uv builds into one temporary cache shared by the whole module."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from modelyard.runtime import environment as envmod
from modelyard.runtime import pipconfig, pythons, sandbox, sysdeps
from modelyard.runtime.environment import (
    DEFAULT_COG_SDK,
    Environment,
    EnvironmentBuilder,
    EnvironmentBuildError,
    EnvironmentSpec,
    spec_from_config,
)

SIX = ("six==1.16.0",)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("envs")


@pytest.fixture(scope="module")
def builder(cache_dir) -> EnvironmentBuilder:
    return EnvironmentBuilder(cache_dir)


@pytest.fixture
def pkg(tmp_path) -> Path:
    d = tmp_path / "pkg"
    d.mkdir()
    return d


class Recorder(list):
    def __call__(self, line: str) -> None:
        self.append(line)

    def has(self, text: str) -> bool:
        return any(text in line for line in self)


def run_in(env: Environment, code: str) -> str:
    proc = subprocess.run(
        [str(env.python), "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def make_wheel(path: Path, module_source: str) -> Path:
    """A minimal pure-Python wheel for project ``tinymod`` 0.1 at ``path``."""
    files = {
        "tinymod.py": module_source.encode(),
        "tinymod-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinymod\nVersion: 0.1\n",
        "tinymod-0.1.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: modelyard-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("tinymod-0.1.dist-info/RECORD,,")
    files["tinymod-0.1.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


# --------------------------------------------------------------------------- real builds


def test_build_small_package_imports_inside_env(builder, cache_dir, pkg):
    progress = Recorder()
    env = builder.ensure(EnvironmentSpec(requirements=SIX), pkg, progress)

    assert env.path.parent == cache_dir and env.path.name == env.key
    assert env.python == env.path / "bin" / "python"
    host = "{}.{}".format(*sys.version_info[:2])
    assert env.python_version.startswith(host + ".")  # no python_version → the host's minor
    assert run_in(env, "import six, cog, sys; print(six.__version__, sys.prefix)") == (
        f"1.16.0 {env.path}"
    )
    assert (
        run_in(env, "import importlib.metadata as m; print(m.version('cog'))")
        == (DEFAULT_COG_SDK.split("==")[1])
    )
    # phase lines and uv's own output, streamed through the callback
    assert progress.has(f"Creating environment (Python {env.python_version})")
    assert progress.has("Installing 1 requirement")
    assert progress.has("+ six==1.16.0")
    assert progress.has(f"Installing {DEFAULT_COG_SDK}")
    assert (env.path / envmod.MARKER).is_file()


def test_same_spec_twice_is_reused(builder, pkg):
    spec = EnvironmentSpec(requirements=SIX)
    first = builder.ensure(spec, pkg)
    marker = first.path / envmod.MARKER
    mtime = marker.stat().st_mtime_ns

    progress = Recorder()
    second = builder.ensure(EnvironmentSpec(requirements=list(SIX)), pkg, progress)
    assert second == first
    assert marker.stat().st_mtime_ns == mtime
    assert progress.has(f"Using environment {first.key}")
    assert not progress.has("Creating environment") and not progress.has("Installing")
    assert builder.lookup(spec) == first


def test_same_requirements_in_other_package_dir_share_the_environment(builder, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    spec = EnvironmentSpec(requirements=SIX, environment={"SOME_VAR": "x"})
    assert (
        builder.key(spec, a)
        == builder.key(spec, b)
        == builder.key(EnvironmentSpec(requirements=SIX))
    )
    progress = Recorder()
    env = builder.ensure(spec, b, progress)  # built by the first test from another package dir
    assert not progress.has("Creating environment")
    assert builder.lookup(spec, a) == env


def test_different_inputs_give_different_keys(builder):
    base = EnvironmentSpec(requirements=SIX)
    k = builder.key(base)
    others = [
        EnvironmentSpec(requirements=("six==1.15.0",)),
        EnvironmentSpec(requirements=SIX, cog_sdk="cog==0.16.12"),
        EnvironmentSpec(requirements=SIX, run_commands=("echo hi",)),
        EnvironmentSpec(requirements=SIX, pre_install=("echo hi",)),
        EnvironmentSpec(requirements=SIX, system_packages=("coreutils",)),
        EnvironmentSpec(requirements=SIX, environment={"PIP_INDEX_URL": "http://x/simple"}),
        EnvironmentSpec(requirements=SIX, python_version="3.12"),
    ]
    keys = [builder.key(s) for s in others]
    assert k not in keys and len(set(keys)) == len(keys)
    # comments and blank lines are not dependencies
    assert builder.key(EnvironmentSpec(requirements=("# deps", "", "six==1.16.0  # pinned"))) == k
    assert builder.lookup(others[0]) is None


def test_local_wheel_is_installed_and_its_content_is_in_the_key(builder, tmp_path):
    a, b, c = (tmp_path / n for n in "abc")
    line = "./wheels/tinymod-0.1-py3-none-any.whl"
    make_wheel(a / line, "VALUE = 'from a'\n")
    make_wheel(b / line, "VALUE = 'from a'\n")
    make_wheel(c / line, "VALUE = 'from c'\n")

    config = SimpleNamespace(package_dir=a, requirements=(line,), python_version=None)
    spec = spec_from_config(config)
    assert [p for p, _ in spec.local_files] == [line]
    assert builder.key(spec, a) == builder.key(spec, b)  # same bytes elsewhere → same env
    assert builder.key(spec, a) != builder.key(spec, c)  # other bytes → other env

    env = builder.ensure(spec, c)
    assert run_in(env, "import tinymod; print(tinymod.VALUE)") == "from c"


def test_failing_requirement_raises_with_uvs_error(builder, pkg):
    spec = EnvironmentSpec(requirements=("modelyard-no-such-package-4242==1.0",))
    with pytest.raises(EnvironmentBuildError) as info:
        builder.ensure(spec, pkg)
    err = info.value
    text = str(err)
    first = text.splitlines()[0]
    assert first.startswith("Could not install the model's requirements")
    assert "modelyard-no-such-package-4242" in text
    assert "No solution found" in text or "not found in the package registr" in text
    assert 0 < len(err.log_tail) <= envmod.LOG_TAIL_LINES
    assert err.log_path is not None and err.log_path.is_file()
    assert builder.lookup(spec) is None
    assert not builder.environment_for(spec).path.exists()  # no half-built leftovers


def test_run_commands_run_in_package_dir_with_env_first_on_path(builder, pkg):
    spec = EnvironmentSpec(
        requirements=SIX,
        run_commands=(
            "python -c \"import sys, six; open('ran.txt', 'w').write(sys.prefix)\"",
            "pip --version > pip.txt",
            'echo "$MY_BUILD_VAR" > var.txt',
        ),
        environment={"MY_BUILD_VAR": "hello-from-cog-yaml"},
    )
    progress = Recorder()
    env = builder.ensure(spec, pkg, progress)
    assert (pkg / "ran.txt").read_text() == str(env.path)
    assert str(env.path) in (pkg / "pip.txt").read_text()
    assert (pkg / "var.txt").read_text().strip() == "hello-from-cog-yaml"
    assert progress.has("Running build.run: pip --version > pip.txt")


def test_build_commands_run_in_the_sandbox(builder, pkg, tmp_path, monkeypatch):
    """Issue 13: `build.run` is the model's code as much as `predict`: it sees neither the
    server's files (a canary beside the package) nor its variables, and still writes its package
    and its environment, as in Cog's image build."""
    if sandbox.unavailable_reason() is not None:
        pytest.skip(f"no sandbox here: {sandbox.unavailable_reason()}")
    canary = tmp_path / "canary.txt"
    canary.write_text("the server's secret")
    monkeypatch.setenv("MODELYARD_TEST_SECRET", "s3cr3t-variable")
    spec = EnvironmentSpec(
        requirements=SIX,
        run_commands=(
            f"cat {canary} > seen.txt 2>&1 || echo refused >> seen.txt",
            "env > env.txt",
            'touch "$VIRTUAL_ENV/written-by-build"',
        ),
    )
    env = builder.ensure(spec, pkg, Recorder())
    seen = (pkg / "seen.txt").read_text()
    assert "the server's secret" not in seen and "refused" in seen
    assert "s3cr3t-variable" not in (pkg / "env.txt").read_text()
    assert (env.path / "written-by-build").is_file()


def test_failing_run_command_names_the_command(builder, pkg):
    spec = EnvironmentSpec(
        requirements=SIX, run_commands=("true", "echo boom-output; exit 3", "echo never")
    )
    with pytest.raises(EnvironmentBuildError) as info:
        builder.ensure(spec, pkg)
    first = str(info.value).splitlines()[0]
    assert "build.run" in first and "echo boom-output; exit 3" in first and "status 3" in first
    assert "boom-output" in info.value.log_tail
    assert builder.lookup(spec) is None


def test_missing_python_version_uses_nearest_with_a_warning(builder, pkg):
    expected, warning = pythons.choose_python("3.9")
    assert warning is not None
    progress = Recorder()
    env = builder.ensure(EnvironmentSpec(python_version="3.9", requirements=SIX), pkg, progress)
    assert (
        progress[0] == "warning: Python 3.9 is not supported (Modelyard needs 3.10 or newer); "
        f"using {expected.version}"
    )
    assert env.python_version == expected.version
    assert (
        run_in(env, "import sys, six; print('%d.%d.%d' % sys.version_info[:3])") == expected.version
    )


def test_concurrent_builds_in_two_processes_build_once_then_half_built_is_rebuilt(
    builder, cache_dir, tmp_path
):
    script = textwrap.dedent(
        """
        import sys
        from modelyard.runtime.environment import EnvironmentBuilder, EnvironmentSpec
        lines = []
        env = EnvironmentBuilder(sys.argv[1]).ensure(
            EnvironmentSpec(requirements=("six==1.15.0",)), sys.argv[2], lines.append)
        print("PATH=" + str(env.path))
        print("\\n".join(lines))
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(cache_dir), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = []
    for p in procs:
        out, errs = p.communicate(timeout=300)
        assert p.returncode == 0, errs
        outs.append(out)
    paths = {line for out in outs for line in out.splitlines() if line.startswith("PATH=")}
    assert len(paths) == 1
    assert sum(out.count("Creating environment") for out in outs) == 1
    assert sum(out.count("Using environment") for out in outs) == 1

    # a build that died half-way (no marker) is removed and rebuilt
    spec = EnvironmentSpec(requirements=("six==1.15.0",))
    env = builder.lookup(spec)
    assert env is not None
    (env.path / envmod.MARKER).unlink()
    (env.path / "junk").write_text("left by a crashed build")
    assert builder.lookup(spec) is None
    progress = Recorder()
    assert builder.ensure(spec, tmp_path, progress) == env
    assert progress.has(f"Removing incomplete environment {env.key}")
    assert progress.has("Creating environment") and not (env.path / "junk").exists()
    assert run_in(env, "import six; print(six.__version__)") == "1.15.0"


# --------------------------------------------------------------------------- system packages


needs_dpkg = pytest.mark.skipif(not sysdeps.dpkg_available(), reason="no dpkg-query here")


@needs_dpkg
def test_dpkg_query_status():
    assert sysdeps.missing_packages(["coreutils", "modelyard-no-such-package", "coreutils"]) == [
        "modelyard-no-such-package"
    ]


@needs_dpkg
def test_missing_system_package_not_root_is_a_clear_error(builder, pkg, monkeypatch):
    monkeypatch.setattr(sysdeps, "is_root", lambda: False)
    spec = EnvironmentSpec(system_packages=("coreutils", "modelyard-no-such-package"))
    with pytest.raises(EnvironmentBuildError) as info:
        builder.ensure(spec, pkg)
    first = str(info.value).splitlines()[0]
    assert first.startswith("Missing system packages: modelyard-no-such-package.")
    assert first.endswith("Install them with: sudo apt-get install -y modelyard-no-such-package")
    assert "coreutils" not in first
    assert not builder.environment_for(spec).path.exists()


@needs_dpkg
@pytest.mark.skipif(not sysdeps.is_root(), reason="apt-get install needs root")
def test_missing_system_package_as_root_apt_failure_is_a_clear_error(builder, pkg, monkeypatch):
    monkeypatch.setattr(sysdeps, "apt_lists_stale", lambda *a: False)  # no apt-get update
    spec = EnvironmentSpec(system_packages=("modelyard-no-such-package",))
    progress = Recorder()
    with pytest.raises(EnvironmentBuildError) as info:
        builder.ensure(spec, pkg, progress)
    first = str(info.value).splitlines()[0]
    assert first.startswith("Could not install system packages modelyard-no-such-package")
    assert "Unable to locate package modelyard-no-such-package" in str(info.value)
    assert progress.has("Installing system packages: modelyard-no-such-package")


# --------------------------------------------------------------------------- torch on CPU


def test_unpinned_torch_resolves_to_the_local_cpu_wheel(builder):
    host = pythons.choose_python(None)[0]
    local = envmod.local_torch_cpu_wheels(builder.pip_settings.local_find_links_dirs(), host)
    if not local:
        pytest.skip("no local CPU torch wheel in pip's find-links for this Python")
    for requirement in ("torch", "torch>=2"):
        pinned = builder.compile(EnvironmentSpec(requirements=(requirement,)))
        assert f"torch=={local[-1]}" in pinned, pinned
        assert not [line for line in pinned if line.startswith("nvidia-")], pinned
        assert any(line.startswith("cog==") for line in pinned)


def test_torch_pin_rules(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    tag = "cp{}{}".format(*sys.version_info[:2])
    (wheels / f"torch-2.13.0+cpu-{tag}-{tag}-manylinux_2_28_x86_64.whl").write_bytes(b"")
    (wheels / f"torch-2.14.0+cu121-{tag}-{tag}-manylinux_2_28_x86_64.whl").write_bytes(b"")
    (wheels / "torch-2.15.0+cpu-cp39-cp39-manylinux_2_28_x86_64.whl").write_bytes(b"")
    settings = pipconfig.PipSettings(find_links=(str(wheels),))
    host = pythons.PythonInstall(tuple(sys.version_info[:3]), Path(sys.executable))
    if os.uname().machine != "x86_64":
        pytest.skip("wheel names above are for x86_64")

    def plan(reqs, gpu=False, has_gpu=False):
        b = EnvironmentBuilder(
            tmp_path / "c", pip_settings=settings, interpreters=(host,), has_gpu=has_gpu
        )
        return b.plan(EnvironmentSpec(requirements=reqs, gpu=gpu))

    assert plan(()).torch_pin == "torch==2.13.0+cpu"  # transitive torch is covered too
    assert plan(("torch>=2",)).torch_pin == "torch==2.13.0+cpu"
    assert plan(("torch==2.13.0",)).torch_pin == "torch==2.13.0+cpu"
    assert plan(("torch",), gpu=True, has_gpu=True).torch_pin is None
    excluded = plan(("torch==2.1.0",))
    assert excluded.torch_pin is None and "excludes the local CPU build" in excluded.torch_warning
    assert plan(("torch==2.1.0",)).key != plan(("torch>=2",)).key


# --------------------------------------------------------------------------- pieces


def test_choose_python_matching_rules():
    def inst(v):
        return pythons.PythonInstall(v, Path(f"/py/{v[0]}.{v[1]}.{v[2]}"))

    avail = [
        inst((3, 8, 18)),
        inst((3, 10, 13)),
        inst((3, 11, 2)),
        inst((3, 11, 7)),
        inst((3, 13, 0)),
    ]
    assert pythons.choose_python("3.11.4", avail) == (avail[3], None)  # any 3.11; newest patch
    assert pythons.choose_python("3.10", avail) == (avail[1], None)
    best, warning = pythons.choose_python("3.12", avail)  # tie 3.11 / 3.13 → the older
    assert (
        best == avail[3] and warning == "warning: Python 3.12 is not available here; using 3.11.7"
    )
    best, warning = pythons.choose_python("3.8", avail)  # present, but older than supported
    assert best == avail[1] and warning.startswith("warning: Python 3.8 is not supported")
    assert pythons.choose_python("3.14", avail)[0] == avail[4]
    with pytest.raises(ValueError):
        pythons.choose_python("three", avail)
    with pytest.raises(LookupError):
        pythons.choose_python("3.11", [avail[0]])


def test_pip_config_is_read_like_pip(tmp_path):
    etc = tmp_path / "etc"
    (etc / "xdg" / "pip").mkdir(parents=True)
    home = tmp_path / "home"
    (home / ".config" / "pip").mkdir(parents=True)
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("torch<=2.14.1\n")
    (etc / "xdg" / "pip" / "pip.conf").write_text(
        f"[global]\nconstraint = {constraints} {tmp_path / 'missing.txt'}\n"
        "find-links = /global/wheels\nindex-url = https://mirror.example/simple\n"
    )
    (home / ".config" / "pip" / "pip.conf").write_text(
        "[global]\nfind_links = /user/wheels\n"
        "extra-index-url = file:///opt/a/simple\n    file:///opt/b/simple\n"
        "[install]\ntrusted-host = mirror.example\n"
    )
    environ = {
        "HOME": str(home),
        "XDG_CONFIG_DIRS": str(etc / "xdg"),
        "PIP_DEFAULT_TIMEOUT": "180",
    }
    s = pipconfig.read_pip_config(environ, prefix=str(tmp_path / "prefix"))
    assert s.find_links == ("/user/wheels",)  # user file overrides the global one, key by key
    assert s.extra_index_urls == ("file:///opt/a/simple", "file:///opt/b/simple")
    assert s.constraints == (constraints,)  # missing constraint files are skipped
    args = s.uv_args()
    assert args[args.index("--default-index") + 1] == "https://mirror.example/simple"
    assert (
        args.count("--extra-index-url") == 2
        and ["--find-links", "/user/wheels"]
        == args[args.index("--find-links") : args.index("--find-links") + 2]
    )
    assert ["--allow-insecure-host", "mirror.example"] == args[-2:]
    assert s.uv_env({})["UV_HTTP_TIMEOUT"] == "180"

    # environment variables win; PIP_CONFIG_FILE=/dev/null loads no extra file
    environ2 = dict(environ, PIP_FIND_LINKS="/env/wheels", PIP_CONFIG_FILE=os.devnull)
    assert pipconfig.read_pip_config(environ2, prefix=str(tmp_path)).find_links == ("/env/wheels",)


def test_spec_from_config_and_sdk_version(tmp_path):
    config = SimpleNamespace(
        package_dir=tmp_path,
        python_version="3.11",
        requirements=("six==1.16.0",),
        system_packages=("ffmpeg",),
        run_commands=("echo hi",),
        pre_install=(),
        environment={"A": "1"},
        sdk_version="0.16.12",
        gpu=True,
    )
    spec = spec_from_config(config)
    assert spec == EnvironmentSpec(
        python_version="3.11",
        requirements=("six==1.16.0",),
        system_packages=("ffmpeg",),
        run_commands=("echo hi",),
        environment={"A": "1"},
        cog_sdk="cog==0.16.12",
        gpu=True,
    )
    builder = EnvironmentBuilder(tmp_path / "envs")
    assert builder.key(config) == builder.key(spec)  # a CogConfig is accepted as a spec
    assert envmod.sdk_requirement(None) == DEFAULT_COG_SDK == "cog==0.23.1"
    assert envmod.sdk_requirement(">=0.17") == "cog>=0.17"


def test_error_message_is_one_line_then_the_tail():
    err = EnvironmentBuildError("Could not do it (exit status 1)", [f"line {i}" for i in range(3)])
    lines = str(err).splitlines()
    assert lines[0] == "Could not do it (exit status 1)"
    assert lines[1:] == ["  line 0", "  line 1", "  line 2"]


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELYARD_HOME", str(tmp_path))
    assert envmod.default_cache_dir() == tmp_path / "envs"
    assert EnvironmentBuilder().cache_dir == tmp_path / "envs"
    monkeypatch.delenv("MODELYARD_HOME")
    assert envmod.default_cache_dir() == Path.home() / ".cache" / "modelyard" / "envs"


def test_marker_records_what_was_built(builder, pkg):
    env = builder.ensure(EnvironmentSpec(requirements=SIX), pkg)
    doc = json.loads((env.path / envmod.MARKER).read_text())
    assert doc["key"] == env.key and doc["python_version"] == env.python_version
    assert "six==1.16.0" in doc["freeze"]
