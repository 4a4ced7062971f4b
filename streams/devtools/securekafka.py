"""The secured variant of the local broker: TLS material from a throwaway CA, SCRAM users, listeners.

``shudi kafka start --secure`` (:mod:`streams.devtools.localkafka`) uses this to run one KRaft node with

- a ``SASL_SSL`` listener (SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN; the SCRAM users are written into the
  storage when it is formatted, ``StorageTool format --add-scram``),
- an ``SSL`` listener that requires a client certificate (principal ``User:CN=<name>``),
- the controller listener on TLS with client certificates as well (the broker's own certificate, principal
  ``User:CN=kafka-broker``, a super user),
- the ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``: a client may do only what an ACL
  allows (super users: the broker and the SCRAM user ``admin``).

Certificates are PEM files (Kafka 4.1 reads PEM key and trust stores) made at start by a CA that exists only
in the broker's data directory; everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from streams.runtime.kafka import KafkaConnection

__all__ = ["ADMIN_USER", "BROKER_CN", "SecureSetup", "make_ca", "make_secure_setup"]

ADMIN_USER = "admin"
BROKER_CN = "kafka-broker"
# Users made when nothing else is asked for: the app's SCRAM user and its mutual-TLS identity.
DEFAULT_SCRAM_USERS = ("shudi",)
DEFAULT_TLS_USERS = ("shudi-tls",)
_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")


@dataclass(frozen=True)
class SecureSetup:
    """Ports, files and users of a secured local broker (all under ``root``)."""

    root: Path
    sasl_port: int
    ssl_port: int
    scram_users: tuple[str, ...]
    tls_users: tuple[str, ...]

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.crt"

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ssl_port}"

    def password_file(self, user: str) -> Path:
        return self.root / "passwords" / user

    def password(self, user: str) -> str:
        return self.password_file(user).read_text()

    def tls_user_dir(self, user: str) -> Path:
        """A Strimzi-style user directory: ``user.crt``, ``user.key`` and ``ca.crt``."""
        return self.root / "users" / user

    def admin(self) -> KafkaConnection:
        """The super user's connection (topic creation, ACLs) over SASL_SSL."""
        return self.scram(ADMIN_USER)

    def scram(
        self, user: str, password: str | None = None, mechanism: str = "SCRAM-SHA-512"
    ) -> KafkaConnection:
        return KafkaConnection.to(
            self.sasl_bootstrap,
            security_protocol="SASL_SSL",
            sasl_mechanism=mechanism,
            sasl_username=user,
            sasl_password=SecretStr(self.password(user) if password is None else password),
            ssl_cafile=self.ca_file,
        )

    def mutual_tls(self, user: str) -> KafkaConnection:
        d = self.tls_user_dir(user)
        return KafkaConnection.to(
            self.ssl_bootstrap,
            security_protocol="SSL",
            ssl_cafile=self.ca_file,
            ssl_certfile=d / "user.crt",
            ssl_keyfile=d / "user.key",
        )

    def scram_env(self, user: str) -> dict[str, str]:
        """``SHUDI_*`` settings for a client logging in as ``user`` with SCRAM-SHA-512 over TLS."""
        return {
            "SHUDI_BROKER": self.sasl_bootstrap,
            "SHUDI_SECURITY_PROTOCOL": "SASL_SSL",
            "SHUDI_SASL_MECHANISM": "SCRAM-SHA-512",
            "SHUDI_SASL_USERNAME": user,
            "SHUDI_SASL_PASSWORD_FILE": str(self.password_file(user)),
            "SHUDI_SSL_CAFILE": str(self.ca_file),
        }

    def tls_env(self, user: str) -> dict[str, str]:
        """``SHUDI_*`` settings for a client with ``user``'s certificate (mutual TLS)."""
        d = self.tls_user_dir(user)
        return {
            "SHUDI_BROKER": self.ssl_bootstrap,
            "SHUDI_SECURITY_PROTOCOL": "SSL",
            "SHUDI_SSL_CAFILE": str(self.ca_file),
            "SHUDI_SSL_CERTFILE": str(d / "user.crt"),
            "SHUDI_SSL_KEYFILE": str(d / "user.key"),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "sasl_port": self.sasl_port,
            "ssl_port": self.ssl_port,
            "scram_users": list(self.scram_users),
            "tls_users": list(self.tls_users),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> SecureSetup:
        return cls(
            root=Path(raw["root"]),
            sasl_port=int(raw["sasl_port"]),
            ssl_port=int(raw["ssl_port"]),
            scram_users=tuple(raw["scram_users"]),
            tls_users=tuple(raw["tls_users"]),
        )

    # --- the broker's side ---------------------------------------------------------------------------

    def server_properties(self, controller_port: int) -> dict[str, str]:
        """What a secured broker adds to (and overrides in) the plain single-node configuration."""
        broker_pem = str(self.root / "broker.pem")
        plain_users = " ".join(f'user_{u}="{self.password(u)}"' for u in (ADMIN_USER, *self.scram_users))
        props = {
            "listeners": (
                f"SASL_SSL://127.0.0.1:{self.sasl_port},SSL://127.0.0.1:{self.ssl_port},"
                f"CONTROLLER://127.0.0.1:{controller_port}"
            ),
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{self.sasl_port},SSL://127.0.0.1:{self.ssl_port}",
            "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL,SSL:SSL",
            "inter.broker.listener.name": "SSL",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": broker_pem,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            "listener.name.ssl.ssl.client.auth": "required",
            "listener.name.controller.ssl.client.auth": "required",
            "sasl.enabled.mechanisms": ",".join((*_MECHANISMS, "PLAIN")),
            "listener.name.sasl_ssl.plain.sasl.jaas.config": (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
            ),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": f"User:CN={BROKER_CN};User:{ADMIN_USER}",
        }
        for mechanism in _MECHANISMS:
            props[f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
        return props

    def format_args(self) -> list[str]:
        """``StorageTool format`` arguments that create the SCRAM users with the storage."""
        args: list[str] = []
        for user in (ADMIN_USER, *self.scram_users):
            for mechanism in _MECHANISMS:
                args += ["--add-scram", f"{mechanism}=[name={user},password={self.password(user)}]"]
        return args


def make_secure_setup(
    root: Path,
    sasl_port: int,
    ssl_port: int,
    scram_users: Iterable[str] = DEFAULT_SCRAM_USERS,
    tls_users: Iterable[str] = DEFAULT_TLS_USERS,
) -> SecureSetup:
    """Write a throwaway CA, the broker's certificate, each TLS user's certificate and each SCRAM user's
    password under ``root``; a ``root`` that already holds them (a kept data directory) is reused."""
    setup = SecureSetup(root, sasl_port, ssl_port, tuple(scram_users), tuple(tls_users))
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "a secured broker needs the `cryptography` package for its certificates: pip install 'shudi[dev]'"
        ) from None
    marker = root / "setup.json"
    if marker.exists() and json.loads(marker.read_text()) == setup.to_json():
        return setup
    root.mkdir(parents=True, exist_ok=True)
    for user in (ADMIN_USER, *setup.scram_users):
        path = setup.password_file(user)
        if not path.exists():
            _write_private(path, secrets.token_hex(16).encode())
    ca_key, ca_cert = make_ca("shudi throwaway CA")
    _write_private(root / "ca.key", _key_pem(ca_key))
    setup.ca_file.write_bytes(_cert_pem(ca_cert))
    key, cert = _issue(ca_key, ca_cert, BROKER_CN, server=True)
    _write_private(root / "broker.pem", _key_pem(key) + _cert_pem(cert) + _cert_pem(ca_cert))
    for user in setup.tls_users:
        key, cert = _issue(ca_key, ca_cert, user, server=False)
        d = setup.tls_user_dir(user)
        d.mkdir(parents=True, exist_ok=True)
        _write_private(d / "user.key", _key_pem(key))
        (d / "user.crt").write_bytes(_cert_pem(cert))
        (d / "ca.crt").write_bytes(_cert_pem(ca_cert))
    marker.write_text(json.dumps(setup.to_json(), indent=2) + "\n")
    return setup


# --- certificates ----------------------------------------------------------------------------------------


def make_ca(name: str) -> tuple[Any, Any]:
    """A self-signed CA (EC P-256 key, valid for 30 days): ``(private key, certificate)``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _issue(ca_key: Any, ca_cert: Any, common_name: str, *, server: bool) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        # The one name clients use: 127.0.0.1. `localhost` is deliberately not in it (the hostname-mismatch
        # test connects through it).
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem


def _cert_pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    pem: bytes = cert.public_bytes(serialization.Encoding.PEM)
    return pem


def write_ca(path: Path, name: str = "some other CA") -> Path:
    """A CA certificate that signed nothing of the broker's (for "untrusted CA" checks)."""
    _, cert = make_ca(name)
    path.write_bytes(_cert_pem(cert))
    return path


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
