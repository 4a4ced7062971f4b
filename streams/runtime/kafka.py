"""How shudi reaches Kafka: one :class:`KafkaConnection`, built from the settings, makes every client.

The Faust app, the enrichment consumer and producer, the admin client (topic creation, readiness, access
checks), ``shudi send``, ``shudi simulate``, the demo and the benchmarks all get their clients from here, so
TLS, mutual TLS and SASL apply to each of them alike. ``tests/runtime/test_kafka.py`` fails if a module
outside this one constructs an aiokafka client itself.

Secrets (the SASL password, the key password) are kept as :class:`pydantic.SecretStr` and only unwrapped
into the keyword arguments handed to aiokafka or Faust; ``repr`` and :meth:`KafkaConnection.describe` never
show them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr

if TYPE_CHECKING:
    import faust
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    from streams.settings import Settings

__all__ = [
    "KafkaConnection",
    "KafkaConnectionError",
    "connection_from_env",
    "explain_failure",
    "quiet_kafka_logs",
]

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaConnectionError(RuntimeError):
    """Kafka could not be reached or refused us; the message is one line naming the cause."""


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """Where the brokers are and how to authenticate to them. Immutable; safe to share and to log."""

    bootstrap_servers: tuple[str, ...]
    security_protocol: Protocol = "PLAINTEXT"
    sasl_mechanism: Mechanism = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.bootstrap_servers:
            raise ValueError("no bootstrap servers given")
        if self.sasl and not (self.sasl_username and self.sasl_password):
            raise ValueError(f"{self.security_protocol} needs a SASL user name and password")
        if (self.ssl_certfile or self.ssl_cafile) and not self.tls:
            raise ValueError(f"TLS files given but the security protocol is {self.security_protocol}")

    # --- construction ------------------------------------------------------------------------------------

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConnection:
        return cls(
            bootstrap_servers=tuple(settings.bootstrap_servers),
            security_protocol=settings.security_protocol,
            sasl_mechanism=settings.sasl_mechanism,
            sasl_username=settings.sasl_username,
            sasl_password=settings.sasl_password,
            ssl_cafile=settings.ssl_cafile,
            ssl_certfile=settings.ssl_certfile,
            ssl_keyfile=settings.ssl_keyfile,
            ssl_key_password=settings.ssl_key_password,
        )

    @classmethod
    def to(cls, bootstrap: str, **security: Any) -> KafkaConnection:
        """A connection to the ``host:port[,host:port…]`` brokers with the given security fields."""
        return cls(bootstrap_servers=_split(bootstrap), **security)

    @classmethod
    def plaintext(cls, bootstrap: str) -> KafkaConnection:
        """An unauthenticated connection: the local development broker (``shudi kafka start``) and tests."""
        return cls.to(bootstrap)

    @classmethod
    def of(cls, target: KafkaConnection | str) -> KafkaConnection:
        """``target`` itself, or a PLAINTEXT connection to the bootstrap string (development helpers)."""
        return target if isinstance(target, KafkaConnection) else cls.plaintext(target)

    def with_bootstrap(self, bootstrap: str) -> KafkaConnection:
        """The same security, other brokers (e.g. ``shudi simulate --broker``)."""
        return _replace(self, bootstrap_servers=_split(bootstrap))

    # --- what it is --------------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return ",".join(self.bootstrap_servers)

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL")

    def identity(self) -> str:
        """Who the brokers see: the SASL user, the client certificate, or nobody in particular."""
        if self.sasl:
            return f"SASL user {self.sasl_username!r} ({self.sasl_mechanism})"
        if self.ssl_certfile:
            return f"the client certificate {self.ssl_certfile}"
        return "an anonymous client"

    def describe(self) -> str:
        """One line for logs and errors, without secrets: ``SASL_SSL to host:port as SASL user 'x' (…)``."""
        return f"{self.security_protocol} to {self.bootstrap} as {self.identity()}"

    # --- client options ----------------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context (CA file or the system store; with the client certificate if given)."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
            if self.ssl_certfile is not None:
                password = self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
                context.load_cert_chain(
                    str(self.ssl_certfile),
                    str(self.ssl_keyfile) if self.ssl_keyfile else None,
                    # A callable, so an encrypted key without a password fails instead of prompting on a tty.
                    password=lambda: password or "",
                )
        except FileNotFoundError as exc:
            raise KafkaConnectionError(f"TLS file not found: {exc.filename}") from None
        except ssl.SSLError as exc:
            raise KafkaConnectionError(
                f"cannot load the TLS files (CA {self.ssl_cafile or 'system store'}, certificate "
                f"{self.ssl_certfile}, key {self.ssl_keyfile or self.ssl_certfile}): {exc.reason or exc}; "
                "wrong key password, or a key that does not match the certificate?"
            ) from None
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka consumer, producer or admin client (secrets included)."""
        options: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap_servers),
            "security_protocol": self.security_protocol,
            "ssl_context": self.ssl_context(),
        }
        if self.sasl:
            assert self.sasl_password is not None
            options |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password.get_secret_value(),
            }
        return options

    def faust_broker_urls(self) -> list[str]:
        return [f"kafka://{server}" for server in self.bootstrap_servers]

    def faust_credentials(self) -> faust.SASLCredentials | faust.SSLCredentials | None:
        """Faust's ``broker_credentials``: the same TLS context and SASL login as every other client."""
        import faust
        from faust.types.auth import AuthProtocol

        context = self.ssl_context()
        if self.sasl:
            assert self.sasl_password is not None
            credentials = faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password.get_secret_value(),
                mechanism=self.sasl_mechanism,
                ssl_context=context,
            )
            # Faust infers SASL_SSL from the context; say it outright.
            credentials.protocol = AuthProtocol(self.security_protocol)
            return credentials
        if context is not None:
            return faust.SSLCredentials(context)
        return None

    # --- clients -----------------------------------------------------------------------------------------

    def consumer(self, *topics: str, **kwargs: Any) -> AIOKafkaConsumer:
        from aiokafka import AIOKafkaConsumer

        return AIOKafkaConsumer(*topics, **self.client_options(), **kwargs)

    def producer(self, **kwargs: Any) -> AIOKafkaProducer:
        from aiokafka import AIOKafkaProducer

        return AIOKafkaProducer(**self.client_options(), **kwargs)

    def admin(self, **kwargs: Any) -> AIOKafkaAdminClient:
        from aiokafka.admin import AIOKafkaAdminClient

        return AIOKafkaAdminClient(**self.client_options(), **kwargs)


def connection_from_env(
    bootstrap: str | None = None, environ: Mapping[str, str] | None = None
) -> KafkaConnection:
    """The connection the ``SHUDI_*`` environment describes, optionally to other brokers: for scripts such as
    the benchmarks that take ``--bootstrap`` but must speak TLS/SASL when the environment says so."""
    from streams.settings import load_settings

    env = dict(os.environ if environ is None else environ)
    if bootstrap is not None:
        env["SHUDI_BROKER"] = bootstrap
    return KafkaConnection.from_settings(load_settings(env))


def _split(bootstrap: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in bootstrap.split(",") if s.strip())


def _replace(conn: KafkaConnection, **changes: Any) -> KafkaConnection:
    from dataclasses import replace

    return replace(conn, **changes)


# --- failures ---------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_kafka_logs() -> Iterator[None]:
    """Silence aiokafka while a command connects: it logs every failed attempt at ERROR, and the command
    reports the cause itself in one line (:func:`explain_failure`)."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


async def explain_failure(conn: KafkaConnection, exc: BaseException) -> str:
    """One line saying why ``conn`` failed with ``exc``: bad credentials, an untrusted or mismatching
    certificate, a refused client certificate, or brokers that cannot be reached.

    aiokafka reports a failed TLS handshake or SASL login only as "Unable to bootstrap" (the reason goes to
    its log), so for those this repeats the TLS handshake and the login with the first bootstrap server to
    find the reason.
    """
    from aiokafka import errors

    where = conn.describe()
    if isinstance(exc, KafkaConnectionError):
        return str(exc)
    if isinstance(exc, errors.KafkaConnectionError) and "bootstrap" in str(exc):
        if conn.tls:
            reason = await _tls_handshake_problem(conn)
            if reason is not None:
                return f"{reason} ({where})"
        exc = await _login_problem(conn) or exc
    text = str(exc)
    if isinstance(exc, errors.SaslAuthenticationFailed | errors.IllegalSaslStateError) or (
        "authentication" in text.lower() and conn.sasl
    ):
        return (
            f"Kafka refused the credentials of {conn.identity()} ({conn.security_protocol} to "
            f"{conn.bootstrap}): wrong user name or password ({_first_line(text)})"
        )
    if isinstance(exc, errors.UnsupportedSaslMechanismError):
        return f"the brokers do not offer SASL mechanism {conn.sasl_mechanism} ({where})"
    if isinstance(exc, TimeoutError):
        return f"no answer from Kafka within the timeout ({where})"
    if isinstance(exc, errors.KafkaError | OSError):
        return f"cannot connect to Kafka ({where}): {_first_line(text) or type(exc).__name__}"
    return f"Kafka client failed ({where}): {type(exc).__name__}: {_first_line(text)}"


async def _tls_handshake_problem(conn: KafkaConnection, timeout: float = 10.0) -> str | None:  # noqa: ASYNC109
    host, _, port = conn.bootstrap_servers[0].rpartition(":")
    context = conn.ssl_context()
    assert context is not None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, int(port), ssl=context, server_hostname=host)
            try:
                # TLS 1.3: a client certificate the broker refuses shows only on the first read.
                writer.write(b"\0\0\0\0")
                await writer.drain()
                await reader.read(1)
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
    except ssl.SSLCertVerificationError as exc:
        message = exc.verify_message or str(exc)
        if "hostname" in message.lower() or "ip address mismatch" in message.lower():
            return (
                f"TLS: the broker's certificate does not match the address {host!r} ({message}); "
                "use a broker address its certificate names"
            )
        return (
            f"TLS: the broker's certificate is not trusted ({message}); SHUDI_SSL_CAFILE must hold the CA "
            f"that signed it (now: {conn.ssl_cafile or 'the system trust store'})"
        )
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "CERTIFICATE_REQUIRED" in reason or "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason:
            return (
                f"TLS: the broker refused the client certificate ({reason}); mutual TLS needs "
                "SHUDI_SSL_CERTFILE/SHUDI_SSL_KEYFILE signed by a CA the broker trusts"
            )
        return f"TLS handshake with {host}:{port} failed: {reason}"
    except (OSError, TimeoutError):
        return None
    return None


async def _login_problem(conn: KafkaConnection) -> BaseException | None:
    """The exception one connection (with its SASL login) to the first bootstrap server raises, if any."""
    from aiokafka.conn import create_conn

    host, _, port = conn.bootstrap_servers[0].rpartition(":")
    options = conn.client_options()
    del options["bootstrap_servers"]
    try:
        async with asyncio.timeout(10):
            connection = await create_conn(host, int(port), **options)
    except Exception as exc:  # noqa: BLE001 -- it is what we are looking for
        return exc
    connection.close()
    return None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


# --------------------------------------------------------------------------- aiokafka under uvloop


def patch_aiokafka_closed_transport() -> None:
    """Make a write to a connection the peer reset a *connection* error in aiokafka, as it is on asyncio's
    own loop. Idempotent; the worker applies it before any client starts.

    Under uvloop, writing to a transport that a reset has closed raises ``RuntimeError`` (``unable to
    perform operation on <TCPTransport closed=True …>``); ``AIOKafkaConnection.send`` catches only
    ``OSError`` (aio-libs/aiokafka#1038). A producer's sender task then dies and the producer fails every
    later send (``KafkaError: Unexpected error during batch delivery``, aio-libs/aiokafka#907): Faust's
    producer (the counting agent's bursts and changelogs) crashed the worker on it. As a
    ``KafkaConnectionError`` it is retriable: the client reconnects, as after any broken connection.
    """
    from aiokafka import conn as aiokafka_conn

    cls = aiokafka_conn.AIOKafkaConnection
    if getattr(cls.send, "_shudi_patched", False):
        return
    original = cls.send

    def send(self: Any, request: Any, expect_response: bool = True) -> Any:
        try:
            return original(self, request, expect_response)
        except RuntimeError as err:
            writer = self._writer
            if writer is None or not writer.transport.is_closing():
                raise
            self.close(reason=aiokafka_conn.CloseReason.CONNECTION_BROKEN)
            raise aiokafka_conn.Errors.KafkaConnectionError(
                f"Connection at {self._host}:{self._port} broken: {err}"
            ) from err

    send._shudi_patched = True  # type: ignore[attr-defined]
    send.__wrapped__ = original  # type: ignore[attr-defined]
    cls.send = send
