"""The inference server: serves one model (a local GGUF or a proxy to an OpenAI-compatible API).

Where a request goes: `serve.py` runs gunicorn, `app.py` builds the Flask app, `api.py` holds the
routes and turns JSON into a `ChatRequest` (`schemas.py`), and the backend chosen in
`backends/__init__.py` produces the text (`state.py` holds what the routes share). `registration.py`
keeps the server listed in the manager; `config.py` reads the environment. See docs/llmserver.md.
"""
