"""The ``img2img`` command: parses arguments and calls the library, nothing more.

Each sub-command lives in a module of this package exposing ``register(subparsers)``,
which adds its parser and sets ``handler`` to a function ``(args) -> int``.

The command's output (tables, JSON, listings) goes to stdout; the library's notices
(its :mod:`logging` records, ``INFO`` and above) to stderr, one line each:
``img2img: message``, ``img2img: warning: message``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from img2img_filters.cli.common import DefaultsHelpFormatter

__all__ = ["main"]

#: The logger of the library's notices.
PACKAGE_LOGGER = "img2img_filters"


class NoticeFormatter(logging.Formatter):
    """``img2img: message``; ``img2img: warning: message`` (``error:`` for errors)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record's message, prefixed by the command's name and its severity."""
        if record.levelno >= logging.ERROR:
            kind = "error: "
        elif record.levelno >= logging.WARNING:
            kind = "warning: "
        else:
            kind = ""
        return f"img2img: {kind}{record.getMessage()}"


class NoticeHandler(logging.Handler):
    """Writes notices to the current ``sys.stderr``, above any progress bar on it."""

    def emit(self, record: logging.LogRecord) -> None:
        """Write one formatted record (through tqdm, so that a bar is redrawn below it)."""
        try:
            # loaded on the first notice, so that `img2img --help` stays fast
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # a notice must never stop the command (closed stderr...)
            self.handleError(record)


def install_notices(level: int = logging.INFO) -> NoticeHandler:
    """Show the library's notices on stderr: one :class:`NoticeHandler` on its logger.

    Returns:
        The handler, for :func:`remove_notices`; a handler installed earlier is replaced.
    """
    logger = logging.getLogger(PACKAGE_LOGGER)
    for old in [h for h in logger.handlers if isinstance(h, NoticeHandler)]:
        logger.removeHandler(old)
    handler = NoticeHandler()
    handler.setFormatter(NoticeFormatter())
    logger.addHandler(handler)
    handler.previous_level = logger.level  # type: ignore[attr-defined]
    logger.setLevel(level)
    return handler


def remove_notices(handler: NoticeHandler) -> None:
    """Undo :func:`install_notices`: the handler goes, the logger's level is restored."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    logger.removeHandler(handler)
    logger.setLevel(getattr(handler, "previous_level", logging.NOTSET))


COMMANDS = (
    "img2img_filters.cli.train",
    "img2img_filters.cli.apply",
    "img2img_filters.cli.export",
    "img2img_filters.cli.evaluate",
    "img2img_filters.cli.listing",
    "img2img_filters.cli.data",
    "img2img_filters.cli.demo",
    "img2img_filters.cli.report",
    "img2img_filters.cli.probe",
)


class UserError(Exception):
    """An error to report on one line, without a traceback."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit status 2.

    ``img2img train: error: argument --seed: expected an integer from 0 to ...``: the
    line names the command and the argument; ``--help`` shows the usage, and each
    option's default (:class:`~img2img_filters.cli.common.DefaultsHelpFormatter`).
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE`` on one line and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {_one_line(message)}\n")


def _one_line(text: str) -> str:
    """``text`` with its whitespace runs, newlines included, made single spaces."""
    return " ".join(str(text).split())


def build_parser() -> argparse.ArgumentParser:
    """The ``img2img`` argument parser with every sub-command."""
    # loaded when the command runs, so that `img2img --help` stays fast
    from img2img_filters import __version__

    parser = _Parser(
        prog="img2img",
        description="Teach small convolutional networks to imitate image filters, "
        "and apply them to images of any size.",
    )
    parser.add_argument("--version", action="version", version=f"img2img {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    0 success, 1 failure, 2 usage, 130 Ctrl-C, 141 the reader of the output went away
    (``img2img filters | head -1``: quietly, as a command killed by SIGPIPE). The library's
    notices are shown on stderr while it runs (see :func:`install_notices`).
    """
    handler = install_notices()
    try:
        return _run(argv)
    finally:
        remove_notices(handler)


def _run(argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run its command; the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    validate = getattr(args, "validate", None)
    if validate is not None:  # checks that need several arguments, before any data loads
        try:
            validate(args)
        except (ValueError, TypeError, FileNotFoundError) as error:
            message = _one_line(error) or type(error).__name__
            print(f"img2img {args.command}: error: {message}", file=sys.stderr)
            return 2
    try:
        status = int(args.handler(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except BrokenPipeError:
        # Nothing more can be written: later flushes (at exit) go to the null device.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("img2img: interrupted", file=sys.stderr)
        return 130
    except (UserError, ValueError, TypeError, FileNotFoundError, RuntimeError, OSError) as error:
        message = _one_line(error) or type(error).__name__
        print(f"img2img: error: {message}", file=sys.stderr)
        return 1
