"""Inline packages for the rest of Cog's type system (issue 14): TypedDict inputs, unions with list
members, ``Annotated[list[X], Opaque]``, an output model imported from a sibling file, and
``Secret = Input(default=None)``. Merged into ``packages.INLINE``; compared in
``test_cog_types.py``, where the schema Modelyard generates for each is also checked against the
shape Cog's Go generator (``pkg/schema`` of github.com/replicate/cog) emits.

Each predictor returns what it received, with the Python types, so both runtimes are compared on
what the model sees.
"""

from __future__ import annotations

COG_YAML = 'build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n'

TYPES_PACKAGES: dict[str, dict[str, str]] = {
    # 1. TypedDict inputs: an opaque JSON object, passed to the model as the dict that was sent.
    "diff_typeddict": {
        "cog.yaml": COG_YAML,
        "predict.py": """
            import json
            from typing import List, Optional, TypedDict
            from cog import BasePredictor, Input

            class Box(TypedDict):
                x: int
                label: str

            class Predictor(BasePredictor):
                def predict(
                    self,
                    box: Box,
                    boxes: List[Box] = Input(default=[]),
                    maybe: Optional[Box] = None,
                ) -> str:
                    return json.dumps(
                        {"box": box, "boxes": boxes, "maybe": maybe, "type": type(box).__name__},
                        sort_keys=True,
                    )
        """,
    },
    # 2. Unions with list members.
    "diff_union_lists": {
        "cog.yaml": COG_YAML,
        "predict.py": """
            from typing import List, Optional, Union
            from cog import BasePredictor, Input

            def describe(value):
                if isinstance(value, list):
                    return "list[" + ",".join(describe(v) for v in value) + "]"
                return f"{type(value).__name__}:{value!r}"

            class Predictor(BasePredictor):
                def predict(
                    self,
                    nums: Union[List[int], List[float]] = Input(default=[1, 2]),
                    words: str | list[str] = Input(default="a"),
                    amount: int | list[int] = 3,
                    maybe: Optional[Union[int, List[int]]] = None,
                ) -> str:
                    return " ".join(describe(v) for v in (nums, words, amount, maybe))
        """,
    },
    # 3. Annotated[list[X], Opaque]: an array of opaque JSON objects.
    "diff_opaque_list": {
        "cog.yaml": COG_YAML,
        "predict.py": """
            import json
            from typing import Annotated, List, Optional
            from cog import BasePredictor, Input, Opaque

            class Predictor(BasePredictor):
                def predict(
                    self,
                    items: Annotated[List[dict], Opaque],
                    extra: Annotated[Optional[list], Opaque] = None,
                ) -> str:
                    return json.dumps({"items": items, "extra": extra, "n": len(items)})
        """,
    },
    # 4. An output model (and its base class) imported from a sibling file of the package.
    "diff_sibling_output": {
        "cog.yaml": COG_YAML,
        "output_types.py": """
            from typing import List, Optional
            from cog import BaseModel

            class Labelled(BaseModel):
                label: str

            class Output(Labelled):
                scores: List[float]
                note: Optional[str] = None
        """,
        "predict.py": """
            from cog import BasePredictor
            from output_types import Output

            class Predictor(BasePredictor):
                def predict(self, label: str = "cat", n: int = 2) -> Output:
                    return Output(label=label, scores=[i / 2 for i in range(n)])
        """,
    },
    # 5. Secret = Input(default=None) and x: Secret = None: optional credentials.
    "diff_secret_none": {
        "cog.yaml": COG_YAML,
        "predict.py": """
            from typing import Optional
            from cog import BasePredictor, Input, Secret

            def show(secret):
                if secret is None:
                    return "none"
                return f"{type(secret).__name__}:{secret.get_secret_value()}"

            class Predictor(BasePredictor):
                def predict(
                    self,
                    api_key: Secret = Input(default=None, description="Optional key"),
                    other: Secret = None,
                    maybe: Optional[Secret] = None,
                ) -> str:
                    return " ".join(show(s) for s in (api_key, other, maybe))
        """,
    },
}
