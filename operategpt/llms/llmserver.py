"""The seed's command for the inference server: `python operategpt/llms/llmserver.py`.

Settings come from the environment and `.env` (see `.env.example` and docs/llmserver.md).
"""

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script from a checkout: make the `operategpt` package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from operategpt.llmserver.serve import main

if __name__ == "__main__":
    main()
