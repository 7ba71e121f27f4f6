"""Pieces the manager and the inference server share: errors, templates, extraction, upstream HTTP."""
