"""Helpers for bench/run.py: the nginx mock upstream, the manager process, wrk and an asyncio HTTP client."""
