"""The real `modelyard` command, run as a subprocess on the fixtures of tests/fixtures/."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LIMIT = 120  # seconds any one command may take (an environment is built at most once)


def modelyard_command() -> list[str]:
    script = Path(sys.executable).with_name("modelyard")
    if script.exists():
        return [str(script)]
    found = shutil.which("modelyard")
    assert found, "the modelyard command is not installed (pip install -e .)"
    return [found]


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*modelyard_command(), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        cwd=cwd,
        check=False,
    )


def predict_json(*args: str | Path, cwd: Path | None = None) -> dict:
    proc = run("predict", *args, "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit code 1, and stderr is exactly one line `Error: ...` holding every fragment."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.fixture
def package(tmp_path: Path):
    """Write a package folder from `{file: text}` and return it."""

    def write(files: dict[str, str]) -> Path:
        folder = tmp_path / "pkg"
        folder.mkdir(exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text)
        return folder

    return write


# --- predict --------------------------------------------------------------------------------


def test_predict_with_inputs_prints_the_output(tmp_path: Path) -> None:
    proc = run("predict", FIXTURES / "output_str", "-i", "name=cli", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello cli\n"


def test_predict_json_document(tmp_path: Path) -> None:
    result = predict_json(
        FIXTURES / "input_scalars",
        "-i", "text=a b=c", "-i", "count=3", "-i", "ratio=2.5", "-i", "flag=yes",
        cwd=tmp_path,
    )
    assert result["status"] == "succeeded"
    assert result["error"] is None
    assert result["output"] == {
        "text": "a b=c", "count": 3, "ratio": 2.5, "flag": True,
        "types": ["str", "int", "float", "bool"],
    }
    assert isinstance(result["metrics"]["predict_time"], float)


def test_list_inputs_repeat_the_option(tmp_path: Path) -> None:
    result = predict_json(
        FIXTURES / "input_lists", "-i", "names=x", "-i", "names=y", "-i", "numbers=5", cwd=tmp_path
    )
    assert result["output"] == {"joined": "x,y", "total": 5, "types": ["int", "str"]}


def test_logs_and_metrics_in_json(tmp_path: Path) -> None:
    result = predict_json(FIXTURES / "metrics", "-i", "tokens=2", cwd=tmp_path)
    assert result["metrics"]["token_count"] == 2
    assert result["metrics"]["timing"] == {"encode": {"ms": 12}, "decode": {"ms": 34}}
    logs = predict_json(FIXTURES / "logs_subprocess", "-i", "word=zz", cwd=tmp_path)["logs"]
    assert "subprocess says zz" in logs and "child python says zz" in logs


@pytest.mark.parametrize(("fixture", "name", "expected"), [
    ("input_path", "document", "file text\n"),
    ("input_file", "blob", "FILE TEXT\n"),
])
def test_at_file_input(tmp_path: Path, fixture: str, name: str, expected: str) -> None:
    source = tmp_path / "in put.txt"
    source.write_text("file text\n")
    result = predict_json(FIXTURES / fixture, "-i", f"{name}=@{source}", cwd=tmp_path)
    assert result["status"] == "succeeded"
    assert result["output"] == expected


def test_data_uri_input_is_passed_as_is(tmp_path: Path) -> None:
    result = predict_json(FIXTURES / "input_path", "-i", "document=data:text/plain,from%20a%20URI", cwd=tmp_path)
    assert result["output"] == "from a URI"


def test_at_file_relative_to_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "doc.txt").write_text("relative")
    result = predict_json(FIXTURES / "input_path", "-i", "document=@doc.txt", cwd=tmp_path)
    assert result["output"] == "relative"


def test_single_file_output_is_written_to_output_ext(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = run("predict", FIXTURES / "output_path", "-i", "text=payload", "-o", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["output.txt"]
    assert (out / "output.txt").read_text() == "payload"
    assert f"Written output to {out / 'output.txt'}" in proc.stderr


def test_list_file_outputs_are_numbered(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = predict_json(FIXTURES / "output_list_path", "-i", "n=3", "-o", out, cwd=tmp_path)
    names = ["output.0.txt", "output.1.txt", "output.2.txt"]
    assert sorted(p.name for p in out.iterdir()) == names
    assert [(out / n).read_text() for n in names] == ["part 0", "part 1", "part 2"]
    assert result["output"] == [str(out / n) for n in names]


def test_streamed_file_outputs_are_numbered(tmp_path: Path) -> None:
    proc = run("predict", FIXTURES / "output_iterator_path", "-i", "frames=2", "-o", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "output.0.txt").read_text() == "frame 0"
    assert (tmp_path / "output.1.txt").read_text() == "frame 1"


def test_output_dir_that_does_not_exist(tmp_path: Path) -> None:
    out = tmp_path / "new" / "folder"
    proc = run("predict", FIXTURES / "output_path", "-i", "text=made", "-o", out, cwd=tmp_path)
    assert "Traceback" not in proc.stderr
    if proc.returncode == 0:  # created, as `mkdir -p` would
        assert (out / "output.txt").read_text() == "made"
    else:  # or refused in one line
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines()[-1].startswith("Error: ")


def test_file_object_output(tmp_path: Path) -> None:
    proc = run("predict", FIXTURES / "output_filelike", "-i", "text=handle", "-o", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "output.txt").read_text() == "handle"


def test_streaming_output_appears_before_the_process_ends(tmp_path: Path) -> None:
    """The model yields one item, then waits for a file this test creates only after reading
    that item from the command's stdout: the item must be printed while the model still runs."""
    gate = tmp_path / "gate"
    proc = subprocess.Popen(
        [*modelyard_command(), "predict", str(FIXTURES / "output_iterator"),
         "-i", "n=3", "-i", f"gate={gate}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first == "item 0\n"
        assert proc.poll() is None  # still running: the model is waiting for the gate
        gate.touch()
        rest, errors = proc.communicate(timeout=LIMIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, errors
    assert rest == "item 1\nitem 2\n"
    assert "yielding 0" in errors  # logs go to stderr


def test_concatenate_iterator_prints_one_line(tmp_path: Path) -> None:
    proc = run("predict", FIXTURES / "output_concat", "-i", "prompt=a b c", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "a b c \n"


def test_train_writes_its_weights(tmp_path: Path) -> None:
    proc = run("train", FIXTURES / "train_function", "-i", "steps=4", "--json", "-o", tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["output"] == {"weights": str(tmp_path / "output.weights.txt"), "steps": 4}
    assert (tmp_path / "output.weights.txt").read_text() == "tok:4"


def test_weights_option_reaches_setup(tmp_path: Path) -> None:
    result = predict_json(FIXTURES / "setup_weights", "--weights", "/w/x.bin", cwd=tmp_path)
    assert result["output"] == "weights=Path:/w/x.bin"


# --- failures of the prediction ---------------------------------------------------------------


def test_failed_prediction_exits_1_with_the_error(tmp_path: Path) -> None:
    proc = run("predict", FIXTURES / "predict_error", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "Error: prediction failed: this is a value error"
    assert "modelyard/cli" not in proc.stderr  # the model's traceback is in its logs, not ours


def test_failed_prediction_json_still_prints_the_document(tmp_path: Path) -> None:
    proc = run("predict", FIXTURES / "predict_error", "--json", cwd=tmp_path)
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert result["status"] == "failed"
    assert result["error"] == "this is a value error"
    assert "about to fail" in result["logs"]


def test_timeout_option(tmp_path: Path) -> None:
    proc = run("predict", FIXTURES / "cancel_sync", "-i", "seconds=60", "--timeout", "0.5", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "Error: prediction failed: Prediction timed out after 0.5 seconds"
    )


def test_interrupt_cancels_the_prediction(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*modelyard_command(), "predict", str(FIXTURES / "cancel_sync"), "-i", "seconds=60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.strip() == "started":
                break
        else:
            raise AssertionError("the model never started")
        proc.send_signal(signal.SIGINT)
        out, errors = proc.communicate(timeout=LIMIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert "got CancelationException" in errors
    assert errors.strip().splitlines()[-1] == "Error: prediction canceled"
    assert "Traceback" not in errors


@pytest.mark.parametrize(("fixture", "options", "error"), [
    ("setup_failure", [], "weights file is corrupt"),
    ("setup_slow", ["--setup-timeout", "2"], "setup timed out after 2 seconds"),
])
def test_setup_failure_is_one_error_line(
    tmp_path: Path, fixture: str, options: list[str], error: str
) -> None:
    proc = run("predict", FIXTURES / fixture, *options, cwd=tmp_path)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and error in last
    assert "modelyard.runtime" not in proc.stderr and "modelyard/cli" not in proc.stderr


# --- malformed input: one line, exit 1, nothing started ----------------------------------------


@pytest.mark.parametrize(("args", "fragments"), [
    (["-i", "count"], ["-i 'count'", "expected name=value"]),
    (["-i", "=3"], ["expected name=value"]),
    (["-i", "count=x"], ["-i count", "'x'", "integer"]),
    (["-i", "ratio=fast"], ["-i ratio", "'fast'", "number"]),
    (["-i", "flag=maybe"], ["-i flag", "'maybe'"]),
    (["-i", "text=a", "-i", "text=b"], ["-i text", "more than once"]),
])
def test_malformed_input_option(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    proc = run("predict", FIXTURES / "input_scalars", *args, cwd=tmp_path)
    assert_one_line_error(proc, *fragments)


def test_missing_required_input(tmp_path: Path) -> None:
    proc = run("predict", FIXTURES / "constraints_numeric", cwd=tmp_path)
    assert_one_line_error(proc, "invalid input", "steps", "Field required")


def test_constraint_violation(tmp_path: Path) -> None:
    proc = run("predict", FIXTURES / "constraints_numeric", "-i", "steps=11", "-i", "temperature=-1", cwd=tmp_path)
    assert_one_line_error(
        proc, "steps: 11 is greater than the maximum of 10", "temperature: -1.0 is less than the minimum of 0"
    )


def test_invalid_choice(tmp_path: Path) -> None:
    proc = run("predict", FIXTURES / "choices", "-i", "scheduler=plms", cwd=tmp_path)
    assert_one_line_error(proc, "scheduler", "'plms' is not one of")


def test_missing_at_file(tmp_path: Path) -> None:
    proc = run("predict", FIXTURES / "input_path", "-i", "document=@nowhere.txt", cwd=tmp_path)
    assert_one_line_error(proc, "-i document", "no such file", "nowhere.txt")


def test_unknown_model_folder(tmp_path: Path) -> None:
    proc = run("predict", tmp_path / "no-such-model", cwd=tmp_path)
    assert_one_line_error(proc, "no-such-model")


def test_folder_without_cog_yaml(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run("predict", empty, cwd=tmp_path), "cog.yaml")


@pytest.mark.parametrize(("files", "fragments"), [
    ({"cog.yaml": 'build:\n  python_version: "3.11"\nbulid: {}\npredict: "predict.py:Predictor"\n',
      "predict.py": "class Predictor:\n    def predict(self) -> str:\n        return ''\n"},
     ["cog.yaml", "bulid"]),
    ({"cog.yaml": 'build:\n  python_version: "3.11"\npredict: "nowhere.py:Predictor"\n'},
     ["cog.yaml", "nowhere.py"]),
    ({"cog.yaml": "build: [unclosed\n"}, ["cog.yaml"]),
    ({"cog.yaml": 'build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n',
      "predict.py": "class Predictor:\n    def predict(self) -> str\n        return ''\n"},
     ["predict.py"]),
])
def test_bad_package(package, tmp_path: Path, files: dict[str, str], fragments: list[str]) -> None:
    assert_one_line_error(run("predict", package(files), cwd=tmp_path), *fragments)


def test_schema_of_a_bad_package(package, tmp_path: Path) -> None:
    folder = package({"cog.yaml": 'build:\n  python_version: "3.11"\npredict: "nowhere.py:Predictor"\n'})
    assert_one_line_error(run("schema", folder, cwd=tmp_path), "cog.yaml", "nowhere.py")
    assert_one_line_error(run("schema", tmp_path / "missing", cwd=tmp_path), "missing")


def test_train_without_train_entry(tmp_path: Path) -> None:
    assert_one_line_error(run("train", FIXTURES / "output_str", cwd=tmp_path), "'train:'")


# --- schema ---------------------------------------------------------------------------------


def test_schema_prints_the_openapi_document(tmp_path: Path) -> None:
    proc = run("schema", FIXTURES / "choices", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["openapi"].startswith("3.")
    schemas = document["components"]["schemas"]
    assert list(schemas["Input"]["properties"]) == ["scheduler", "steps"]
    assert schemas["scheduler"]["enum"] == ["ddim", "euler", "k_lms"]
    assert schemas["steps"]["enum"] == [10, 20, 50]
    assert schemas["Output"]["type"] == "string"


def test_schema_of_a_training_package(tmp_path: Path) -> None:
    document = json.loads(run("schema", FIXTURES / "train_function", cwd=tmp_path).stdout)
    schemas = document["components"]["schemas"]
    assert "TrainingInput" in schemas and "TrainingOutput" in schemas
    assert "/trainings" in document["paths"]


# --- file inputs that cannot be fetched: one line, exit 1, nothing started ---------------------


@pytest.mark.parametrize(("url", "error"), [
    ("http://127.0.0.1:99999/x", "OverflowError: connect(): port must be 0-65535."),
    ("http://[::1/x", "ValueError: Invalid IPv6 URL"),
])
def test_unfetchable_url_input(tmp_path: Path, url: str, error: str) -> None:
    proc = run("predict", FIXTURES / "input_path", "-i", f"document={url}", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == f"Error: input 'document': fetching {url} failed: {error}\n"
    assert proc.stdout == ""


# --- removed cog.yaml keys: a warning each --------------------------------------------------

REMOVED_KEYS_YAML = (
    'build:\n  python_version: "3.11"\n  fast: true\n  cog_runtime: true\n'
    'predict: "predict.py:Predictor"\ntests: []\n'
)
REMOVED_KEYS_WARNINGS = [
    "warning: cog.yaml: 'build.cog_runtime' is no longer used by Cog and is ignored",
    "warning: cog.yaml: 'build.fast' is no longer used by Cog and is ignored",
    "warning: cog.yaml: 'tests' is no longer used by Cog and is ignored",
]


def test_schema_warns_about_removed_keys(package, tmp_path: Path) -> None:
    folder = package({
        "cog.yaml": REMOVED_KEYS_YAML,
        "predict.py": "class Predictor:\n    def predict(self) -> str:\n        return 'ok'\n",
    })
    proc = run("schema", folder, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == REMOVED_KEYS_WARNINGS
    assert json.loads(proc.stdout)["components"]["schemas"]["Output"]["type"] == "string"


def test_predict_warns_about_removed_keys(package, tmp_path: Path) -> None:
    folder = package({
        "cog.yaml": REMOVED_KEYS_YAML,
        "predict.py": (
            "from cog import BasePredictor\n\n\nclass Predictor(BasePredictor):\n"
            "    def predict(self) -> str:\n        return 'ok'\n"
        ),
    })
    proc = run("predict", folder, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok\n"
    assert proc.stderr.splitlines()[:3] == REMOVED_KEYS_WARNINGS


# --- interrupts -------------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """Processes whose parent is `pid` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def worker_of(proc: subprocess.Popen[str], fixture: str) -> int:
    """The pid of the worker `modelyard predict` started for `fixture` (its child, in the fixture)."""
    for pid in children_of(proc.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            cwd = Path(f"/proc/{pid}/cwd").resolve()
        except OSError:
            continue
        if b"modelyard_worker" in cmdline and cwd == (FIXTURES / fixture).resolve():
            return pid
    raise AssertionError(f"no worker process for {fixture}: {children_of(proc.pid)}")


def start_predict(fixture: str, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*modelyard_command(), "predict", str(FIXTURES / fixture), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )


def wait_for_line(proc: subprocess.Popen[str], text: str) -> list[str]:
    """Read stderr until a line equal to `text`; returns the lines read."""
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.strip() == text:
            return lines
    raise AssertionError(f"never printed {text!r}: {''.join(lines)}")


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=LIMIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def assert_stopped_by_interrupt(
    proc: subprocess.Popen[str], out: str, errors: str, worker: int
) -> None:
    """Exit 130 with one `Error: interrupted` line, nothing printed, and no worker left behind."""
    assert proc.returncode == 130, errors
    assert errors.strip().splitlines()[-1] == "Error: interrupted"
    assert "Traceback" not in errors
    assert out == ""
    assert not is_running(worker)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_during_setup_stops_the_worker(tmp_path: Path, signum: int) -> None:
    proc = start_predict("setup_slow", tmp_path)
    try:
        wait_for_line(proc, "setup is slow")
        worker = worker_of(proc, "setup_slow")
        proc.send_signal(signum)
        out, errors = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_stopped_by_interrupt(proc, out, errors, worker)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_second_interrupt_stops_a_model_that_ignores_the_cancel(
    tmp_path: Path, signum: int
) -> None:
    proc = start_predict("cancel_ignored", tmp_path, "-i", "seconds=60")
    try:
        wait_for_line(proc, "started")
        worker = worker_of(proc, "cancel_ignored")
        proc.send_signal(signum)
        wait_for_line(proc, "ignoring the cancel")
        proc.send_signal(signum)
        out, errors = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_stopped_by_interrupt(proc, out, errors, worker)


def test_sigterm_cancels_the_prediction(tmp_path: Path) -> None:
    proc = start_predict("cancel_sync", tmp_path, "-i", "seconds=60")
    try:
        wait_for_line(proc, "started")
        proc.send_signal(signal.SIGTERM)
        _, errors = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert "got CancelationException" in errors
    assert errors.strip().splitlines()[-1] == "Error: prediction canceled"
