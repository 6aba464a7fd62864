"""Start a Kafka client within the connect timeout, or say in one line what to do.

aiokafka fails fast on a refused connection but waits its request timeout (40 s by
default) and more on a broker that accepts connections and never answers: a wrong port
behind a load balancer, a broker still starting. Every command that opens a client
goes through `started`, so both cases end within `connect_timeout_s` with the same
message and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any, TypeVar

from aiokafka.errors import KafkaConnectionError, KafkaError

from models.errors import TributaryError
from stream.settings import KafkaSettings

Client = TypeVar("Client")


class BrokerUnreachable(TributaryError):
    """No Kafka answered at the configured bootstrap servers in time."""


def unreachable_message(settings: KafkaSettings, refused: str | None = None) -> str:
    """`refused`: why the connection failed; None when it was made but nothing answered."""
    where = settings.bootstrap_servers
    what = (f"cannot connect to Kafka at {where} ({refused})" if refused else
            f"no Kafka answered at {where} within {settings.connect_timeout_s:g} s (TRIBUTARY_CONNECT_TIMEOUT_S)")
    return (f"{what}: start one (`tributary broker` runs an embedded broker) or point --bootstrap / "
            "TRIBUTARY_BOOTSTRAP_SERVERS at yours")


async def started(client: Client, settings: KafkaSettings) -> Client:
    """`client` (an aiokafka producer, consumer or admin client), started; closed again
    and BrokerUnreachable if the cluster does not answer within the connect timeout."""
    try:
        with _quiet_aiokafka():
            await asyncio.wait_for(_start(client), settings.connect_timeout_s)
    except asyncio.TimeoutError:
        await _close(client)
        raise BrokerUnreachable(unreachable_message(settings)) from None
    except (KafkaConnectionError, OSError) as error:
        await _close(client)
        raise BrokerUnreachable(unreachable_message(settings, _reason(error))) from None
    except BaseException:
        await _close(client)  # a half-started client still holds connections and tasks
        raise
    return client


async def check_reachable(settings: KafkaSettings) -> None:
    """Raise BrokerUnreachable unless the cluster answers a metadata request in time:
    the worker's check before it hands the connection to Faust, whose own retries
    would print tracebacks and keep going for minutes."""
    from aiokafka.admin import AIOKafkaAdminClient

    from stream.kafka.client_args import aiokafka_args

    admin = AIOKafkaAdminClient(**aiokafka_args(settings), request_timeout_ms=_request_timeout_ms(settings))
    await started(admin, settings)
    await _close(admin)


def _request_timeout_ms(settings: KafkaSettings) -> int:
    return max(1000, int(settings.connect_timeout_s * 1000))


def _reason(error: BaseException) -> str:
    if isinstance(error, KafkaConnectionError):
        return "connection failed"  # aiokafka's text only repeats the addresses
    return str(error) or type(error).__name__


@contextlib.contextmanager
def _quiet_aiokafka() -> Iterator[None]:
    """aiokafka logs each failed connection at ERROR; the message raised here says it
    once, with what to do. Only commands use `started`, so nothing else is muted."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


async def _start(client: Any) -> None:
    await client.start()


async def _close(client: Any) -> None:
    close = getattr(client, "stop", None) or client.close  # the admin client has close(), the others stop()
    try:
        await close()
    except (KafkaError, OSError, RuntimeError):
        pass  # closing what never opened: nothing to release
