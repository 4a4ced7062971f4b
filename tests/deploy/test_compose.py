"""docker-compose.yml and the Dockerfile, checked without Docker: against the Compose Specification's JSON
Schema, against shudi itself (its CLI, settings, topics, metrics port) and with promtool.

What this cannot prove: that the images pull and build, that the containers start and talk to each other.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

import click
import jsonschema
import pytest
import yaml

from streams.cli import main as cli_main
from streams.runtime.topics import topic_plan
from streams.settings import ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SCHEMA = ROOT / "tests" / "data" / "compose-spec" / "compose-spec.json"

WORKERS = ("worker-1", "worker-2")
ONE_SHOTS = ("topics", "geoip-init", "grafana-secret")
PINNED_IMAGE = re.compile(r"^[a-z0-9][a-z0-9./_-]*:(?P<tag>[\w][\w.-]*)@sha256:[0-9a-f]{64}$")

# ------------------------------------------------------------------------------------------------------------
# Compose: interpolation (as `docker compose config` does it) and helpers
# ------------------------------------------------------------------------------------------------------------

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariableError(ValueError):
    pass


def interpolate_str(text: str, env: Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("named")
        op, arg = m.group("op"), m.group("arg") or ""
        value = env.get(name)
        unset_or_empty = not value
        if op in (":-", "-"):
            return arg if (unset_or_empty if op == ":-" else value is None) else str(value)
        if op in (":?", "?"):
            if unset_or_empty if op == ":?" else value is None:
                raise MissingVariableError(f"{name}: {arg}")
            return str(value)
        if op in (":+", "+"):
            return "" if (unset_or_empty if op == ":+" else value is None) else arg
        return value or ""

    return _VAR.sub(sub, text)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate_str(node, env)
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    return node


def load_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    result: dict[str, Any] = interpolate(raw, env or {})
    return result


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def env_of(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool

    @property
    def is_bind(self) -> bool:
        return self.source.startswith((".", "/"))


def mounts_of(service: Mapping[str, Any]) -> list[Mount]:
    result = []
    for item in service.get("volumes") or []:
        if isinstance(item, str):
            parts = item.split(":")
            ro = len(parts) > 2 and "ro" in parts[2].split(",")
            result.append(Mount(parts[0], parts[1], ro))
        else:
            result.append(Mount(item["source"], item["target"], bool(item.get("read_only"))))
    return result


def host_path(service: Mapping[str, Any], container_path: str) -> Path | None:
    """The repo path a bind mount of ``service`` puts at ``container_path`` (None if not bind-mounted)."""
    p = PurePosixPath(container_path)
    for m in mounts_of(service):
        target = PurePosixPath(m.target)
        if m.is_bind and (p == target or target in p.parents):
            return ROOT / m.source / p.relative_to(target)
    return None


def uses_shudi_image(service: Mapping[str, Any]) -> bool:
    return "build" in service


def shudi_services(services: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services that run the `shudi` entrypoint (the shudi image without an entrypoint override)."""
    return {n: s for n, s in services.items() if uses_shudi_image(s) and "entrypoint" not in s}


def project() -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return data


# ------------------------------------------------------------------------------------------------------------
# Dockerfile: a small line parser
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for args in self.all("ENV"):
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                out[key] = value
        return out


def parse_dockerfile(text: str) -> list[Stage]:
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped by Docker too
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages or keyword == "ARG", f"{keyword} before FROM"
            if stages:
                stages[-1].instructions.append((keyword, args))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not exec form: {args}"
    return [str(v) for v in value]


# ------------------------------------------------------------------------------------------------------------
# The compose file is valid Compose
# ------------------------------------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_compose_schema_copy_is_complete() -> None:
    folder = SCHEMA.parent
    assert {"compose-spec.json", "LICENSE", "SOURCE"} <= {p.name for p in folder.iterdir()}
    assert "Apache" in (folder / "LICENSE").read_text(encoding="utf-8")


def test_compose_needs_no_variable_and_takes_overrides() -> None:
    # `docker compose up` with an empty environment must work: no ${VAR:?...} without a default ...
    load_compose({})
    # ... and the documented knobs do reach the services.
    env = {"SHUDI_LOG_LEVEL": "debug", "SIM_SPEEDUP": "60", "GEOIPUPDATE_ACCOUNT_ID": "42"}
    services = load_compose(env)["services"]
    assert env_of(services["worker-1"])["SHUDI_LOG_LEVEL"] == "debug"
    assert "60" in services["simulator"]["command"]
    assert env_of(services["geoipupdate"])["GEOIPUPDATE_ACCOUNT_ID"] == "42"


def test_interpolation_helper() -> None:
    assert interpolate_str("a$$b ${X:-d} ${Y-e} ${Z:+p}", {"Y": ""}) == "a$b d  "
    with pytest.raises(MissingVariableError):
        interpolate_str("${X:?set X}", {})


# ------------------------------------------------------------------------------------------------------------
# ... and agrees with shudi
# ------------------------------------------------------------------------------------------------------------


def test_shudi_commands_are_real_subcommands_with_valid_options(services: dict[str, dict[str, Any]]) -> None:
    runners = shudi_services(services)
    assert set(WORKERS) | {"simulator"} <= set(runners)
    for name, service in runners.items():
        command = service.get("command")
        assert isinstance(command, list), f"{name}: command must be an exec-form list"
        assert command, f"{name}: empty command"
        sub = cli_main.get_command(click.Context(cli_main), command[0])
        assert isinstance(sub, click.Command), f"{name}: `shudi {command[0]}` is no shudi subcommand"
        # Let click parse the options, with container paths of bind mounts mapped to the repo's files
        # (so `exists=True` paths are checked too).
        args = [str(host_path(service, a) or a) if a.startswith("/") else a for a in command[1:]]
        with sub.make_context(command[0], args, parent=click.Context(cli_main, info_name="shudi")) as ctx:
            assert ctx.command is sub
    assert [services[w]["command"] for w in WORKERS] == [["worker"], ["worker"]]


def test_shudi_environment_is_settings(services: dict[str, dict[str, Any]], stages: list[Stage]) -> None:
    image_env = {k: v for k, v in stages[-1].env().items() if k.startswith(ENV_PREFIX)}
    fields = {ENV_PREFIX + f.upper() for f in Settings.model_fields}
    for name, service in services.items():
        if not uses_shudi_image(service):
            assert not any(k.startswith(ENV_PREFIX) for k in env_of(service)), name
            continue
        env = {**image_env, **env_of(service)}
        shudi_env = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
        unknown = sorted(set(shudi_env) - fields)
        assert not unknown, f"{name}: {unknown} are not shudi settings"
        load_settings(environ=shudi_env)  # every value parses


def worker_settings(services: Mapping[str, dict[str, Any]], stages: list[Stage], name: str) -> Settings:
    image_env = {k: v for k, v in stages[-1].env().items() if k.startswith(ENV_PREFIX)}
    env = {**image_env, **env_of(services[name])}
    return load_settings(environ={k: v for k, v in env.items() if k.startswith(ENV_PREFIX)})


def test_workers_are_alike_hardened_and_keep_state_apart(
    services: dict[str, dict[str, Any]], stages: list[Stage]
) -> None:
    settings = [worker_settings(services, stages, w) for w in WORKERS]
    assert settings[0] == settings[1], "both workers must run with the same settings (one consumer group)"
    s = settings[0]
    assert s.web_host in ("127.0.0.1", "localhost"), "Faust's web server must stay local"
    assert s.broker.split(":")[0] in services, "SHUDI_BROKER must name the compose Kafka service"
    data_volumes = []
    for w in WORKERS:
        service = services[w]
        assert service.get("read_only") is True, w
        assert "/tmp" in (service.get("tmpfs") or []), w
        by_target = {m.target: m for m in mounts_of(service)}
        data = by_target.get(str(s.data_dir))
        assert data is not None, f"{w}: no volume at SHUDI_DATA_DIR"
        assert not data.is_bind, w
        assert not data.read_only, w
        data_volumes.append(data.source)
        assert len({p.parent for p in s.geoip_db}) == 1, f"{w}: every database file in the one geoip volume"
        geoip = by_target.get(str(s.geoip_db[0].parent))
        assert geoip is not None, f"{w}: no geoip volume at the database's directory"
        assert geoip.source == "geoip", w
        assert geoip.read_only, f"{w}: mount the geoip volume read-only"
    assert len(set(data_volumes)) == len(WORKERS), "each worker needs its own data volume"


def test_prometheus_scrapes_the_workers_metrics_port(
    services: dict[str, dict[str, Any]], stages: list[Stage]
) -> None:
    port = worker_settings(services, stages, WORKERS[0]).metrics_port
    assert port == Settings.model_fields["metrics_port"].default
    assert str(port) in stages[-1].all("EXPOSE")[0].split()
    config_file = host_path(services["prometheus"], "/etc/prometheus/prometheus.yml")
    assert config_file is not None
    assert config_file.is_file()
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    targets = {
        t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]
    }
    assert {f"{w}:{port}" for w in WORKERS} <= targets
    for w in WORKERS:
        published = [str(p).rsplit(":", 1)[-1] for p in services[w].get("ports", [])]
        assert published == [str(port)], f"{w} publishes its metrics port"


def prometheus_rule_globs(services: Mapping[str, dict[str, Any]]) -> list[tuple[str, Path]]:
    config_file = host_path(services["prometheus"], "/etc/prometheus/prometheus.yml")
    assert config_file is not None
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    out = []
    for pattern in config.get("rule_files", []):
        mapped = host_path(services["prometheus"], pattern)
        assert mapped is not None, f"rule_files {pattern} is not inside a mounted directory"
        out.append((pattern, mapped))
    return out


def test_prometheus_config_passes_promtool(services: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: apt-get install prometheus (.ci/run does)"
    config_file = host_path(services["prometheus"], "/etc/prometheus/prometheus.yml")
    assert config_file is not None
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    # Check the file as the container sees it: rule_files at the host paths the compose file mounts there.
    config["rule_files"] = [str(host) for _, host in prometheus_rule_globs(services)]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "config", str(checked)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rule_files_resolve(services: dict[str, dict[str, Any]]) -> None:
    for pattern, host in prometheus_rule_globs(services):
        assert sorted(host.parent.glob(host.name)), f"rule_files {pattern}: no file matches {host}"
        assert host.parent.relative_to(ROOT) == Path("deploy/helm/shudi/rules"), (
            "the chart's rules, not a copy"
        )


def test_rules_and_dashboards_live_once() -> None:
    """Compose, promtool and the chart read the chart's files: no second copy in deploy/ to drift from."""
    deploy = ROOT / "deploy"
    rule_files = {
        p.relative_to(ROOT)
        for p in [*deploy.rglob("*.yml"), *deploy.rglob("*.yaml")]
        if re.search(r"^groups:", p.read_text(encoding="utf-8"), re.MULTILINE)
    }
    dashboards = {p.relative_to(ROOT) for p in deploy.rglob("*.json") if '"panels"' in p.read_text("utf-8")}
    assert rule_files == {Path("deploy/helm/shudi/rules/shudi.rules.yml")}
    assert dashboards == {Path("deploy/helm/shudi/dashboards/shudi.json")}


def parse_topic_commands(script: str) -> dict[str, tuple[int, int, dict[str, str], str]]:
    """``kafka-topics.sh --create`` lines: name -> (partitions, replication factor, configs, bootstrap)."""
    created: dict[str, tuple[int, int, dict[str, str], str]] = {}
    for line in script.splitlines():
        words = shlex.split(line)
        if not words or not words[0].endswith("kafka-topics.sh") or "--create" not in words:
            continue
        opts: dict[str, list[str]] = {}
        for flag, value in zip(words[1:], [*words[2:], ""], strict=True):
            if flag.startswith("--") and not value.startswith("--"):
                opts.setdefault(flag, []).append(value)
        configs = dict(c.split("=", 1) for c in opts.get("--config", []))
        topic = opts["--topic"][0]
        assert topic not in created, f"{topic} created twice"
        assert "--if-not-exists" in words, f"{topic}: --if-not-exists keeps the one-shot rerunnable"
        created[topic] = (
            int(opts["--partitions"][0]),
            int(opts["--replication-factor"][0]),
            configs,
            opts["--bootstrap-server"][0],
        )
    return created


def test_topics_service_creates_the_topics_shudi_uses(
    services: dict[str, dict[str, Any]], stages: list[Stage]
) -> None:
    settings = worker_settings(services, stages, WORKERS[0])
    partitions, configs = topic_plan(settings)
    expected = dict(partitions)
    for topic in (settings.counts_topic, settings.bursts_topic):
        expected.setdefault(topic, settings.partitions)
    topics = services["topics"]
    assert topics["image"] == services["kafka"]["image"], "topics uses the broker's own image and tools"
    script = "\n".join(topics["command"])
    created = parse_topic_commands(script)
    assert {t: p for t, (p, _, _, _) in created.items()} == expected
    for topic, (_, rf, config, bootstrap) in created.items():
        assert rf == settings.replication_factor, topic
        assert config == configs.get(topic, {}), (
            f"{topic}: configs differ from streams.runtime.topics.topic_plan"
        )
        assert bootstrap == settings.broker, topic
    assert int(created[settings.dlq_topic][2]["retention.ms"]) <= 3 * 24 * 3600 * 1000, "short DLQ retention"


def test_host_paths_exist_and_are_mounted_read_only(services: dict[str, dict[str, Any]]) -> None:
    missing, writable = [], []
    for name, service in services.items():
        for m in mounts_of(service):
            if not m.is_bind:
                continue
            assert m.source.startswith("./"), f"{name}: host paths are relative to the repo: {m.source}"
            if not (ROOT / m.source).exists():
                missing.append(f"{name}: {m.source}")
            if not m.read_only:
                writable.append(f"{name}: {m.source}")
    assert not missing, f"mounted host paths missing from the repo: {missing}"
    assert not writable, f"repo files must be mounted read-only: {writable}"


def test_named_volumes_are_declared_and_used(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = {m.source for s in compose["services"].values() for m in mounts_of(s) if not m.is_bind}
    assert used == declared


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    version = project()["version"]
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: no image"
        if uses_shudi_image(service):
            assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}, name
            assert image == f"shudi:{version}", f"{name}: the built image is tagged with the project version"
            continue
        m = PINNED_IMAGE.match(image)
        assert m, f"{name}: {image} is not pinned by tag and digest"
        tag = m.group("tag")
        assert tag != "latest", name
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{name}: {tag} is not a release tag"


def test_kafka_is_apache_kafka_4_1_kraft(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.1.")
    env = env_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "topics are created on purpose, not by typos"
    assert "kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    test = kafka["healthcheck"]["test"]
    assert any(w.endswith(("kafka-broker-api-versions.sh", "kafka-topics.sh")) for w in test)


def test_every_service_has_a_comment() -> None:
    lines = COMPOSE_FILE.read_text(encoding="utf-8").splitlines()
    start = lines.index("services:")
    names = [
        (i, line[2:-1]) for i, line in enumerate(lines) if i > start and re.fullmatch(r"  [\w-]+:", line)
    ]
    assert names
    for i, name in names:
        before = lines[i - 1].strip()
        assert before.startswith("#"), f"service {name} has no comment above it"


def effective_healthcheck(service: Mapping[str, Any], stages: list[Stage]) -> list[str] | None:
    hc = service.get("healthcheck")
    if hc is not None:
        if hc.get("disable"):
            return None
        test = hc.get("test")
        return [str(t) for t in test] if isinstance(test, list) else ["CMD-SHELL", str(test)]
    if uses_shudi_image(service) and "entrypoint" not in service:
        args = stages[-1].all("HEALTHCHECK")[0]
        return ["CMD", *exec_form(args[args.index("CMD") + 3 :].strip())]
    return None


def test_healthchecks_are_wired(services: dict[str, dict[str, Any]], stages: list[Stage]) -> None:
    for name, service in services.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert isinstance(spec, dict), f"{name} -> {dep}: use the long form"
            assert "condition" in spec, f"{name} -> {dep}: give a condition"
            target = services[dep]
            if dep in ONE_SHOTS:
                assert spec["condition"] == "service_completed_successfully", f"{name} -> {dep}"
                assert target.get("restart") == "no", f"{dep} is a one-shot"
            else:
                assert spec["condition"] == "service_healthy", f"{name} -> {dep}"
                assert effective_healthcheck(target, stages), f"{dep} has no healthcheck"
    for name in ONE_SHOTS:
        assert effective_healthcheck(services[name], stages) is None, f"{name} exits: no healthcheck"
    assert effective_healthcheck(services["simulator"], stages) is None, "the simulator serves no /healthz"
    for w in WORKERS:
        assert effective_healthcheck(services[w], stages) == ["CMD", "shudi", "healthcheck"]
        assert {"kafka", "topics", "geoip-init"} <= set(services[w]["depends_on"])
    for name in ("kafka", "prometheus", "grafana"):
        assert effective_healthcheck(services[name], stages), name
    assert "healthcheck" in cli_main.list_commands(click.Context(cli_main))


def test_geoip_volume_demo_seed_and_geoipupdate_profile(
    services: dict[str, dict[str, Any]], stages: list[Stage]
) -> None:
    db = worker_settings(services, stages, WORKERS[0]).geoip_db[-1]  # the world-wide database comes last
    assert db.name == "GeoLite2-City.mmdb", "the name geoipupdate writes for GeoLite2-City"
    init = services["geoip-init"]
    script = "\n".join(init["command"])
    demo = "/usr/share/shudi/demo-city.mmdb"
    assert demo in script
    assert str(db.name) in script
    assert "-s" in script, "copy the demo DB only if there is no database yet"
    build_runs = " ".join(parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))[0].all("RUN"))
    assert f"streams.devtools.mmdbbuild demo {demo}" in build_runs
    assert f"{demo} {demo}" in " ".join(stages[-1].all("COPY"))
    assert any(
        m.source == "geoip" and m.target == str(db.parent) and not m.read_only for m in mounts_of(init)
    )

    gu = services["geoipupdate"]
    assert gu.get("profiles") == ["geoipupdate"], "only with --profile geoipupdate"
    assert gu["image"].startswith("ghcr.io/maxmind/geoipupdate:")
    env = env_of(gu)
    assert env["GEOIPUPDATE_EDITION_IDS"] == "GeoLite2-City"
    assert env["GEOIPUPDATE_DB_DIR"] == str(db.parent)
    assert env["GEOIPUPDATE_ACCOUNT_ID"] == "", "no baked credentials"
    assert env["GEOIPUPDATE_LICENSE_KEY"] == "", "no baked credentials"
    assert any(m.source == "geoip" and m.target == str(db.parent) and not m.read_only for m in mounts_of(gu))


def test_grafana_has_no_baked_password_and_anonymous_viewers(services: dict[str, dict[str, Any]]) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "GF_SECURITY_ADMIN_PASSWORD:" not in text, "no literal admin password"
    # Compose's own references (not the shell's `$${...}`) to the optional password: no default value.
    assert re.findall(r"(?<!\$)\$\{GF_ADMIN_PASSWORD[^}]*\}", text) == ["${GF_ADMIN_PASSWORD:-}"]
    grafana = services["grafana"]
    env = env_of(grafana)
    secret_file = PurePosixPath(env["GF_SECURITY_ADMIN_PASSWORD__FILE"])
    secret_mount = next(m for m in mounts_of(grafana) if m.target == str(secret_file.parent))
    assert secret_mount.read_only
    assert not secret_mount.is_bind
    writer = services["grafana-secret"]
    writer_mount = next(m for m in mounts_of(writer) if m.source == secret_mount.source)
    assert f"{writer_mount.target}/{secret_file.name}" in "\n".join(writer["command"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"


def test_grafana_provisioning(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    datasources = host_path(grafana, "/etc/grafana/provisioning/datasources/prometheus.yml")
    assert datasources is not None
    (ds,) = yaml.safe_load(datasources.read_text(encoding="utf-8"))["datasources"]
    assert ds["uid"] == "prometheus"
    assert ds["type"] == "prometheus"
    host, port = ds["url"].removeprefix("http://").split(":")
    assert host in services
    assert any(str(p).endswith(f":{port}") for p in services[host]["ports"])
    providers = host_path(grafana, "/etc/grafana/provisioning/dashboards/shudi.yml")
    assert providers is not None
    (provider,) = yaml.safe_load(providers.read_text(encoding="utf-8"))["providers"]
    dashboards = host_path(grafana, provider["options"]["path"])
    assert dashboards is not None
    assert dashboards.relative_to(ROOT) == Path("deploy/helm/shudi/dashboards")  # the chart's, not a copy


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from streams.devtools.mmdbbuild import build_demo_db

    return build_demo_db(tmp_path_factory.mktemp("geoip") / "demo-city.mmdb")


def test_simulator_bursts_show_within_minutes(
    services: dict[str, dict[str, Any]], stages: list[Stage], demo_db: Path
) -> None:
    from streams.devtools.simulate import WEIGHTS, TerritoryPool, load_bursts, territory_shares

    sim = services["simulator"]
    args = sim["command"]
    opts = dict(zip(args[1::2], args[2::2], strict=False))
    bursts_file = host_path(sim, opts["--bursts"])
    assert bursts_file is not None
    bursts = load_bursts(bursts_file, datetime.now(UTC))
    assert len(bursts) >= 2
    rate, speedup = float(opts["--rate"]), float(opts["--speedup"])
    s = worker_settings(services, stages, WORKERS[0])
    pool = TerritoryPool.from_db(demo_db)
    shares = territory_shares(pool.codes, WEIGHTS)
    warmup = s.detector_warmup_windows * s.window_s  # simulated seconds before a detector may fire
    first = min(b.start for b in bursts)
    assert first >= warmup + 2 * s.window_s, "the first burst must come after the detectors' warm-up"
    assert first / speedup <= 5 * 60, "the first burst starts within 5 wall minutes of the simulator"
    for b in bursts:
        assert b.territory in pool.codes, f"{b.territory} is not in the demo database"
        # Even at the daily trough (0.3 x mean), a burst window holds enough comments to count.
        trough = rate / speedup * shares[b.territory] * s.window_s * 0.3
        assert trough * b.multiplier >= s.detector_min_count, b
        assert b.duration >= 3 * s.window_s, b  # the detector's targets are for bursts of >= 3 windows


# ------------------------------------------------------------------------------------------------------------
# The Dockerfile
# ------------------------------------------------------------------------------------------------------------


def test_dockerfile_bases_are_pinned_and_alike(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "multi-stage"
    for stage in stages:
        m = PINNED_IMAGE.match(stage.base)
        assert m, stage.base
        assert re.fullmatch(r"3\.11\.\d+-slim-bookworm", m.group("tag")), stage.base
    assert len({s.base for s in stages}) == 1, "the venv is built on the runtime's exact base"


def test_dockerfile_runtime_copies_the_venv_and_runs_shudi_as_non_root(stages: list[Stage]) -> None:
    build, runtime = stages[0], stages[-1]
    venv = next(r.split()[-1] for r in build.all("RUN") if "-m venv" in r)
    copies = [c.split() for c in runtime.all("COPY")]
    assert [f"--from={build.name}", venv, venv] in copies
    assert all(c[0].startswith("--from=") for c in copies), "the runtime gets nothing from the context"
    assert "[demo]" in " ".join(build.all("RUN"))
    assert "pip wheel" in " ".join(build.all("RUN"))
    env = runtime.env()
    assert env["PATH"].split(":")[0] == f"{venv}/bin"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"].startswith("/tmp")
    assert env["XDG_CACHE_HOME"].startswith("/tmp")
    assert env["SHUDI_DATA_DIR"] == "/var/lib/shudi"
    assert "/var/lib/shudi" in runtime.all("VOLUME")[0]
    (user,) = runtime.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), user
    assert gid.isdigit(), user
    assert int(uid) >= 1000, user
    assert int(gid) >= 1000, user
    assert uid in " ".join(runtime.all("RUN")), "the user is created with that UID"

    (entrypoint,) = runtime.all("ENTRYPOINT")
    assert exec_form(entrypoint) == ["shudi"]
    assert project()["scripts"]["shudi"] == "streams.cli:main"
    (cmd,) = runtime.all("CMD")
    assert exec_form(cmd) == ["worker"]
    assert "worker" in cli_main.list_commands(click.Context(cli_main))
    (healthcheck,) = runtime.all("HEALTHCHECK")
    assert exec_form(healthcheck[healthcheck.index("CMD") + 3 :].strip()) == ["shudi", "healthcheck"]
    labels = " ".join(runtime.all("LABEL"))
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert 'version="${VERSION}"' in labels
    assert f"VERSION={project()['version']}" in runtime.all("ARG")


def dockerignore_allows(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a directory pattern covers its tree."""
    included = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hit = any(fnmatch(p, pat) for p in prefixes) or (
            pat.startswith("**/") and any(fnmatch(part, pat[3:]) for part in parts)
        )
        if hit:
            included = negate
    return included


def repo_files() -> Iterator[str]:
    for p in ROOT.rglob("*"):
        if p.is_file() and ".git" not in p.relative_to(ROOT).parts[:1]:
            yield p.relative_to(ROOT).as_posix()


def test_dockerignore_sends_only_the_package(stages: list[Stage]) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    context = {f for f in repo_files() if dockerignore_allows(f, patterns)}
    package = {f"streams/{p.name}" for p in (ROOT / "streams").glob("*.py")} | {"streams/py.typed"}
    assert {"pyproject.toml", "README.md"} | package <= context
    assert all(f in ("pyproject.toml", "README.md") or f.startswith("streams/") for f in context), context
    assert not any("__pycache__" in f for f in context)
    for src in (c.split()[:-1] for c in stages[0].all("COPY")):
        for name in src:
            assert any(f == name or f.startswith(name.rstrip("/") + "/") for f in context), name
