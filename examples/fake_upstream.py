"""Two fake inference services shaped like the seed's examples, for trying the gateway without a model.

    python examples/fake_upstream.py --port 8009

POST /api/generate  answers like the seed's ChatGLM service (the answer nested in data.items[].attributes)
POST /generate      answers with plain text, like a proxy to a commercial API
GET  /health        answers 200

Each reply repeats the prompt it received, so you can see what the gateway sent.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, "text/plain", b"ok")
        else:
            self._send(404, "application/json", b'{"error": "not found"}')

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            request = json.loads(raw or b"{}")
        except ValueError:
            self._send(400, "application/json", b'{"error": "body is not JSON"}')
            return
        prompt = request.get("input", "") if isinstance(request, dict) else ""
        if self.path == "/api/generate":
            reply = {
                "code": "200",
                "data": {"items": [{"attributes": {"answer": f"I am ChatGLM2-6B (fake). You said: {prompt}"}}]},
                "success": True,
            }
            self._send(200, "application/json", json.dumps(reply).encode())
        elif self.path == "/generate":
            self._send(200, "text/plain; charset=utf-8", f"I am a proxy model (fake). You said: {prompt}".encode())
        else:
            self._send(404, "application/json", b'{"error": "not found"}')

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the stdlib default of 5 drops connections under a burst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8009)
    args = parser.parse_args()
    server = Server((args.host, args.port), Handler)
    print(f"fake upstream on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
