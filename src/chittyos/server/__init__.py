"""MCP adapters: tools grouped as the seed grouped them, the server, the HTTP app."""

from chittyos.server.server import build_server

__all__ = ["build_server"]
