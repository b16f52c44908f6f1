"""Adapter: Kafka TLS / SASL settings as aiokafka and faust client arguments.

One place turns `KafkaSettings` security fields into what each client library takes,
so the aiokafka runner, the producer CLI and the faust runner authenticate alike.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context

from stream.settings import KafkaSettings


def ssl_context(k: KafkaSettings) -> ssl.SSLContext | None:
    """A TLS context for ``SSL``/``SASL_SSL`` (CA from `ssl_cafile`), else None."""
    if not k.security_protocol.endswith("SSL"):
        return None
    cafile = str(k.ssl_cafile) if k.ssl_cafile is not None else None
    context: ssl.SSLContext = create_ssl_context(cafile=cafile)
    return context


def aiokafka_security(k: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaConsumer``/``AIOKafkaProducer``/admin.

    Empty for ``PLAINTEXT``, so the defaults of the clients stay untouched.
    """
    if k.security_protocol == "PLAINTEXT":
        return {}
    kwargs: dict[str, Any] = {
        "security_protocol": k.security_protocol,
        "ssl_context": ssl_context(k),
    }
    if k.security_protocol.startswith("SASL_"):
        kwargs.update(
            sasl_mechanism=k.sasl_mechanism,
            sasl_plain_username=k.sasl_username,
            sasl_plain_password=k.sasl_password.get_secret_value(),
        )
    return kwargs


def faust_credentials(k: KafkaSettings) -> Any:
    """The faust ``broker_credentials`` value, or None for ``PLAINTEXT``."""
    import faust

    if k.security_protocol == "PLAINTEXT":
        return None
    context = ssl_context(k)
    if k.security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password.get_secret_value(),
            mechanism=k.sasl_mechanism,
            ssl_context=context,
        )
    return faust.SSLCredentials(context)
