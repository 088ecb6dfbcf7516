"""What every workflow script does first: send stderr (errors, tqdm) to the rule's log, set threads."""
from __future__ import annotations

import sys
from typing import Any, Callable

from advpipe.errors import install_excepthook
from advpipe.runtime import set_threads


def start_job(smk: Any) -> Callable[[str], None]:
    """Redirect stderr to smk.log[0] (line-buffered), use smk.threads; return a log function.

    An uncaught error ends the log with one line naming its cause (advpipe.errors; ADVPIPE_DEBUG=1: the
    traceback), the same as the CLI prints.
    """
    if smk.log:
        sys.stderr = open(smk.log[0], "w", buffering=1)
    install_excepthook()
    set_threads(smk.threads)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    return log
