"""OpenAI's reply documents, built by the gateway for workers that do not speak OpenAI themselves."""

from __future__ import annotations

import base64
import json
import secrets
import struct
import time
from typing import Any

from operategpt.http.sse import DONE, event


def dumps(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _head(model: str, kind: str) -> dict[str, Any]:
    return {"id": "chatcmpl-" + secrets.token_hex(12), "object": kind, "created": int(time.time()), "model": model}


def chat_completion(model: str, text: str) -> bytes:
    """A chat.completion whose one choice is `text`."""
    return dumps({
        **_head(model, "chat.completion"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    })


def one_chunk_stream(model: str, text: str) -> list[bytes]:
    """A whole answer as a stream: one chunk with all of `text`, the finish chunk, then [DONE]."""
    head = _head(model, "chat.completion.chunk")
    return [
        event({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text},
                                    "finish_reason": None}]}),
        event({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        DONE,
    ]


def embedding_list(model: str, vectors: list[list[float]], encoding_format: str | None) -> bytes:
    data = [{"object": "embedding", "index": index, "embedding": _encode(vector, encoding_format)}
            for index, vector in enumerate(vectors)]
    # A worker that is not OpenAI's reports no token counts; the field is required by OpenAI's schema, so it says 0.
    return dumps({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 0, "total_tokens": 0}})


def _encode(vector: list[float], encoding_format: str | None) -> list[float] | str:
    if encoding_format == "base64":
        # As OpenAI encodes it: little-endian float32, base64.
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector
