"""Entry point: `python -m modelyard_worker`, started by the runner."""

from modelyard_worker.worker import main

main()
