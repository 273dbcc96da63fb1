"""ChittyOS: an MCP server for AI runs that can be proven, contained and accounted for."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("chittyos")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
