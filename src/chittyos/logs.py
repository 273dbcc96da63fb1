"""Logging to stderr only: in stdio mode stdout carries the MCP protocol."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str = "INFO", *, json: bool = False) -> None:
    """Route stdlib logging and structlog to stderr at ``level``."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # Third-party request logs would print URLs and headers at INFO; keep them quiet.
    # alembic narrates every migration step; python-gnupg warns on every failed verify (which is
    # an answer, not an incident).
    for noisy in ("httpx", "httpx2", "openai", "uvicorn.access", "alembic", "gnupg"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    gnupg_log = logging.getLogger("gnupg")
    gnupg_log.setLevel(max(numeric, logging.ERROR))
    if not any(isinstance(f, _GpgStoppedReading) for f in gnupg_log.filters):
        gnupg_log.addFilter(_GpgStoppedReading())
    # Tracebacks without local variables: locals hold prompts and answers, which are sealed at
    # rest and must not reappear in plain text in a log.
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *([structlog.processors.format_exc_info] if json else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


class _GpgStoppedReading(logging.Filter):
    """Drops python-gnupg's traceback for a broken pipe while it sends data: gpg stopped reading
    because it had its answer already (a garbled signature over a large text); the signer reads
    that answer from gpg's status lines (``openpgp._GPG``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], BrokenPipeError))
