"""Differential tests: the same Cog packages and inputs, run by Cog's own server and by Modelyard.

Cog's side is coglet 0.23.1 run without Docker (``bench/coglet.py``); Modelyard's side is
``LocalModel``. Packages: every ``tests/fixtures/<name>/`` case marked ``compare_with_coglet: true``
(``test_fixture_cases.py``), plus the small inline packages of ``packages.py``, which pin each
documented difference on both sides. A difference that is a deliberate Modelyard behaviour is
normalised in exactly one named function of ``normalise.py`` and listed in
``docs/differences-from-cog.md``; anything else fails.

- ``support.py``: the Outcome of one input on each side, and the coglet/Modelyard ``Pair``
- ``normalise.py``: the documented differences, one function each
- ``compare.py``: ``assert_same``, the comparison of two outcomes
- ``packages.py``: the inline packages
- ``test_fixture_cases.py``: replay of ``tests/fixtures/*/cases.json``
- ``test_inline_cases.py``: the inline packages' inputs that run a prediction
- ``test_validation.py``: 422s and the input differences
- ``test_differences.py``: the other documented differences, each pinned on both sides
- ``test_regressions.py``: bugs this comparison found, fixed since
- ``packages_types.py`` + ``test_cog_types.py``: the rest of Cog's type system (TypedDict inputs,
  unions with lists, ``Opaque`` lists, sibling-file output models, optional secrets), with the
  schema shape Cog's Go generator emits for each
"""
