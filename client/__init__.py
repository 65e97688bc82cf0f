"""Verso's Python client (sync + asyncio gRPC, REST, CLI) — not written yet.

Until it lands, use the official ``tensorflow-serving-api`` stubs, which Verso serves
unchanged (see README "Quickstart").
"""
