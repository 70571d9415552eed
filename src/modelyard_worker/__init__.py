"""The worker side of Modelyard's runtime: runs inside a model's own environment.

It imports only the standard library, the `cog` SDK and the user's code (design principle 4).
"""
