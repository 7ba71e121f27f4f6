"""The bundled model streamed direct from the llmserver and through the manager: first token, chunks, max_tokens.

    make run                                           # in one terminal (or any manager + self-registered llmserver)
    .venv/bin/python bench/llm_first_token.py [--manager http://127.0.0.1:8007] [--llmserver http://127.0.0.1:8008]
        [--model smollm2] [--rounds 5] [--max-tokens 64]

Each round sends the same streamed `/v1/chat/completions` request (a system message, one earlier exchange and a
question, temperature 0) once straight to the llmserver and once through the manager, alternating which goes first,
and records the time from sending to the first event carrying content, the number of events and the time to the
last one. Then one non-streamed request through the manager with `max_tokens=20` reports the completion tokens the
model produced. Medians are printed; the figures depend on how busy the machine's cores are, so compare the two
columns of one run, not runs on different machines.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import requests

MESSAGES = [
    {"role": "system", "content": "You are a terse assistant. Answer in one short paragraph."},
    {"role": "user", "content": "My name is Ada."},
    {"role": "assistant", "content": "Nice to meet you, Ada."},
    {"role": "user", "content": "Tell me about the colour of the sky."},
]


def stream_once(url: str, model: str, max_tokens: int) -> tuple[float, int, float]:
    """(seconds to the first content, events with content, seconds to the end) of one streamed completion."""
    body = {"model": model, "messages": MESSAGES, "stream": True, "temperature": 0, "max_tokens": max_tokens}
    started = time.perf_counter()
    first = None
    events = 0
    with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=120) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            event = json.loads(line[len(b"data: ") :])
            content = (event.get("choices") or [{}])[0].get("delta", {}).get("content")
            if content:
                events += 1
                if first is None:
                    first = time.perf_counter() - started
    return (first if first is not None else float("nan")), events, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manager", default="http://127.0.0.1:8007")
    parser.add_argument("--llmserver", default="http://127.0.0.1:8008")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    results: dict[str, list[tuple[float, int, float]]] = {"direct": [], "manager": []}
    targets = {"direct": args.llmserver, "manager": args.manager}
    stream_once(args.llmserver, args.model, 4)  # warm-up
    for number in range(args.rounds):
        order = ("direct", "manager") if number % 2 == 0 else ("manager", "direct")
        for name in order:
            results[name].append(stream_once(targets[name], args.model, args.max_tokens))
    for name, rounds in results.items():
        firsts = [first for first, _, _ in rounds]
        print(
            f"{name:>8}: first token median {statistics.median(firsts):.3f} s "
            f"(min {min(firsts):.3f}, max {max(firsts):.3f}), "
            f"content events median {statistics.median(events for _, events, _ in rounds):.0f}, "
            f"total median {statistics.median(total for _, _, total in rounds):.2f} s"
        )

    body = {"model": args.model, "messages": MESSAGES[-1:], "temperature": 0, "max_tokens": 20}
    reply = requests.post(f"{args.manager}/v1/chat/completions", json=body, timeout=120)
    reply.raise_for_status()
    answer = reply.json()
    text = answer["choices"][0]["message"]["content"]
    usage = answer.get("usage") or {}
    print(
        f"max_tokens=20 through the manager: {usage.get('completion_tokens', '?')} completion tokens, "
        f"{len(text.split())} words, finish_reason {answer['choices'][0].get('finish_reason')}"
    )


if __name__ == "__main__":
    main()
