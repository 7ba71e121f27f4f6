"""HTTP pieces both servers use: the upstream client, SSE framing, the host allowlist, secret redaction."""
