"""streams.settings: defaults, SHUDI_* parsing and coercion, rejection of unknown names and bad values,
and README.md's settings table staying in step with the Settings fields."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal, get_origin

import pydantic
import pytest
from pydantic import SecretStr

from streams.settings import ENV_PREFIX, Settings, SettingsError, load_settings

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SHUDI_ variable of the developer's shell may change what these tests see."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


# --- defaults ----------------------------------------------------------------------------------------------


def test_defaults() -> None:
    s = Settings()
    assert s.broker == "127.0.0.1:9092"
    assert s.bootstrap_servers == ["127.0.0.1:9092"]
    assert s.app_id == "shudi"
    assert (s.input_topic, s.enriched_topic, s.dlq_topic) == ("comments", "comments.enriched", "comments.dlq")
    assert s.partitions == 8
    assert s.replication_factor == 1
    assert s.dlq_retention_ms == 3 * 24 * 3600 * 1000
    assert s.security_protocol == "PLAINTEXT"
    assert s.sasl_mechanism == "PLAIN"
    assert s.sasl_username is None
    assert s.sasl_password is None
    assert s.ssl_cafile is None
    assert s.batch_size == 2000
    assert s.flush_events == 20_000
    assert s.batch_timeout_s == 0.05
    assert s.max_message_bytes == 65_536
    assert s.ip_hash_key is None
    assert s.geoip_db == (Path("/usr/share/GeoIP/GeoLite2-City.mmdb"),)
    assert s.geoip_reload_interval_s == 60.0
    assert s.geoip_cache_size == 262_144
    assert s.metrics_host == "0.0.0.0"
    assert s.metrics_port == 9464
    assert s.web_host == "127.0.0.1"
    assert s.web_port == 6066
    assert s.data_dir == Path("var/shudi")
    assert s.log_level == "info"


def test_load_settings_with_empty_environ_gives_the_defaults() -> None:
    assert load_settings(environ={}) == Settings()


def test_load_settings_reads_only_the_given_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHUDI_PARTITIONS", "5")
    monkeypatch.setenv("SHUDI_LOG_LEVEL", "debug")
    s = load_settings(environ={"SHUDI_APP_ID": "other"})
    assert s.app_id == "other"
    assert s.partitions == 8
    assert s.log_level == "info"


def test_load_settings_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHUDI_PARTITIONS", "5")
    assert load_settings().partitions == 5
    monkeypatch.setenv("SHUDI_GEOIP_DBB", "x.mmdb")
    with pytest.raises(SettingsError, match="SHUDI_GEOIP_DBB"):
        load_settings()


# --- reading and coercing SHUDI_ values ---------------------------------------------------------------------


def test_values_are_read_and_coerced() -> None:
    s = load_settings(
        environ={
            "SHUDI_PARTITIONS": "3",
            "SHUDI_REPLICATION_FACTOR": "2",
            "SHUDI_DLQ_RETENTION_MS": "3600000",
            "SHUDI_BATCH_SIZE": "250",
            "SHUDI_BATCH_TIMEOUT_S": "0.25",
            "SHUDI_GEOIP_RELOAD_INTERVAL_S": "5",
            "SHUDI_GEOIP_DB": "/srv/geo/City.mmdb",
            "SHUDI_DATA_DIR": "/var/lib/shudi",
            "SHUDI_SSL_CAFILE": "/etc/ssl/ca.pem",
            "SHUDI_IP_HASH_KEY": "hash-key-value",
            "SHUDI_METRICS_PORT": "0",
            "SHUDI_WEB_PORT": "65535",
            "SHUDI_LOG_LEVEL": "debug",
            "SHUDI_INPUT_TOPIC": "in",
            "SHUDI_SECURITY_PROTOCOL": "SSL",
        }
    )
    assert s.partitions == 3
    assert type(s.partitions) is int
    assert s.replication_factor == 2
    assert s.dlq_retention_ms == 3_600_000
    assert s.batch_size == 250
    assert s.batch_timeout_s == 0.25
    assert type(s.batch_timeout_s) is float
    assert s.geoip_reload_interval_s == 5.0
    assert type(s.geoip_reload_interval_s) is float
    assert s.geoip_db == (Path("/srv/geo/City.mmdb"),)
    assert isinstance(s.geoip_db[0], Path)
    assert s.data_dir == Path("/var/lib/shudi")
    assert s.ssl_cafile == Path("/etc/ssl/ca.pem")
    assert isinstance(s.ip_hash_key, SecretStr)
    assert s.ip_hash_key.get_secret_value() == "hash-key-value"
    assert s.metrics_port == 0
    assert s.web_port == 65535
    assert s.log_level == "debug"
    assert s.input_topic == "in"
    assert s.security_protocol == "SSL"
    # untouched fields keep their defaults
    assert s.enriched_topic == "comments.enriched"
    assert s.geoip_cache_size == 262_144


def test_prefix_is_case_insensitive() -> None:
    assert load_settings(environ={"shudi_partitions": "4"}).partitions == 4


def test_non_shudi_variables_are_ignored() -> None:
    s = load_settings(
        environ={
            "PATH": "/usr/bin",
            "PARTITIONS": "99",
            "KAFKA_BROKER": "elsewhere:9092",
            "XSHUDI_PARTITIONS": "7",
            "SHUD_PARTITIONS": "7",
        }
    )
    assert s == Settings()


@pytest.mark.parametrize("name", ["SHUDI_GEOIP_DBB", "SHUDI_PARTITION", "SHUDI_", "shudi_brokers"])
def test_unknown_shudi_variable_is_rejected_by_name(name: str) -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings(environ={name: "x", "SHUDI_PARTITIONS": "2"})
    assert name in str(excinfo.value)


def test_every_unknown_name_is_listed() -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings(environ={"SHUDI_GEOIP_DBB": "x", "SHUDI_BROKERS": "y", "SHUDI_BROKER": "ok:1"})
    message = str(excinfo.value)
    assert "SHUDI_GEOIP_DBB" in message
    assert "SHUDI_BROKERS" in message
    assert "SHUDI_BROKER," not in message  # the valid one is not reported


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("SHUDI_PARTITIONS", "-1", "partitions"),
        ("SHUDI_PARTITIONS", "0", "partitions"),
        ("SHUDI_PARTITIONS", "eight", "partitions"),
        ("SHUDI_PARTITIONS", "1.5", "partitions"),
        ("SHUDI_REPLICATION_FACTOR", "0", "replication_factor"),
        ("SHUDI_METRICS_PORT", "70000", "metrics_port"),
        ("SHUDI_METRICS_PORT", "-1", "metrics_port"),
        ("SHUDI_WEB_PORT", "0", "web_port"),
        ("SHUDI_WEB_PORT", "65536", "web_port"),
        ("SHUDI_LOG_LEVEL", "verbose", "log_level"),
        ("SHUDI_LOG_LEVEL", "trace", "log_level"),
        ("SHUDI_BATCH_TIMEOUT_S", "0", "batch_timeout_s"),
        ("SHUDI_BATCH_TIMEOUT_S", "soon", "batch_timeout_s"),
        ("SHUDI_BATCH_SIZE", "0", "batch_size"),
        ("SHUDI_FLUSH_EVENTS", "0", "flush_events"),
        ("SHUDI_MAX_MESSAGE_BYTES", "100", "max_message_bytes"),
        ("SHUDI_DLQ_RETENTION_MS", "1000", "dlq_retention_ms"),
        ("SHUDI_GEOIP_CACHE_SIZE", "0", "geoip_cache_size"),
        ("SHUDI_GEOIP_RELOAD_INTERVAL_S", "-5", "geoip_reload_interval_s"),
        ("SHUDI_SECURITY_PROTOCOL", "TLS", "security_protocol"),
        ("SHUDI_SASL_MECHANISM", "GSSAPI", "sasl_mechanism"),
    ],
)
def test_bad_values_are_rejected(name: str, value: str, field: str) -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings(environ={name: value})
    assert field in str(excinfo.value)


@pytest.mark.parametrize(("name", "value"), [("SHUDI_METRICS_PORT", "65535"), ("SHUDI_PARTITIONS", "1")])
def test_boundary_values_are_accepted(name: str, value: str) -> None:
    s = load_settings(environ={name: value})
    assert getattr(s, name[len(ENV_PREFIX) :].lower()) == int(value)


def test_overrides_win_over_environ() -> None:
    s = load_settings(environ={"SHUDI_PARTITIONS": "3"}, partitions=5)
    assert s.partitions == 5


# --- frozen, SASL, bootstrap servers, secrets ---------------------------------------------------------------


def test_settings_are_frozen() -> None:
    s = load_settings(environ={"SHUDI_PARTITIONS": "3"})
    with pytest.raises(pydantic.ValidationError):
        s.partitions = 4  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        s.broker = "elsewhere:9092"  # type: ignore[misc]
    assert s.partitions == 3
    assert s.broker == "127.0.0.1:9092"
    hash(s)  # frozen models are hashable


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize(
    "credentials",
    [{}, {"SHUDI_SASL_USERNAME": "svc"}, {"SHUDI_SASL_PASSWORD": "pw"}, {"SHUDI_SASL_USERNAME": ""}],
    ids=["none", "username-only", "password-only", "empty-username"],
)
def test_sasl_without_credentials_is_rejected(protocol: str, credentials: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="SASL"):
        load_settings(environ={"SHUDI_SECURITY_PROTOCOL": protocol, **credentials})


def test_sasl_with_credentials_is_accepted() -> None:
    s = load_settings(
        environ={
            "SHUDI_SECURITY_PROTOCOL": "SASL_SSL",
            "SHUDI_SASL_MECHANISM": "SCRAM-SHA-512",
            "SHUDI_SASL_USERNAME": "svc",
            "SHUDI_SASL_PASSWORD": "pw-secret",
        }
    )
    assert s.security_protocol == "SASL_SSL"
    assert s.sasl_mechanism == "SCRAM-SHA-512"
    assert s.sasl_username == "svc"
    assert s.sasl_password is not None
    assert s.sasl_password.get_secret_value() == "pw-secret"


@pytest.mark.parametrize(
    ("broker", "servers"),
    [
        ("a:9092", ["a:9092"]),
        ("a:9092,b:9093", ["a:9092", "b:9093"]),
        (" a:9092 , b:9093 ,c:9094", ["a:9092", "b:9093", "c:9094"]),
        ("a:9092,,b:9093,", ["a:9092", "b:9093"]),
        ("\ta:9092\n, b:9093", ["a:9092", "b:9093"]),
    ],
)
def test_bootstrap_servers_split_and_strip(broker: str, servers: list[str]) -> None:
    assert load_settings(environ={"SHUDI_BROKER": broker}).bootstrap_servers == servers


def test_secrets_do_not_appear_in_repr_or_str() -> None:
    s = load_settings(
        environ={
            "SHUDI_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "SHUDI_SASL_USERNAME": "svc",
            "SHUDI_SASL_PASSWORD": "pw-Zq81xTopSecret",
            "SHUDI_IP_HASH_KEY": "hk-Vb27yAlsoSecret",
        }
    )
    for text in (repr(s), str(s), repr(s.model_dump())):
        assert "pw-Zq81xTopSecret" not in text
        assert "hk-Vb27yAlsoSecret" not in text
    assert "svc" in repr(s)  # the username is not a secret: repr is not simply blank
    assert s.ip_hash_key is not None
    assert s.ip_hash_key.get_secret_value() == "hk-Vb27yAlsoSecret"


# --- README.md's settings table -----------------------------------------------------------------------------
#
# Expected format, anywhere in README.md (further columns, e.g. a description, are allowed):
#
#   ## Settings
#
#   | Variable | Default | Description |
#   |---|---|---|
#   | `SHUDI_BROKER` | `127.0.0.1:9092` | Kafka bootstrap servers ... |
#   | `SHUDI_SSL_CAFILE` | `None` | ... |
#
# The first column is the variable name in backticks, the second the default in backticks: `None` (or
# `unset`) for None, strings without quotes, paths in any equivalent spelling (`./var/shudi`), numbers as
# Python reads them (`0.05`, `60`, `259200000` or `259_200_000`). Names must match the fields exactly;
# a row for a variable that is not a field fails the test too.

_ROW = re.compile(r"^\|\s*`(?P<name>[^`]+)`\s*\|\s*`(?P<default>[^`]*)`\s*\|")


def settings_table(markdown: str) -> dict[str, str]:
    """``{env var name: default text}`` from the table under ``## Settings`` (up to the next ``## ``)."""
    lines = markdown.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "## Settings")
    except StopIteration:
        raise AssertionError("README.md has no '## Settings' heading") from None
    table: dict[str, str] = {}
    for line in lines[start + 1 :]:
        if line.startswith(("## ", "# ")):
            break
        m = _ROW.match(line.strip())
        if m:
            table[m["name"]] = m["default"]
    return table


def expected_default_text(field: str) -> str:
    """How the table should write ``field``'s default (the canonical form; see ``default_matches``)."""
    default = Settings.model_fields[field].default
    if isinstance(default, tuple):  # several files: the environment's comma-separated form
        return ",".join(str(p) for p in default)
    return str(default)


def default_matches(field: str, text: str) -> bool:
    """Whether the README's default text means the code's default: `None` for None, any spelling of the
    same path (`./var/shudi`), number (`259_200_000`, `60`) or string."""
    default = Settings.model_fields[field].default
    if default is None:
        return text in ("None", "unset", "")
    try:
        if isinstance(default, bool):
            return text.lower() == str(default).lower()
        if isinstance(default, int):
            return int(text.replace("_", "")) == default
        if isinstance(default, float):
            return float(text.replace("_", "")) == default
    except ValueError:
        return False
    if isinstance(default, Path):
        return Path(text) == default
    if isinstance(default, tuple):
        return tuple(Path(p.strip()) for p in text.split(",")) == default
    return text == str(default)


def missing_or_wrong(table: dict[str, str]) -> list[str]:
    problems = []
    for field in Settings.model_fields:
        name = ENV_PREFIX + field.upper()
        if name not in table:
            problems.append(f"{name} missing")
        elif not default_matches(field, table[name]):
            problems.append(
                f"{name}: README says {table[name]!r}, code says {expected_default_text(field)!r}"
            )
    problems.extend(
        f"{name} is not a setting"
        for name in table
        if name.removeprefix(ENV_PREFIX).lower() not in Settings.model_fields
    )
    return problems


def _full_table() -> str:
    rows = "\n".join(
        f"| `{ENV_PREFIX}{f.upper()}` | `{expected_default_text(f)}` | text |" for f in Settings.model_fields
    )
    return f"# shudi\n\nintro\n\n## Settings\n\n| Variable | Default | Description |\n|---|---|---|\n{rows}\n"


def test_table_parser_accepts_a_complete_table() -> None:
    table = settings_table(_full_table())
    assert len(table) == len(Settings.model_fields)
    assert table["SHUDI_BROKER"] == "127.0.0.1:9092"
    assert table["SHUDI_SASL_PASSWORD"] == "None"
    assert table["SHUDI_BATCH_TIMEOUT_S"] == "0.05"
    assert missing_or_wrong(table) == []
    spelled = (
        _full_table()
        .replace("`var/shudi`", "`./var/shudi`")
        .replace("`259200000`", "`259_200_000`")
        .replace("`60.0`", "`60`")
    )
    assert missing_or_wrong(settings_table(spelled)) == []


def test_table_parser_reports_a_missing_field_and_a_wrong_default() -> None:
    text = _full_table()
    without = "\n".join(line for line in text.splitlines() if "`SHUDI_GEOIP_DB`" not in line)
    assert missing_or_wrong(settings_table(without)) == ["SHUDI_GEOIP_DB missing"]
    wrong = text.replace("| `SHUDI_PARTITIONS` | `8` |", "| `SHUDI_PARTITIONS` | `16` |")
    assert missing_or_wrong(settings_table(wrong)) == ["SHUDI_PARTITIONS: README says '16', code says '8'"]
    extra = text + "| `SHUDI_BOGUS` | `1` | gone |\n"
    assert missing_or_wrong(settings_table(extra)) == ["SHUDI_BOGUS is not a setting"]


def test_table_parser_stops_at_the_next_section() -> None:
    text = _full_table().replace("| `SHUDI_WEB_PORT`", "## Later\n\n| `SHUDI_WEB_PORT`")
    assert "SHUDI_WEB_PORT" not in settings_table(text)
    with pytest.raises(AssertionError, match="Settings"):
        settings_table("# shudi\n\n| `SHUDI_BROKER` | `127.0.0.1:9092` |\n")


def test_readme_lists_every_setting_with_its_default() -> None:
    assert README.is_file(), f"{README} does not exist; it must document the settings (## Settings table)"
    problems = missing_or_wrong(settings_table(README.read_text(encoding="utf-8")))
    assert problems == [], "README.md '## Settings' table out of step with Settings:\n" + "\n".join(problems)


def test_geoip_db_takes_an_ordered_list_of_files() -> None:
    s = load_settings(
        environ={"SHUDI_GEOIP_DB": "/g/ip2region_v4.xdb, /g/ip2region_v6.xdb,/g/GeoLite2-City.mmdb"}
    )
    assert s.geoip_db == (
        Path("/g/ip2region_v4.xdb"),
        Path("/g/ip2region_v6.xdb"),
        Path("/g/GeoLite2-City.mmdb"),
    )
    with pytest.raises(SettingsError, match="database file"):
        load_settings(environ={"SHUDI_GEOIP_DB": " , "})


# --- every value the table documents is accepted ----------------------------------------------------------

_ROW_MEANING = re.compile(r"^\|\s*`(?P<name>[^`]+)`\s*\|\s*`(?P<default>[^`]*)`\s*\|(?P<meaning>.*)\|\s*$")
# What an enumerated setting needs beside it to be valid on its own (SASL needs credentials).
_COMPANIONS = {
    "SHUDI_SECURITY_PROTOCOL": {"SHUDI_SASL_USERNAME": "u", "SHUDI_SASL_PASSWORD": "p"},
    "SHUDI_SASL_MECHANISM": {
        "SHUDI_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "SHUDI_SASL_USERNAME": "u",
        "SHUDI_SASL_PASSWORD": "p",
    },
}


def documented_values(markdown: str) -> dict[str, list[str]]:
    """``{env var: values}`` for every enumerated (``Literal``) setting: its default and every backticked
    word of its meaning column that is not another variable's name."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "## Settings")
    found: dict[str, list[str]] = {}
    for line in lines[start + 1 :]:
        if line.startswith(("## ", "# ")):
            break
        m = _ROW_MEANING.match(line.strip())
        if m is None:
            continue
        field = m["name"].removeprefix("SHUDI_").lower()
        annotation = Settings.model_fields[field].annotation if field in Settings.model_fields else None
        if get_origin(annotation) is not Literal:
            continue
        words = re.findall(r"`([^`]+)`", m["meaning"])
        found[m["name"]] = [m["default"], *(w for w in words if not w.startswith("SHUDI_"))]
    return found


def test_the_table_documents_the_enumerated_settings() -> None:
    values = documented_values(README.read_text(encoding="utf-8"))
    assert {"SHUDI_LOG_LEVEL", "SHUDI_SECURITY_PROTOCOL", "SHUDI_SASL_MECHANISM"} <= set(values), values
    assert set(values["SHUDI_LOG_LEVEL"]) == {"debug", "info", "warning", "error"}


def test_every_documented_value_of_an_enumerated_setting_is_accepted() -> None:
    for name, values in documented_values(README.read_text(encoding="utf-8")).items():
        for value in values:
            environ = {name: value, **_COMPANIONS.get(name, {})}
            try:
                load_settings(environ)
            except SettingsError as exc:
                raise AssertionError(
                    f"README documents {name}={value!r}, the settings reject it: {exc}"
                ) from None


def test_every_documented_log_level_configures_faust() -> None:
    from faust.cli import params
    from faust.cli.base import LOGLEVELS

    from streams.cli.worker import faust_worker_argv

    faust_level = params.CaseInsensitiveChoice(LOGLEVELS)
    for value in documented_values(README.read_text(encoding="utf-8"))["SHUDI_LOG_LEVEL"]:
        argv = faust_worker_argv(load_settings({"SHUDI_LOG_LEVEL": value}), ["--without-web"])
        assert argv[:3] == ["shudi", "worker", "--loglevel"], argv
        # Faust's own option type, as `faust worker --loglevel` parses it: a bad value raises BadParameter.
        faust_level.convert(argv[3], None, None)
        assert argv[4:] == ["--without-web"]


# --- secrets from files, mutual TLS ----------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["SASL_PASSWORD", "SSL_KEY_PASSWORD", "IP_HASH_KEY"])
def test_a_secret_is_read_from_its_file(secret: str, tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("from-a-file-7f3\n")  # `echo > file` adds a newline; Kubernetes Secrets usually do not
    base = {"SHUDI_SECURITY_PROTOCOL": "SASL_SSL", "SHUDI_SASL_USERNAME": "svc"}
    if secret != "SASL_PASSWORD":
        base["SHUDI_SASL_PASSWORD"] = "pw"
    if secret == "SSL_KEY_PASSWORD":
        base["SHUDI_SSL_CERTFILE"] = "/etc/user.crt"
    s = load_settings({**base, f"SHUDI_{secret}_FILE": str(path)})
    value = getattr(s, secret.lower())
    assert isinstance(value, SecretStr)
    assert value.get_secret_value() == "from-a-file-7f3"
    assert "from-a-file-7f3" not in repr(s)


def test_a_secret_and_its_file_together_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("x")
    with pytest.raises(SettingsError, match="not both"):
        load_settings({"SHUDI_IP_HASH_KEY": "k", "SHUDI_IP_HASH_KEY_FILE": str(path)})


def test_an_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SettingsError, match=r"SHUDI_SASL_PASSWORD_FILE .*nope"):
        load_settings(
            {
                "SHUDI_SECURITY_PROTOCOL": "SASL_SSL",
                "SHUDI_SASL_USERNAME": "svc",
                "SHUDI_SASL_PASSWORD_FILE": str(missing),
            }
        )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SHUDI_SSL_CERTFILE": "/c.crt"}, "SSL or SASL_SSL"),
        ({"SHUDI_SSL_CAFILE": "/ca.crt"}, "SSL or SASL_SSL"),
        ({"SHUDI_SECURITY_PROTOCOL": "SSL", "SHUDI_SSL_KEYFILE": "/k.key"}, "need SHUDI_SSL_CERTFILE"),
        ({"SHUDI_SECURITY_PROTOCOL": "SSL", "SHUDI_SSL_KEY_PASSWORD": "p"}, "need SHUDI_SSL_CERTFILE"),
    ],
)
def test_tls_files_without_tls_are_rejected(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(environ)


def test_mutual_tls_settings_are_accepted() -> None:
    s = load_settings(
        {
            "SHUDI_SECURITY_PROTOCOL": "SSL",
            "SHUDI_SSL_CAFILE": "/ca.crt",
            "SHUDI_SSL_CERTFILE": "/user.crt",
            "SHUDI_SSL_KEYFILE": "/user.key",
            "SHUDI_SSL_KEY_PASSWORD": "kp",
        }
    )
    assert s.ssl_certfile == Path("/user.crt")
    assert s.ssl_keyfile == Path("/user.key")
    assert s.ssl_key_password is not None
