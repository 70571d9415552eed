"""cog.yaml parsing: the values, and one exact one-line error for each way it can be wrong."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.cogspec.config import CogConfig, PredictorRef, load_config, parse_ref
from modelyard.cogspec.errors import CogSpecError

Writer = Callable[[dict[str, str]], Path]
PREDICTOR = "class Predictor:\n    def predict(self) -> str:\n        return 'hi'\n"
TOP = "build, run, predict, train, image, model, concurrency, environment, weights"
BUILD = (
    "gpu, python_version, python_requirements, python_packages, system_packages, run, "
    "pre_install, cuda, cudnn, sdk_version"
)


def error_of(package: Path) -> str:
    with pytest.raises(CogSpecError) as excinfo:
        load_config(package)
    return str(excinfo.value)


def test_full_config(write_package: Writer) -> None:
    package = write_package(
        {
            "cog.yaml": """
                build:
                  gpu: true
                  python_version: 3.10
                  python_requirements: requirements.txt
                  system_packages:
                    - ffmpeg
                    - libgl1
                  pre_install:
                    - pip install -U pip
                  run:
                    - echo hello
                    - command: pip install private
                      mounts:
                        - type: secret
                          id: token
                          target: /run/secrets/token
                  cuda: "12.1"
                  cudnn: 8
                  sdk_version: "0.16.12"
                image: r8.im/someone/model
                model: registry.example/someone/model
                predict: "predict.py:Predictor"
                train: "train.py:train"
                concurrency:
                  max: 4
                  default_target: 2
                environment:
                  - HF_HOME=/src/cache
                  - EXPR=a=b
                  - EMPTY=
            """,
            "requirements.txt": """
                # pinned for CUDA 12.1
                torch==2.3.1  # gpu wheels

                diffusers>=0.27 \\
                    ; python_version >= "3.10"
                git+https://github.com/example/lib.git#egg=lib
                ./wheels/local-0.1-py3-none-any.whl
            """,
            "predict.py": PREDICTOR,
            "train.py": "def train(n: int) -> str:\n    return ''\n",
        }
    )
    config = load_config(package)
    assert config == CogConfig(
        package_dir=package,
        python_version="3.10",
        python_requirements="requirements.txt",
        requirements=(
            "torch==2.3.1",
            'diffusers>=0.27 ; python_version >= "3.10"',
            "git+https://github.com/example/lib.git#egg=lib",
            "./wheels/local-0.1-py3-none-any.whl",
        ),
        system_packages=("ffmpeg", "libgl1"),
        run_commands=("echo hello", "pip install private"),
        pre_install=("pip install -U pip",),
        environment={"HF_HOME": "/src/cache", "EXPR": "a=b", "EMPTY": ""},
        predict="predict.py:Predictor",
        train="train.py:train",
        predictor=PredictorRef(package / "predict.py", "Predictor"),
        trainer=PredictorRef(package / "train.py", "train"),
        concurrency_max=4,
        concurrency_default_target=2,
        gpu=True,
        cuda="12.1",
        cudnn="8",
        sdk_version="0.16.12",
        image="r8.im/someone/model",
        model="registry.example/someone/model",
    )
    assert config.environment == {"HF_HOME": "/src/cache", "EXPR": "a=b", "EMPTY": ""}


def test_defaults_and_python_packages(write_package: Writer) -> None:
    package = write_package(
        {
            "cog.yaml": """
                build:
                  python_version: "3.11.4"
                  python_packages:
                    - numpy==1.26.4
                    - pillow
                predict: "predict.py:Predictor"
            """,
            "predict.py": PREDICTOR,
        }
    )
    config = load_config(package)
    assert config.python_version == "3.11.4"
    assert config.python_packages == ("numpy==1.26.4", "pillow")
    assert config.requirements == ("numpy==1.26.4", "pillow")
    assert (config.python_requirements, config.gpu, config.concurrency_max) == (None, False, 1)
    assert (config.train, config.trainer, config.environment) == (None, None, {})


@pytest.mark.parametrize(
    ("written", "expected"), [("3.11", "3.11"), ("3.10", "3.10"), ('"3.12"', "3.12"), ("3", "3")]
)
def test_python_version_keeps_its_text(write_package: Writer, written: str, expected: str) -> None:
    package = write_package({"cog.yaml": f"build:\n  python_version: {written}\n"})
    assert load_config(package).python_version == expected


def test_empty_cog_yaml_has_no_predictor(write_package: Writer) -> None:
    config = load_config(write_package({"cog.yaml": "# nothing yet\n"}))
    assert (config.predict, config.predictor, config.python_version) == (None, None, None)


def test_run_key_and_default_runner_class(write_package: Writer) -> None:
    package = write_package(
        {
            "cog.yaml": "build:\n  python_version: '3.12'\nrun: run.py\n",
            "run.py": "class Predictor:\n    pass\n\nclass Runner:\n    def run(self) -> str:\n        return ''\n",
        }
    )
    config = load_config(package)
    assert config.predict == "run.py"
    assert config.predictor == PredictorRef(package / "run.py", "Runner")


def test_ref_without_name_falls_back_to_predictor(write_package: Writer) -> None:
    package = write_package({"predict.py": PREDICTOR})
    assert parse_ref("predict.py", package) == PredictorRef(package / "predict.py", "Predictor")
    assert parse_ref("predict.py", package, default_class="Predictor").name == "Predictor"


def test_function_ref_in_subfolder(write_package: Writer) -> None:
    package = write_package({"src/model.py": "async def generate(x: int) -> int:\n    return x\n"})
    assert parse_ref("src/model.py:generate", package) == PredictorRef(
        package / "src/model.py", "generate"
    )


# --- errors -------------------------------------------------------------------------------------


def test_missing_cog_yaml(tmp_path: Path) -> None:
    assert error_of(tmp_path) == f"cog.yaml: not found in {tmp_path}"


def test_malformed_yaml_names_the_line(write_package: Writer) -> None:
    package = write_package(
        {"cog.yaml": 'build:\n  python_version: "3.11"\n  system_packages: [ffmpeg\npredict: x\n'}
    )
    assert error_of(package) == "cog.yaml:4: invalid YAML: expected ',' or ']', but got ':'"


def test_top_level_must_be_a_mapping(write_package: Writer) -> None:
    package = write_package({"cog.yaml": "- build\n- predict\n"})
    assert (
        error_of(package)
        == "cog.yaml:1: expected a mapping of keys (build, run, ...) at the top level"
    )


def test_unknown_top_level_key(write_package: Writer) -> None:
    package = write_package({"cog.yaml": "image: r8.im/x/y\n\n# typo below\nbulid:\n  gpu: true\n"})
    assert error_of(package) == f"cog.yaml:4: unknown key 'bulid' (allowed: {TOP})"


def test_unknown_build_key(write_package: Writer) -> None:
    package = write_package({"cog.yaml": 'build:\n  python_version: "3.11"\n  gpus: true\n'})
    assert error_of(package) == f"cog.yaml:3: unknown key 'build.gpus' (allowed: {BUILD})"


def test_duplicate_key(write_package: Writer) -> None:
    package = write_package({"cog.yaml": "image: a\nimage: b\n"})
    assert error_of(package) == "cog.yaml:2: duplicate key 'image'"


def test_run_and_predict_are_exclusive(write_package: Writer) -> None:
    package = write_package(
        {
            "cog.yaml": "predict: predict.py:Predictor\nrun: predict.py:Predictor\n",
            "predict.py": PREDICTOR,
        }
    )
    assert (
        error_of(package)
        == "cog.yaml:2: 'run' and 'predict' cannot both be set ('predict' is the old name)"
    )


def test_python_packages_and_requirements_are_exclusive(write_package: Writer) -> None:
    package = write_package(
        {
            "cog.yaml": "build:\n  python_requirements: requirements.txt\n  python_packages: [torch]\n",
            "requirements.txt": "torch\n",
        }
    )
    assert error_of(package) == (
        "cog.yaml:3: 'build.python_packages' and 'build.python_requirements' cannot both be set "
        "(python_packages is deprecated)"
    )


def test_missing_requirements_file(write_package: Writer) -> None:
    package = write_package(
        {"cog.yaml": "build:\n  python_version: '3.11'\n  python_requirements: reqs.txt\n"}
    )
    assert error_of(package) == "cog.yaml:3: python_requirements file 'reqs.txt' not found"


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("build:\n  gpu: 'yes please'\n", "cog.yaml:2: 'build.gpu' must be true or false"),
        (
            "build:\n  python_version: [3, 11]\n",
            "cog.yaml:2: 'build.python_version' must be a string or a number",
        ),
        (
            "build:\n  system_packages: ffmpeg\n",
            "cog.yaml:2: 'build.system_packages' must be a list of strings",
        ),
        (
            "build:\n  pre_install:\n    - {a: 1}\n",
            "cog.yaml:3: 'build.pre_install' must be a list of strings",
        ),
        (
            "build:\n  python_requirements: [a]\n",
            "cog.yaml:2: 'build.python_requirements' must be a string",
        ),
        ("build: [gpu]\n", "cog.yaml:1: 'build' must be a mapping"),
        ("build:\n  run: echo hi\n", "cog.yaml:2: 'build.run' must be a list"),
        (
            "build:\n  run:\n    - [echo]\n",
            "cog.yaml:3: 'build.run' entries must be strings or {command, mounts}",
        ),
        (
            "build:\n  run:\n    - mounts: []\n",
            "cog.yaml:3: 'build.run' entry is missing 'command'",
        ),
        (
            "build:\n  run:\n    - command: x\n      mounts:\n        - type: cache\n          id: a\n          target: /b\n",
            "cog.yaml:5: mount 'type' must be 'secret'",
        ),
        (
            "build:\n  run:\n    - command: x\n      mounts:\n        - type: secret\n          id: a\n",
            "cog.yaml:5: mount is missing 'target'",
        ),
        ("predict: 3\n", "cog.yaml:1: 'predict' must be a string"),
        ("image: [a]\n", "cog.yaml:1: 'image' must be a string"),
        ("concurrency:\n  max: four\n", "cog.yaml:2: 'concurrency.max' must be an integer"),
        ("concurrency:\n  max: true\n", "cog.yaml:2: 'concurrency.max' must be an integer"),
        ("concurrency:\n  max: 0\n", "cog.yaml:2: 'concurrency.max' must be at least 1"),
        ("concurrency:\n  default_target: 2\n", "cog.yaml:2: 'concurrency.max' is required"),
        (
            "concurrency:\n  max: 2\n  min: 1\n",
            "cog.yaml:3: unknown key 'concurrency.min' (allowed: max, default_target)",
        ),
        (
            "concurrency:\n  max: 2\n  default_target: x\n",
            "cog.yaml:3: 'concurrency.default_target' must be an integer",
        ),
        (
            "environment:\n  - GOOD=1\n  - BAD\n",
            "cog.yaml:3: environment entry 'BAD' must look like NAME=value",
        ),
        (
            "environment:\n  - 1X=2\n",
            "cog.yaml:2: environment entry '1X=2' must look like NAME=value",
        ),
        ("environment: {A: 1}\n", "cog.yaml:1: 'environment' must be a list of strings"),
        ("weights: {name: x}\n", "cog.yaml:1: 'weights' must be a list"),
        (
            "weights:\n  - name: base\n    target: /weights\n",
            "cog.yaml:2: weights entry is missing 'source'",
        ),
        (
            "weights:\n  - name: base\n    target: /w\n    source: {uri: 'hf://x'}\n    size: 1\n",
            "cog.yaml:5: unknown key 'weights[].size' (allowed: name, target, source)",
        ),
    ],
)
def test_wrong_types(write_package: Writer, yaml_text: str, expected: str) -> None:
    assert error_of(write_package({"cog.yaml": yaml_text})) == expected


def test_weights_are_kept(write_package: Writer) -> None:
    package = write_package(
        {
            "cog.yaml": "weights:\n  - name: base\n    target: /w\n    source:\n      uri: hf://org/model\n"
        }
    )
    assert load_config(package).weights == (
        {"name": "base", "target": "/w", "source": {"uri": "hf://org/model"}},
    )


def test_missing_predictor_file(write_package: Writer) -> None:
    package = write_package(
        {"cog.yaml": 'build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n'}
    )
    assert error_of(package) == "cog.yaml:3: predictor file 'predict.py' not found"


def test_syntax_error_in_predictor(write_package: Writer) -> None:
    package = write_package(
        {
            "cog.yaml": 'predict: "predict.py:Predictor"\n',
            "predict.py": "from cog import BasePredictor\n\nclass Predictor(BasePredictor):\n    def predict(self) -> str\n        return 'x'\n",
        }
    )
    assert error_of(package) == "predict.py:4: expected ':'"


def test_syntax_error_in_training_file(write_package: Writer) -> None:
    package = write_package(
        {"cog.yaml": "train: train.py:train\n", "train.py": "def train(:\n    pass\n"}
    )
    assert error_of(package) == "train.py:1: invalid syntax"


def test_missing_class(write_package: Writer) -> None:
    package = write_package(
        {"cog.yaml": 'predict: "predict.py:Predictr"\n', "predict.py": PREDICTOR}
    )
    assert error_of(package) == "cog.yaml:1: 'predict.py' defines no class or function 'Predictr'"


def test_imported_class_is_not_enough(write_package: Writer) -> None:
    package = write_package(
        {"cog.yaml": "run: run.py:Runner\n", "run.py": "from .impl import Runner\n"}
    )
    assert error_of(package) == (
        "cog.yaml:1: 'run.py' defines no class or function 'Runner' "
        "(it is imported there; point at the file that defines it)"
    )


def test_no_default_class(write_package: Writer) -> None:
    package = write_package(
        {"cog.yaml": "# model\nrun: run.py\n", "run.py": "class Model:\n    pass\n"}
    )
    assert (
        error_of(package)
        == "cog.yaml:2: 'run.py' defines no 'Runner' or 'Predictor' (name one with run.py:Name)"
    )


@pytest.mark.parametrize("ref", [":Predictor", "predict.py:", "predict.py:not-a-name"])
def test_invalid_reference(write_package: Writer, ref: str) -> None:
    package = write_package({"cog.yaml": f'predict: "{ref}"\n', "predict.py": PREDICTOR})
    assert error_of(package) == (
        f"cog.yaml:1: invalid predictor reference '{ref}' "
        "(expected 'file.py:ClassName' or 'file.py:function_name')"
    )


def test_parse_ref_alone_reports_without_a_line(tmp_path: Path) -> None:
    with pytest.raises(CogSpecError) as excinfo:
        parse_ref("missing.py:Predictor", tmp_path)
    assert str(excinfo.value) == "cog.yaml: predictor file 'missing.py' not found"
    assert (excinfo.value.path, excinfo.value.line) == ("cog.yaml", None)


def test_removed_cog_keys_are_ignored_and_reported(write_package: Writer) -> None:
    # Cog's own examples still carry `build.fast` (removed from Cog's schema in 2025).
    package = write_package(
        {
            "cog.yaml": """
                build:
                  python_version: "3.11"
                  fast: false
                  cog_runtime: true
                tests:
                  - input: {}
                predict: predict.py:Predictor
            """,
            "predict.py": PREDICTOR,
        }
    )
    config = load_config(package)
    assert config.ignored_keys == ("build.cog_runtime", "build.fast", "tests")
    assert config.python_version == "3.11"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "build:\n  gpu: !!python/object:os.system {}\n",
            (
                "cog.yaml:2: invalid value: could not determine a constructor for the tag "
                "'tag:yaml.org,2002:python/object:os.system'"
            ),
        ),
        ("concurrency:\n  max: !!int x\n", "cog.yaml:2: invalid value: 'x' is not a valid !!int"),
        ("build:\n  gpu: !!bool maybe\n", "cog.yaml:2: invalid value: 'maybe' is not a valid !!bool"),
        ("!!float x: 1\n", "cog.yaml:1: invalid value: 'x' is not a valid !!float"),
        (
            "weights:\n  - name: a\n    target: /w\n    source: !!python/name:os.system\n",
            (
                "cog.yaml:4: invalid value: could not determine a constructor for the tag "
                "'tag:yaml.org,2002:python/name:os.system'"
            ),
        ),
    ],
)
def test_values_yaml_cannot_build(write_package: Writer, text: str, error: str) -> None:
    assert error_of(write_package({"cog.yaml": text, "predict.py": PREDICTOR})) == error
