"""Request and reply schemas: the one place request bodies are validated (strict pydantic models)."""
