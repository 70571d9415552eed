"""Reading a Cog package: cog.yaml, the OpenAPI schema from source, input validation. Pure."""
