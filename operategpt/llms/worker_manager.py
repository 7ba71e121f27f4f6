"""The seed's command for the manager: `python operategpt/llms/worker_manager.py` serves it through gunicorn."""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from operategpt.cli import serve_manager

if __name__ == "__main__":
    serve_manager()
