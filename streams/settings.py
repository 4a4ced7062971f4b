"""shudi's configuration: one typed, frozen object read from ``SHUDI_*`` environment variables.

Nothing here is read at import time; :func:`load_settings` reads the environment when the CLI asks for it,
and tests build :class:`Settings` directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "SHUDI_"

# Secrets that may also be given as a file (``SHUDI_<NAME>_FILE``: how Kubernetes mounts a Secret).
SECRET_FILE_SETTINGS = ("sasl_password", "ssl_key_password", "ip_hash_key")


class SettingsError(ValueError):
    """The environment holds a setting shudi cannot use (unknown name or bad value)."""


class Settings(BaseSettings):
    """Every knob of a shudi worker. README.md lists them with their defaults; keep the two in step."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", case_sensitive=False
    )

    # --- Kafka -------------------------------------------------------------------------------------------
    broker: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated (host:port).")
    app_id: str = Field("shudi", description="Faust application id: the consumer group and table prefix.")
    input_topic: str = Field("comments", description="Topic the comment events arrive on.")
    enriched_topic: str = Field("comments.enriched", description="Topic the labelled comments go to.")
    dlq_topic: str = Field(
        "comments.dlq", description="Dead-letter topic for events that cannot be processed."
    )
    counts_topic: str = Field(
        "territory.counts", description="Internal topic of per-batch territory counts and watermark ticks."
    )
    bursts_topic: str = Field("territory.bursts", description="Topic the burst events go to.")
    partitions: int = Field(8, ge=1, description="Partitions of the topics shudi creates.")
    replication_factor: int = Field(1, ge=1, description="Replication factor of the topics shudi creates.")
    dlq_retention_ms: int = Field(
        3 * 24 * 3600 * 1000,
        ge=60_000,
        description="retention.ms of the dead-letter topic; it holds raw IPs, so keep it short.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How clients talk to the brokers: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.",
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."
    )
    sasl_username: str | None = Field(None, description="SASL user (required with a SASL protocol).")
    sasl_password: SecretStr | None = Field(
        None, description="SASL password (required with a SASL protocol, or SHUDI_SASL_PASSWORD_FILE)."
    )
    sasl_password_file: Path | None = Field(
        None, description="File holding the SASL password (a mounted Secret), instead of SHUDI_SASL_PASSWORD."
    )
    ssl_cafile: Path | None = Field(
        None,
        description="CA bundle (PEM) the brokers' certificates are checked against; else the system store.",
    )
    ssl_certfile: Path | None = Field(
        None, description="Client certificate (PEM, chain allowed) for mutual TLS; needs SSL or SASL_SSL."
    )
    ssl_keyfile: Path | None = Field(
        None,
        description="Private key (PEM) of SHUDI_SSL_CERTFILE (default: the key inside that file).",
    )
    ssl_key_password: SecretStr | None = Field(
        None, description="Password of an encrypted SHUDI_SSL_KEYFILE (or SHUDI_SSL_KEY_PASSWORD_FILE)."
    )
    ssl_key_password_file: Path | None = Field(
        None, description="File holding the key password, instead of SHUDI_SSL_KEY_PASSWORD."
    )

    # --- Processing --------------------------------------------------------------------------------------
    batch_size: int = Field(2000, ge=1, description="Most events the agent takes from the stream at once.")
    flush_events: int = Field(
        20_000,
        ge=1,
        description="Commit (and send the counts) once this many events wait, else once a tick: "
        "bounds what a crash replays.",
    )
    batch_timeout_s: float = Field(0.05, gt=0, description="Longest wait to fill a batch, in seconds.")
    max_message_bytes: int = Field(65_536, ge=256, description="Larger input messages are dead-lettered.")
    stall_timeout_s: float = Field(
        120.0,
        gt=0,
        description="/healthz fails when the consumer is behind and has made no progress this long.",
    )
    ip_hash_key: SecretStr | None = Field(
        None, description="Secret for the keyed HMAC `ip_hash` field; no key, no trace of the IP in output."
    )
    ip_hash_key_file: Path | None = Field(
        None, description="File holding the `ip_hash` key, instead of SHUDI_IP_HASH_KEY."
    )

    # --- Windows and burst detection ------------------------------------------------------------------------
    window_s: int = Field(60, ge=1, description="Event-time window size, in seconds.")
    window_hop_s: int = Field(
        0,
        ge=0,
        description="Hop of hopping windows, in seconds (a divisor of the size); 0: tumbling windows.",
    )
    allowed_lateness_s: int = Field(
        30,
        ge=0,
        description="A window closes this long (event time) after its end; later events count as late.",
    )
    max_event_ahead_s: float = Field(
        3600.0,
        ge=0,
        description="Comments whose created_at is further ahead of the worker's clock are enriched but "
        "counted in no window (shudi_events_ahead_of_clock_total), so one wrong clock cannot close windows "
        "early; 0 turns the check off.",
    )
    tick_interval_s: float = Field(
        1.0,
        gt=0,
        description="How often each input partition's watermark and totals are sent to the counters.",
    )
    store: str = Field("memory://", description="Faust table store (rocksdb:// needs the rocksdb extra).")
    # The burst detector: one setting per streams.pipeline.detector.DetectorParams field (but window_s).
    detector_warmup_windows: int = Field(
        30, ge=1, description="Windows a territory is watched before it may fire."
    )
    detector_pseudo_count: float = Field(
        8.0, gt=0, description="Comments added to the rate before the log: smaller counts are counting noise."
    )
    detector_rate_alpha: float = Field(
        0.5, gt=0, le=1, description="EWMA weight of a window's count in the current rate."
    )
    detector_alpha: float = Field(
        0.005,
        gt=0,
        le=1,
        description="EWMA weight of a window in the own baseline level (slow: ~200 windows).",
    )
    detector_share_alpha: float = Field(
        0.05, gt=0, le=1, description="EWMA weight of a window in the share baseline and the expected counts."
    )
    detector_var_alpha: float = Field(
        0.0005, gt=0, le=1, description="EWMA weight of a window in the baselines' variance."
    )
    detector_huber_k: float = Field(
        1.0, gt=0, description="Residuals are clipped to this many sd before they move a baseline."
    )
    detector_var_clip: float = Field(
        4.0, gt=0, description="Residuals are clipped to this many sd before they enter a variance."
    )
    detector_on_threshold: float = Field(
        5.0, gt=0, description="Floor of the threshold (sd of the series' own residuals) that starts a burst."
    )
    detector_false_alarm: float = Field(
        0.001, gt=0, lt=1, description="Probability per window of the series' own tail threshold."
    )
    detector_tail_u: float = Field(3.0, gt=0, description="Level (sd) above which the tail is modelled.")
    detector_tail_alpha: float = Field(
        0.0005, gt=0, le=1, description="EWMA weight of a window in the tail estimates."
    )
    detector_own_threshold: float = Field(
        1.0, description="Own score a regional burst or a global surge also needs."
    )
    detector_off_threshold: float = Field(1.5, description="Score below which a burst cools down.")
    detector_off_windows: int = Field(2, ge=1, description="Consecutive cool windows that end a burst.")
    detector_min_count: int = Field(
        10, ge=0, description="A window with fewer comments never starts a burst."
    )
    detector_adapt_after: int = Field(
        60, ge=1, description="Windows after which a burst is taken for a new normal."
    )
    detector_cooldown_windows: int = Field(
        72, ge=0, description="Windows after a burst ends before the territory may start another."
    )
    detector_breadth: float = Field(
        0.5, ge=0, le=1, description="Global surge: share of the expected traffic that must be up together."
    )
    detector_breadth_ratio: float = Field(
        2.0, gt=0, description="Global surge: count / expected count that makes a territory up."
    )

    # --- GeoIP -------------------------------------------------------------------------------------------
    geoip_db: Annotated[tuple[Path, ...], NoDecode] = Field(
        (Path("/usr/share/GeoIP/GeoLite2-City.mmdb"),),
        min_length=1,
        description="Database files, comma separated, first answers first: GeoIP2-City compatible .mmdb, "
        "ip2region .xdb, IPIP.net .ipdb.",
    )
    geoip_reload_interval_s: float = Field(
        60.0, gt=0, description="How often the database file is checked for replacement, in seconds."
    )
    geoip_cache_size: int = Field(262_144, ge=1, description="Recent addresses whose label is cached.")

    @field_validator("geoip_db", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        """``a.xdb,b.mmdb`` (the environment's form) or one path → a tuple; a sequence passes through."""
        if isinstance(value, str | Path):
            paths = [p.strip() for p in str(value).split(",") if p.strip()]
            if not paths:
                raise ValueError("name at least one database file")
            return paths
        return value

    # --- Serving -----------------------------------------------------------------------------------------
    metrics_host: str = Field("0.0.0.0", description="Address of the Prometheus /metrics endpoint.")  # noqa: S104
    metrics_port: int = Field(9464, ge=0, le=65535, description="Port of /metrics; 0 turns it off.")
    web_host: str = Field("127.0.0.1", description="Address Faust's own web server binds to.")
    web_port: int = Field(6066, ge=1, le=65535, description="Port of Faust's web server.")
    data_dir: Path = Field(Path("./var/shudi"), description="Faust's data directory (tables, local state).")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() is the one place that reads the environment (and checks it for unknown names);
        # Settings(...) takes only what it is given, so a test's settings never pick up the process's.
        return (init_settings,)

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: object) -> object:
        """``SHUDI_<SECRET>_FILE``: the secret is the file's content (a trailing newline dropped), read once
        here, so a missing or unreadable file stops the worker at start, naming the setting."""
        if not isinstance(data, dict):
            return data
        values = dict(data)
        for secret in SECRET_FILE_SETTINGS:
            path = values.get(f"{secret}_file")
            if path in (None, ""):
                continue
            if values.get(secret) not in (None, ""):
                raise ValueError(
                    f"give {ENV_PREFIX}{secret.upper()} or {ENV_PREFIX}{secret.upper()}_FILE, not both"
                )
            try:
                text = Path(str(path)).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
                raise ValueError(
                    f"cannot read {ENV_PREFIX}{secret.upper()}_FILE ({path}): {reason}"
                ) from None
            values[secret] = text.removesuffix("\n").removesuffix("\r")
        return values

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> Settings:
        if self.security_protocol.startswith("SASL") and not (self.sasl_username and self.sasl_password):
            raise ValueError(
                "SASL security_protocol needs SHUDI_SASL_USERNAME and SHUDI_SASL_PASSWORD "
                "(or SHUDI_SASL_PASSWORD_FILE)"
            )
        return self

    @model_validator(mode="after")
    def _client_certificate_needs_tls(self) -> Settings:
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        if (self.ssl_certfile or self.ssl_keyfile) and not tls:
            raise ValueError(
                "SHUDI_SSL_CERTFILE/SHUDI_SSL_KEYFILE need SHUDI_SECURITY_PROTOCOL SSL or SASL_SSL"
            )
        if (self.ssl_keyfile or self.ssl_key_password) and not self.ssl_certfile:
            raise ValueError("SHUDI_SSL_KEYFILE and SHUDI_SSL_KEY_PASSWORD need SHUDI_SSL_CERTFILE")
        if self.ssl_cafile and not tls:
            raise ValueError("SHUDI_SSL_CAFILE needs SHUDI_SECURITY_PROTOCOL SSL or SASL_SSL")
        return self

    @model_validator(mode="after")
    def _hop_divides_window(self) -> Settings:
        if self.window_hop_s and (self.window_hop_s > self.window_s or self.window_s % self.window_hop_s):
            raise ValueError("SHUDI_WINDOW_HOP_S must divide SHUDI_WINDOW_S")
        return self

    @property
    def bootstrap_servers(self) -> list[str]:
        return [s.strip() for s in self.broker.split(",") if s.strip()]


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Read settings from ``environ`` (default ``os.environ``), rejecting unknown ``SHUDI_`` names.

    pydantic-settings ignores environment variables that match no field, so a misspelt
    ``SHUDI_GEOIP_DBB`` would silently fall back to the default; we refuse it instead.
    """
    env = os.environ if environ is None else environ
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    unknown = sorted(k for k in env if k.upper().startswith(ENV_PREFIX) and k.upper() not in known)
    if unknown:
        raise SettingsError(f"unknown setting(s): {', '.join(unknown)} (see README.md, 'Settings')")
    values: dict[str, object] = {
        k[len(ENV_PREFIX) :].lower(): v for k, v in env.items() if k.upper().startswith(ENV_PREFIX)
    }
    values.update(overrides)
    try:
        return Settings.model_validate(values)
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc
