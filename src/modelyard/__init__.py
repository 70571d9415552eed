"""Modelyard: run, share and deploy Cog models without Docker, behind Replicate's HTTP API."""

__version__ = "0.1.0"
