"""Replicate's HTTP API (FastAPI): validate, call the engine and store, render Replicate's JSON."""
