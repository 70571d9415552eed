"""The rest of Cog's type system (issue 14), on both sides: TypedDict inputs, unions with list
members, ``Annotated[list[X], Opaque]``, an output model imported from a sibling file, and optional
``Secret`` inputs (packages in ``packages_types.py``).

Each package's schema is checked against the shape Cog's Go generator emits for it (read from
``pkg/schema/types.go`` ``resolveInputType``/``validateUnionVariant``/``opaqueFieldType`` and
``pkg/schema/openapi_spec.go`` ``buildInputSchema`` of github.com/replicate/cog, and its tests
``TestOpaqueImportedListInput``, ``TestNoneDefaultOnBareSecretIsOptional``); the predictions are
compared with coglet 0.23.1 like any inline case (``assert_same``).
"""

from __future__ import annotations

from typing import Any

import pytest

from .compare import assert_same
from .normalise import coglet_loc
from .packages import inline
from .support import Package, Pair

pytestmark = pytest.mark.coglet

CASES = [
    *[
        pytest.param(Package("diff_typeddict"), i, id=f"diff_typeddict/{name}")
        for name, i in [
            ("one", {"box": {"x": 1, "label": "a"}}),
            ("list_and_optional", {"box": {"x": 1}, "boxes": [{"x": 2}], "maybe": {"y": 3}}),
            ("extra_keys_kept", {"box": {"x": 1, "label": "a", "more": [1, 2]}}),
            ("not_an_object", {"box": [1]}),
            ("missing", {}),
        ]
    ],
    *[
        pytest.param(Package("diff_union_lists"), i, id=f"diff_union_lists/{name}")
        for name, i in [
            ("defaults", {}),
            ("ints", {"nums": [3, 4]}),
            ("floats", {"nums": [1.5, 2.5]}),
            ("mixed_numbers", {"nums": [1, 2.5]}),
            ("word_list", {"words": ["x", "y"]}),
            ("word", {"words": "z"}),
            ("amount_list", {"amount": [1, 2], "maybe": [5]}),
            ("maybe_int", {"maybe": 7}),
            ("wrong_member", {"nums": ["a"]}),
            ("list_of_lists", {"words": [["x"]]}),
            ("number_for_words", {"words": 1}),
        ]
    ],
    *[
        pytest.param(Package("diff_opaque_list"), i, id=f"diff_opaque_list/{name}")
        for name, i in [
            ("objects", {"items": [{"a": 1}, {"b": [2]}]}),
            ("empty", {"items": []}),
            ("with_extra", {"items": [{}], "extra": [{"c": None}]}),
            ("object_is_not_a_list", {"items": {"a": 1}}),
            ("numbers_are_not_objects", {"items": [1, 2]}),
        ]
    ],
    *[
        pytest.param(Package("diff_sibling_output"), i, id=f"diff_sibling_output/{name}")
        for name, i in [("defaults", {}), ("values", {"label": "dog", "n": 3})]
    ],
    *[
        pytest.param(Package("diff_secret_none"), i, id=f"diff_secret_none/{name}")
        for name, i in [
            ("omitted", {}),
            ("given", {"api_key": "k1", "other": "k2", "maybe": "k3"}),
            ("not_a_string", {"api_key": 3}),
        ]
    ],
]


@pytest.mark.parametrize("pair, payload", CASES, indirect=["pair"])
def test_cog_type_case(pair: Pair, payload: Any) -> None:
    """Same status, output (what the model received) or 422 details on both sides."""
    cog, mine = pair.both(payload)
    assert_same(cog, mine)


def _input(pair: Pair) -> dict[str, Any]:
    schema: dict[str, Any] = pair.model.schema["components"]["schemas"]["Input"]
    return schema


@pytest.mark.parametrize("pair", inline("diff_typeddict"), indirect=True)
def test_typeddict_schema(pair: Pair) -> None:
    """Cog: a TypedDict input is ``InputAnyType()``, rendered ``{"type": "object"}``."""
    props = _input(pair)["properties"]
    assert props["box"] == {"type": "object", "title": "Box", "x-order": 0}
    assert props["boxes"]["items"] == {"type": "object"} and props["boxes"]["type"] == "array"
    assert props["maybe"]["type"] == "object" and props["maybe"]["nullable"] is True
    assert _input(pair)["required"] == ["box"]


@pytest.mark.parametrize("pair", inline("diff_union_lists"), indirect=True)
def test_union_with_lists_schema(pair: Pair) -> None:
    """Cog: ``anyOf`` of the members, arrays included; a nullable union marks every member and
    the property ``nullable``."""
    props = _input(pair)["properties"]
    ints, floats = {"type": "integer"}, {"type": "number"}
    assert props["nums"]["anyOf"] == [
        {"type": "array", "items": ints},
        {"type": "array", "items": floats},
    ]
    assert props["words"]["anyOf"] == [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}},
    ]
    assert props["amount"]["anyOf"] == [ints, {"type": "array", "items": ints}]
    assert props["maybe"]["anyOf"] == [
        {**ints, "nullable": True},
        {"type": "array", "items": ints, "nullable": True},
    ]
    assert props["maybe"]["nullable"] is True


@pytest.mark.parametrize("pair", inline("diff_opaque_list"), indirect=True)
def test_opaque_list_schema(pair: Pair) -> None:
    """Cog: ``Annotated[List[X], Opaque]`` is ``Repeated`` ``TypeAny``: an array of objects."""
    props = _input(pair)["properties"]
    assert props["items"] == {
        "type": "array",
        "items": {"type": "object"},
        "title": "Items",
        "x-order": 0,
    }
    assert props["extra"]["type"] == "array" and props["extra"]["nullable"] is True
    assert _input(pair)["required"] == ["items"]


@pytest.mark.parametrize("pair", inline("diff_sibling_output"), indirect=True)
def test_sibling_output_schema(pair: Pair) -> None:
    """Cog reads the model from ``output_types.py`` (inherited fields first)."""
    output = pair.model.schema["components"]["schemas"]["Output"]
    assert list(output["properties"]) == ["label", "scores", "note"]
    assert output["required"] == ["label", "scores"]
    assert output["properties"]["scores"]["items"] == {"type": "number"}


@pytest.mark.parametrize("pair", inline("diff_secret_none"), indirect=True)
def test_optional_secret_schema_and_explicit_null(pair: Pair) -> None:
    """Cog: ``Secret = Input(default=None)`` is nullable with ``default: null`` and not required.
    An explicit ``null`` is then the row "Explicit `null` for an `Optional[T]` input"."""
    props = _input(pair)["properties"]
    for name in ("api_key", "other", "maybe"):
        assert props[name]["nullable"] is True and props[name]["default"] is None, name
        assert props[name]["x-cog-secret"] is True
    assert "required" not in _input(pair)
    cog, mine = pair.both({"api_key": None})
    assert cog.kind == "invalid"
    assert [coglet_loc(e["loc"]) for e in cog.detail] == [["body", "input", "api_key"]]
    assert mine.kind == "prediction" and mine.output == "none none none"
