"""Translate `KafkaSettings` into keyword arguments for aiokafka clients.

Kept as a pure function so the SASL/SSL mapping is unit-tested: the embedded broker
cannot create SASL users in memory mode, so it cannot be tested end to end here.
"""

from __future__ import annotations

from typing import Any

from models.errors import TributaryError
from stream.settings import KafkaSettings


class SecuritySettingsError(TributaryError, ValueError):
    pass


def aiokafka_args(settings: KafkaSettings) -> dict[str, Any]:
    args: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol.startswith("SASL"):
        if not (settings.sasl_mechanism and settings.sasl_username and settings.sasl_password):
            raise SecuritySettingsError(
                f"security protocol {settings.security_protocol} needs TRIBUTARY_SASL_MECHANISM, "
                "TRIBUTARY_SASL_USERNAME and TRIBUTARY_SASL_PASSWORD"
            )
        args.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password.get_secret_value(),
        )
    if settings.security_protocol.endswith("SSL"):
        from aiokafka.helpers import create_ssl_context

        args["ssl_context"] = create_ssl_context(
            cafile=settings.ssl_cafile, certfile=settings.ssl_certfile, keyfile=settings.ssl_keyfile
        )
    elif settings.ssl_cafile or settings.ssl_certfile:
        raise SecuritySettingsError(
            f"SSL files are set but the security protocol is {settings.security_protocol}; "
            "set TRIBUTARY_SECURITY_PROTOCOL=SSL or SASL_SSL"
        )
    return args
