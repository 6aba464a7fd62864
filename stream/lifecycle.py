"""How a worker process runs and ends: a bounded shutdown, and exit codes that say why.

Exit codes of `tributary worker`:
    0  stopped when asked (SIGTERM, SIGINT), everything in hand published
    1  Faust stopped with an error (its log says which)
    3  outputs could not be published (`TributaryWorker.fail`): restart it; the
       events of the unpublished batch are read again (also when the stop that
       followed then took longer than the shutdown timeout)
    4  after SIGTERM or SIGINT, the batches in hand did not finish within
       TRIBUTARY_SHUTDOWN_TIMEOUT_S; what was not published is read again after a restart

Before issue #13 a SIGTERM could hang for good in Faust's wait for unacked events
while a batch retried its publishing forever. Now a watchdog ends the process.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import faust

from stream.worker import EXIT_PUBLISH_FAILED, TributaryWorker

EXIT_SHUTDOWN_TIMEOUT = 4
log = logging.getLogger("tributary.worker")


class BoundedShutdownWorker(faust.Worker):
    """A Faust worker whose shutdown, once signalled, ends within `shutdown_timeout_s`."""

    def __init__(self, tributary: TributaryWorker, app: faust.App, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.tributary = tributary
        self._watchdog: threading.Timer | None = None

    def _schedule_shutdown(self, sig: signal.Signals) -> None:
        self.tributary.stopping = True  # no more publishing retries: what is unpublished is read again
        if self._watchdog is None:
            self._watchdog = threading.Timer(self.tributary.settings.shutdown_timeout_s, self._exit_now)
            self._watchdog.daemon = True
            self._watchdog.start()
        super()._schedule_shutdown(sig)

    def _exit_now(self) -> None:
        # A worker that stopped itself (it could not publish) says so, however the stop ended.
        code = EXIT_PUBLISH_FAILED if self.tributary.fatal_error is not None else EXIT_SHUTDOWN_TIMEOUT
        log.critical("the worker did not stop within TRIBUTARY_SHUTDOWN_TIMEOUT_S=%g s; exiting now (code %d). "
                     "Events it had not published are read again after the restart",
                     self.tributary.settings.shutdown_timeout_s, code)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(code)


def run_worker(tributary: TributaryWorker, app: faust.App, log_level: str) -> int:
    """Run until stopped; the process's exit code."""
    try:
        BoundedShutdownWorker(tributary, app, loglevel=log_level, quiet=True).execute_from_commandline()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    else:  # pragma: no cover - execute_from_commandline always exits
        code = 0
    return EXIT_PUBLISH_FAILED if tributary.fatal_error is not None else code
