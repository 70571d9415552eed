from modelyard.cogspec.errors import CogSpecError


def test_str_with_path_and_line() -> None:
    err = CogSpecError("unknown key 'foo'", "cog.yaml", 3)
    assert str(err) == "cog.yaml:3: unknown key 'foo'"
    assert (err.message, err.path, err.line) == ("unknown key 'foo'", "cog.yaml", 3)


def test_str_with_path_only_and_message_only() -> None:
    assert str(CogSpecError("file not found", "predict.py")) == "predict.py: file not found"
    assert str(CogSpecError("no predictor")) == "no predictor"


def test_multiline_message_is_folded_to_one_line() -> None:
    err = CogSpecError("invalid YAML:\n  expected <block end>\n", "cog.yaml", 2)
    assert str(err) == "cog.yaml:2: invalid YAML: expected <block end>"
    assert "\n" not in str(err)
