"""streams.runtime.kafka: one connection object makes every Kafka client; no secret shows anywhere."""

from __future__ import annotations

import asyncio
import re
import ssl
from pathlib import Path

import faust
import pytest
from pydantic import SecretStr

from streams.devtools.securekafka import SecureSetup, make_secure_setup
from streams.runtime.app import create_app
from streams.runtime.kafka import KafkaConnection, KafkaConnectionError, connection_from_env, explain_failure
from streams.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
SECRET = "pw-Kq93TopSecret"

# --- nothing builds a client but the connection -----------------------------------------------------------

CONSTRUCTOR = re.compile(r"\bAIOKafka(Consumer|Producer|AdminClient|Client)\s*\(|\bbootstrap_servers\s*=")
BARE_BROKER = re.compile(r"\bsettings\.(broker|bootstrap_servers)\b")


def _sources() -> list[Path]:
    return sorted([*(REPO / "streams").rglob("*.py"), *(REPO / "bench").rglob("*.py")])


def test_no_module_but_the_connection_constructs_a_kafka_client() -> None:
    """Every aiokafka client of the service, the tools and the benchmarks comes from KafkaConnection, so
    none can miss TLS or SASL (tests may build their own)."""
    allowed = {REPO / "streams" / "runtime" / "kafka.py"}
    found = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in _sources()
        if path not in allowed
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if CONSTRUCTOR.search(line)
    ]
    assert found == [], "build clients with streams.runtime.kafka.KafkaConnection:\n" + "\n".join(found)


def test_no_module_hands_the_bare_broker_string_to_a_client() -> None:
    allowed = {REPO / "streams" / "runtime" / "kafka.py", REPO / "streams" / "settings.py"}
    found = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in _sources()
        if path not in allowed
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if BARE_BROKER.search(line)
    ]
    assert found == [], "use KafkaConnection.from_settings(settings):\n" + "\n".join(found)


def test_the_scan_would_catch_a_constructor() -> None:
    assert CONSTRUCTOR.search("    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)")
    assert CONSTRUCTOR.search("admin = AIOKafkaAdminClient(**kw)")
    assert BARE_BROKER.search("await create_topics(settings.broker, partitions)")
    assert not CONSTRUCTOR.search("consumer: AIOKafkaConsumer = conn.consumer()")


# --- options for each protocol ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> SecureSetup:
    """A throwaway CA with a client certificate (no broker): the files mutual TLS needs."""
    return make_secure_setup(tmp_path_factory.mktemp("tls"), 1, 2, scram_users=("u",), tls_users=("c",))


def test_plaintext_options() -> None:
    conn = KafkaConnection.from_settings(load_settings({"SHUDI_BROKER": "a:1, b:2"}))
    assert conn.client_options() == {
        "bootstrap_servers": ["a:1", "b:2"],
        "security_protocol": "PLAINTEXT",
        "ssl_context": None,
    }
    assert conn.faust_broker_urls() == ["kafka://a:1", "kafka://b:2"]
    assert conn.faust_credentials() is None


def test_sasl_ssl_scram_options(tls: SecureSetup) -> None:
    conn = KafkaConnection.from_settings(
        load_settings(
            {
                "SHUDI_BROKER": "k:9093",
                "SHUDI_SECURITY_PROTOCOL": "SASL_SSL",
                "SHUDI_SASL_MECHANISM": "SCRAM-SHA-512",
                "SHUDI_SASL_USERNAME": "svc",
                "SHUDI_SASL_PASSWORD": SECRET,
                "SHUDI_SSL_CAFILE": str(tls.ca_file),
            }
        )
    )
    options = conn.client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "svc"
    assert options["sasl_plain_password"] == SECRET
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    credentials = conn.faust_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.ssl_context is not None


def test_sasl_plaintext_plain_options() -> None:
    conn = KafkaConnection(
        ("k:9092",), "SASL_PLAINTEXT", "PLAIN", sasl_username="svc", sasl_password=SecretStr(SECRET)
    )
    assert conn.client_options()["ssl_context"] is None
    credentials = conn.faust_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_PLAINTEXT"
    assert credentials.mechanism.value == "PLAIN"


def test_mutual_tls_options(tls: SecureSetup) -> None:
    conn = KafkaConnection.from_settings(load_settings({**tls.tls_env("c"), "SHUDI_BROKER": "k:9093"}))
    context = conn.client_options()["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert isinstance(conn.faust_credentials(), faust.SSLCredentials)
    assert conn.identity().startswith("the client certificate")


def test_system_trust_store_without_a_ca_file() -> None:
    conn = KafkaConnection(("k:9093",), "SSL")
    context = conn.ssl_context()
    assert context is not None
    assert context.cert_store_stats()["x509_ca"] >= 0  # the default paths, not an empty custom store
    assert context.verify_mode == ssl.CERT_REQUIRED


def _encrypted_key(tls: SecureSetup, tmp_path: Path, password: bytes) -> Path:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((tls.tls_user_dir("c") / "user.key").read_bytes(), None)
    path = tmp_path / "encrypted.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )
    )
    return path


def test_an_encrypted_key_needs_its_password(tls: SecureSetup, tmp_path: Path) -> None:
    key = _encrypted_key(tls, tmp_path, b"key-pass-1")
    password_file = tmp_path / "key-password"
    password_file.write_text("key-pass-1\n")
    env = {
        **tls.tls_env("c"),
        "SHUDI_SSL_KEYFILE": str(key),
        "SHUDI_SSL_KEY_PASSWORD_FILE": str(password_file),
    }
    assert KafkaConnection.from_settings(load_settings(env)).ssl_context() is not None
    wrong = {**env, "SHUDI_SSL_KEY_PASSWORD": "nope"}
    del wrong["SHUDI_SSL_KEY_PASSWORD_FILE"]
    with pytest.raises(KafkaConnectionError, match="wrong key password"):
        KafkaConnection.from_settings(load_settings(wrong)).ssl_context()
    missing = {**env, "SHUDI_SSL_CERTFILE": str(tmp_path / "nope.crt")}
    with pytest.raises(KafkaConnectionError, match="not found"):
        KafkaConnection.from_settings(load_settings(missing)).ssl_context()


def test_with_bootstrap_keeps_the_security() -> None:
    conn = KafkaConnection(("a:1",), "SASL_SSL", "SCRAM-SHA-256", "svc", SecretStr(SECRET))
    other = conn.with_bootstrap("b:2,c:3")
    assert other.bootstrap_servers == ("b:2", "c:3")
    assert other.sasl_password == conn.sasl_password
    assert other.security_protocol == "SASL_SSL"


def test_connection_from_env_for_scripts(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text(SECRET)
    env = {
        "SHUDI_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "SHUDI_SASL_USERNAME": "bench",
        "SHUDI_SASL_PASSWORD_FILE": str(password),
    }
    conn = connection_from_env("x:9", env)
    assert conn.bootstrap == "x:9"
    assert conn.client_options()["sasl_plain_password"] == SECRET
    assert connection_from_env(None, {}).security_protocol == "PLAINTEXT"


# --- no secret shows ---------------------------------------------------------------------------------------


def test_no_secret_in_repr_describe_or_faust_credentials(tls: SecureSetup) -> None:
    conn = KafkaConnection(
        ("k:9093",),
        "SASL_SSL",
        "SCRAM-SHA-512",
        "svc",
        SecretStr(SECRET),
        ssl_cafile=tls.ca_file,
        ssl_certfile=tls.tls_user_dir("c") / "user.crt",
        ssl_keyfile=tls.tls_user_dir("c") / "user.key",
        ssl_key_password=SecretStr("kp-Zz19Secret"),
    )
    for text in (repr(conn), str(conn), conn.describe(), repr(conn.faust_credentials())):
        assert SECRET not in text
        assert "kp-Zz19Secret" not in text
    assert "svc" in conn.describe()


def test_no_secret_in_the_faust_app_configuration(fixture_db_path: Path, tmp_path: Path) -> None:
    """What Faust could print or serve about its configuration (conf, broker URLs, credentials repr)."""
    settings = load_settings(
        {
            "SHUDI_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "SHUDI_SASL_USERNAME": "svc",
            "SHUDI_SASL_PASSWORD": SECRET,
            "SHUDI_GEOIP_DB": str(fixture_db_path),
            "SHUDI_DATA_DIR": str(tmp_path),
            "SHUDI_METRICS_PORT": "0",
        }
    )
    app = create_app(settings).app
    shown = [repr(app.conf.broker), repr(app.conf.broker_credentials), str(app.conf.broker_credentials)]
    assert not [text for text in shown if SECRET in text]
    assert app.conf.topic_allow_declare is False


def test_explain_failure_names_the_cause_without_a_broker() -> None:
    from aiokafka.errors import SaslAuthenticationFailed

    conn = KafkaConnection(("127.0.0.1:1",), "SASL_PLAINTEXT", "SCRAM-SHA-512", "svc", SecretStr(SECRET))
    line = asyncio.run(explain_failure(conn, SaslAuthenticationFailed("Authentication failed")))
    assert "refused the credentials of SASL user 'svc'" in line
    assert SECRET not in line
    line = asyncio.run(explain_failure(conn, ConnectionRefusedError(111, "Connection refused")))
    assert line.startswith("cannot connect to Kafka (SASL_PLAINTEXT to 127.0.0.1:1")
