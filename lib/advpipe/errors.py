"""Bad input, reported as one line naming the file or config key, the value and what would be accepted.

Every error that blames the user's input (a config key, a data file, a checkpoint, a dump) derives from
InputError, so the CLI and the workflow's jobs can print it without a traceback: the traceback points into
advpipe, the message points at the input. Anything else is a bug in advpipe and is reported as one.
Set ADVPIPE_DEBUG=1 (or pass --debug to the CLI) for the traceback either way.
"""
from __future__ import annotations

import contextlib
import os
import sys
import traceback
from typing import TextIO

DEBUG_VAR = "ADVPIPE_DEBUG"


class InputError(Exception):
    """The input is wrong (not advpipe); the message names the file or key, the value and the accepted form."""


def debugging() -> bool:
    return os.environ.get(DEBUG_VAR, "").strip().lower() not in ("", "0", "false", "no")


def describe(exc: BaseException) -> str:
    """The one-line (or one-paragraph, for several config problems) report of `exc`."""
    if isinstance(exc, InputError):
        return f"error: {exc}"
    if isinstance(exc, FileNotFoundError) and exc.filename is None:  # ours: the message names the path
        return f"error: {exc}"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"error: {exc.filename}: {exc.strerror or exc}"
    return (f"error: internal error in advpipe, not in your input: {type(exc).__name__}: {exc} "
            f"(set {DEBUG_VAR}=1 for the traceback)")


def report(exc: BaseException, stream: TextIO | None = None, debug: bool | None = None) -> None:
    """Print `exc` to `stream` (stderr): the traceback only when debugging, else one line."""
    stream = stream or sys.stderr
    if debug if debug is not None else debugging():
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=stream)
    else:
        print(describe(exc), file=stream, flush=True)


def install_excepthook() -> None:
    """Uncaught exceptions of this process (a workflow job) are reported as `report` does."""
    def hook(kind, exc, tb):
        if issubclass(kind, KeyboardInterrupt):
            return sys.__excepthook__(kind, exc, tb)
        report(exc)

    sys.excepthook = hook


@contextlib.contextmanager
def exit_on_input_error(status: int = 1):
    """Inside the Snakefile: an InputError ends Snakemake with its one-line report, not a traceback of frames."""
    try:
        yield
    except InputError as err:
        if debugging():
            raise
        report(err)
        raise SystemExit(status) from None
