"""Where a worker's log lines go: ``--log-std``, or stderr when the project's LOGGING shows none.

Shared by ``process_tasks`` and the supervised child processes, which set their logging up
before Django does.
"""

from __future__ import annotations

import logging
import sys

_LEVELS = {0: logging.WARNING, 1: logging.INFO}


def configure_logging(*, log_std: bool, verbosity: int) -> None:
    """Make the worker's log visible: ``--log-std``, or stderr when nothing else shows it.

    Without ``--log-std``, a handler is added only when no logger on the way up from
    ``background_tasks`` has one, so a ``LOGGING`` setting that routes these records anywhere
    (even to a NullHandler) wins. ``--verbosity`` picks the level: 0 warnings and errors only,
    1 (the default) adds the start-up line and one line per finished task, 2 adds debug lines.
    """
    level = _LEVELS.get(verbosity, logging.DEBUG)
    if log_std:
        log_to_std_streams(level)
        return
    logger = logging.getLogger("background_tasks")
    if logger.hasHandlers():
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)


def log_to_std_streams(level: int = logging.INFO) -> None:
    """Send the worker's log records to stdout (below WARNING) and stderr (WARNING and up).

    ``level`` is the one ``--verbosity`` picks: the logger is lowered to it if it was unset or
    higher, as without ``--log-std``.

    Nothing is added when LOGGING already writes the ``background_tasks`` logger to a console
    stream, and the records stop propagating to the root logger, so no line is written twice.
    """
    logger = logging.getLogger("background_tasks")
    if any(getattr(h, "stream", None) in (sys.stdout, sys.stderr) for h in logger.handlers):
        return
    logger.propagate = False
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    out = logging.StreamHandler(sys.stdout)
    out.setLevel(level)
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
