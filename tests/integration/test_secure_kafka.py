"""shudi on a secured broker: SASL_SSL/SCRAM-SHA-512 and mutual TLS, ACLs enforced, no PLAINTEXT listener.

One secured broker serves the session (``secure_kafka`` in tests/conftest.py). The worker runs with the
environment the chart's production values render (the Deployment's ConfigMap and env, its Secrets and
volumes materialised as local files), with exactly the ACLs of the README's production checklist
(:func:`streams.runtime.access.required_acls`). Each missing ACL, bad credentials and an untrusted or
mismatching certificate must stop ``shudi worker``, ``send`` and ``simulate`` within 30 s, in one line
naming the cause, with a non-zero exit; a right revoked while the worker runs stops it too.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.cli.send import produce_lines
from streams.devtools.mmdbbuild import sample_ips
from streams.devtools.sample import sample_events
from streams.devtools.securekafka import SecureSetup, write_ca
from streams.runtime.access import Acl, Operation, required_acls
from streams.runtime.admin import create_acls, create_topics, delete_acls, probe
from streams.runtime.topics import topic_plan
from streams.settings import load_settings
from streams.testing import WorkerProcess, read_topics
from tests.deploy.test_helm import CHART, HELM_SH, pod_spec, render, worker, worker_env
from tests.integration.test_enrichment_e2e import check_ten_thousand_comments, demo_db, topic_settings

pytestmark = pytest.mark.integration

__all__ = ["demo_db"]  # a module fixture, imported to be shared

FAIL_WITHIN_S = 30.0
LEFT_TO_THE_TEST = {"SHUDI_METRICS_HOST", "SHUDI_METRICS_PORT", "SHUDI_DATA_DIR"}
IP_HASH_KEY = "test-ip-hash-key-e5c1"


# --- helpers -----------------------------------------------------------------------------------------------


def app_settings(uid: str, db: Path) -> dict[str, str]:
    """Topic, group and database settings of one test's worker (its own counts and bursts topics too)."""
    return {
        **topic_settings(uid, db),
        "SHUDI_COUNTS_TOPIC": f"territory.counts-{uid}",
        "SHUDI_BURSTS_TOPIC": f"territory.bursts-{uid}",
    }


def rules(acls: list[Acl]) -> list[tuple[str, str, int]]:
    return [(a.resource, a.name, int(a.operation)) for a in acls]


def grant(setup: SecureSetup, principal: str, acls: list[Acl]) -> None:
    asyncio.run(create_acls(setup.admin(), principal, rules(acls)))


def precreate_topics(setup: SecureSetup, env: dict[str, str]) -> None:
    """What a platform team does with KafkaTopics: the worker's topics, made by the super user."""
    partitions, config = topic_plan(load_settings(env))
    asyncio.run(create_topics(setup.admin(), partitions, config))


def run_command(
    args: list[str], env: dict[str, str], timeout: float = FAIL_WITHIN_S
) -> tuple[int, str, float]:
    """``shudi ARGS`` in a subprocess with ``env`` (SHUDI_* only from it): exit code, stderr, seconds."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("SHUDI_")} | env
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "streams.cli", *args],
            env=full,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        raise AssertionError(f"`shudi {' '.join(args)}` still running after {timeout:.0f}s:\n{out}") from None
    return proc.returncode, proc.stderr, time.monotonic() - t0


def run_commands(
    commands: dict[str, list[str]], env: dict[str, str], timeout: float = FAIL_WITHIN_S
) -> dict[str, tuple[int, str, float]]:
    """Several ``shudi`` commands at once (independent of each other): exit code, stderr, seconds of each."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("SHUDI_")} | env
    t0 = time.monotonic()
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "streams.cli", *args],
            env=full,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in commands.items()
    }
    results: dict[str, tuple[int, str, float]] = {}
    try:
        for name, proc in procs.items():
            try:
                _, err = proc.communicate(timeout=max(0.1, t0 + timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
                raise AssertionError(f"`shudi {name}` still running after {timeout:.0f}s:\n{err}") from None
            results[name] = (proc.returncode, err, time.monotonic() - t0)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def helm_binary() -> str:
    """The pinned Helm (deploy/tools/helm.sh, as tests/deploy/test_helm.py gets it: built once, cached)."""
    proc = subprocess.run(["bash", str(HELM_SH)], capture_output=True, text=True, timeout=1500, check=False)
    assert proc.returncode == 0, f"deploy/tools/helm.sh failed:\n{proc.stderr[-4000:]}"
    return proc.stdout.strip().splitlines()[-1]


def chart_env(
    helm: str, tmp_path: Path, overrides: dict[str, Any], secrets: dict[str, dict[str, bytes]], geoip_db: Path
) -> dict[str, str]:
    """The worker's SHUDI_* environment from the chart's production values (plus ``overrides``), as the pod
    would see it here: Secret references resolved from ``secrets``, mounted Secrets and the GeoIP volume
    written under ``tmp_path`` and the paths in the env pointed there. The ports, data directory and
    metrics address are left to :class:`WorkerProcess`."""
    values = tmp_path / "values-test.yaml"
    values.write_text(yaml.safe_dump(overrides))
    docs = render(helm, CHART / "values-production.yaml", values)
    env = worker_env(docs)
    container = worker(docs)
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            env[var["name"]] = secrets[ref["name"]][ref["key"]].decode()
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    moved: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        local = tmp_path / "pod" / mount["name"]
        local.mkdir(parents=True)
        if "secret" in volume:
            secret = volume["secret"]
            for item in secret["items"]:
                target = local / item["path"]
                target.write_bytes(secrets[secret["secretName"]][item["key"]])
                target.chmod(0o400)
        elif "persistentVolumeClaim" in volume:  # the GeoIP volume
            shutil.copy(geoip_db, local / Path(env["SHUDI_GEOIP_DB"]).name)
        moved[mount["mountPath"].rstrip("/")] = local
    out: dict[str, str] = {}
    for name, value in env.items():
        if not name.startswith("SHUDI_") or name in LEFT_TO_THE_TEST:
            continue
        for mount_path, local in moved.items():
            if value.startswith(mount_path + "/"):
                value = str(local / value[len(mount_path) + 1 :])
        out[name] = value
    return out


def chart_overrides(uid: str, bootstrap: str, **kafka: Any) -> dict[str, Any]:
    """What a test changes in values-production.yaml: its broker, ids and topics; one replica per topic."""
    return {
        "app": {"id": f"shudi-{uid}", "inputTopic": f"comments-{uid}", "partitions": 4},
        "config": {
            "replication_factor": 1,
            "enriched_topic": f"comments.enriched-{uid}",
            "dlq_topic": f"comments.dlq-{uid}",
            "counts_topic": f"territory.counts-{uid}",
            "bursts_topic": f"territory.bursts-{uid}",
        },
        "kafka": {"bootstrapServers": bootstrap, **kafka},
        "keda": {"minReplicaCount": 1, "maxReplicaCount": 4},
    }


def no_secret_anywhere(secret: str) -> Any:
    """A ``while_running`` check: the secret is in none of the worker's HTTP views (metrics, health, Faust's
    web server); the log is checked after the run."""

    def check(worker_proc: WorkerProcess) -> None:
        pages: dict[str, str] = {}
        metrics = f"http://127.0.0.1:{worker_proc.metrics_port}"
        web = f"http://127.0.0.1:{worker_proc.env['SHUDI_WEB_PORT']}"
        for url in (
            f"{metrics}/metrics",
            f"{metrics}/healthz",
            f"{metrics}/readyz",
            *(f"{web}{path}" for path in ("/", "/stats/", "/assignment/", "/graph/", "/router/", "/table/")),
        ):
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 -- our own loopback URLs
                    pages[url] = resp.read().decode(errors="replace")
            except urllib.error.HTTPError as exc:
                pages[url] = exc.read().decode(errors="replace")
        assert any(url.startswith(web) and page for url, page in pages.items()), "Faust's web server answered"
        leaked = [url for url, page in pages.items() if secret in page]
        assert leaked == [], f"the secret shows in {leaked}"

    return check


# --- end to end with least privilege ------------------------------------------------------------------------


def test_ten_thousand_comments_on_sasl_ssl_scram_with_least_privilege(
    secure_kafka: SecureSetup, helm_binary: str, uid: str, tmp_path: Path, demo_db: Path
) -> None:
    """The chart's production environment (SASL_SSL, SCRAM-SHA-512), the README's ACLs and nothing else,
    topics pre-created by an administrator and no CREATE right: the whole end-to-end check passes, and the
    password shows in neither the log nor any HTTP view of the worker."""
    setup = secure_kafka
    password = setup.password("shudi")
    secrets = {
        "shudi": {"password": password.encode()},
        "my-cluster-cluster-ca-cert": {"ca.crt": setup.ca_file.read_bytes()},
        "shudi-ip-hash": {"ip-hash-key": IP_HASH_KEY.encode()},
    }
    env = chart_env(helm_binary, tmp_path, chart_overrides(uid, setup.sasl_bootstrap), secrets, demo_db)
    assert env["SHUDI_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["SHUDI_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["SHUDI_SASL_USERNAME"] == "shudi"
    assert Path(env["SHUDI_SSL_CAFILE"]).is_file()
    precreate_topics(setup, env)
    grant(setup, "User:shudi", required_acls(load_settings(env)))

    worker_proc, exposition = check_ten_thousand_comments(
        tmp_path, env, demo_db, kafka=setup.admin(), while_running=no_secret_anywhere(password)
    )
    assert password not in worker_proc.log()
    assert IP_HASH_KEY not in worker_proc.log()
    assert IP_HASH_KEY not in exposition
    assert "Creating topic" not in worker_proc.log()  # Faust declared nothing; the topics were there


def test_ten_thousand_comments_on_mutual_tls_creating_its_topics(
    secure_kafka: SecureSetup, helm_binary: str, uid: str, tmp_path: Path, demo_db: Path
) -> None:
    """Mutual TLS from a Strimzi-style user Secret (user.crt, user.key, ca.crt) through the chart, with the
    README's ACLs plus CREATE on the topics: the worker creates its topics and passes the end-to-end check."""
    setup = secure_kafka
    user_dir = setup.tls_user_dir("shudi-tls")
    secrets = {
        "shudi-tls": {name: (user_dir / name).read_bytes() for name in ("user.crt", "user.key", "ca.crt")},
        "my-cluster-cluster-ca-cert": {"ca.crt": setup.ca_file.read_bytes()},
        "shudi-ip-hash": {"ip-hash-key": IP_HASH_KEY.encode()},
    }
    overrides = chart_overrides(
        uid, setup.ssl_bootstrap, securityProtocol="SSL", tls={"clientSecret": {"name": "shudi-tls"}}
    )
    env = chart_env(helm_binary, tmp_path, overrides, secrets, demo_db)
    assert env["SHUDI_SECURITY_PROTOCOL"] == "SSL"
    assert Path(env["SHUDI_SSL_CERTFILE"]).name == "user.crt"
    assert Path(env["SHUDI_SSL_KEYFILE"]).name == "user.key"
    grant(setup, "User:CN=shudi-tls", required_acls(load_settings(env), create_topics=True))

    worker_proc, _ = check_ten_thousand_comments(tmp_path, env, demo_db, kafka=setup.admin())
    assert "TopicAuthorizationFailed" not in worker_proc.log()


# --- a missing ACL -----------------------------------------------------------------------------------------


def test_each_missing_acl_stops_the_worker_naming_it(
    secure_kafka: SecureSetup, uid: str, tmp_path: Path, demo_db: Path
) -> None:
    """Remove each ACL of the list in turn: `shudi worker` exits 1 within 30 s with one line naming it."""
    setup = secure_kafka
    env = {**setup.scram_env("shudi-acl"), **app_settings(uid, demo_db), "SHUDI_METRICS_PORT": "0"}
    env["SHUDI_DATA_DIR"] = str(tmp_path / "data")
    precreate_topics(setup, env)
    acls = required_acls(load_settings(env))
    grant(setup, "User:shudi-acl", acls)
    seen: dict[str, tuple[int, str, float]] = {}
    for acl in acls:
        removed = asyncio.run(delete_acls(setup.admin(), "User:shudi-acl", rules([acl])))
        assert removed == 1, f"{acl}: {removed} ACLs removed"
        try:
            seen[str(acl)] = run_command(["worker"], env)
        finally:
            grant(setup, "User:shudi-acl", [acl])
    wrong = {
        acl: (code, last_line(err), secs)
        for acl, (code, err, secs) in seen.items()
        if code != 1 or not last_line(err).startswith("shudi: Kafka denies") or acl not in last_line(err)
    }
    assert wrong == {}, f"{len(wrong)} of {len(seen)} removals not reported as expected: {wrong}"
    slowest = max(secs for _, _, secs in seen.values())
    assert slowest < FAIL_WITHIN_S


def test_missing_topics_without_create_right_are_named(
    secure_kafka: SecureSetup, uid: str, tmp_path: Path, demo_db: Path
) -> None:
    """No topics and no CREATE: the worker stops naming a topic it may not use, instead of waiting."""
    setup = secure_kafka
    env = {**setup.scram_env("shudi-acl"), **app_settings(uid, demo_db), "SHUDI_METRICS_PORT": "0"}
    env["SHUDI_DATA_DIR"] = str(tmp_path / "data")
    code, err, secs = run_command(["worker"], env)
    assert code == 1, err
    assert last_line(err).startswith("shudi: Kafka denies"), err
    assert f"comments-{uid}" in last_line(err)
    assert secs < FAIL_WITHIN_S


# --- bad credentials and trust ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ca(tmp_path_factory.mktemp("other-ca") / "ca.crt")


CASES = {
    "wrong-password": ({"SHUDI_SASL_PASSWORD": "not-the-password"}, "refused the credentials"),
    "unknown-user": (
        {"SHUDI_SASL_USERNAME": "nobody", "SHUDI_SASL_PASSWORD": "x"},
        "refused the credentials",
    ),
    "untrusted-ca": ({"SHUDI_SSL_CAFILE": "<other-ca>"}, "certificate is not trusted"),
    # The broker's certificate names 127.0.0.1 only; localhost reaches it under another name.
    "hostname-mismatch": ({"SHUDI_BROKER": "localhost:<port>"}, "does not match the address 'localhost'"),
}


@pytest.fixture
def commands(tmp_path: Path, demo_db: Path) -> dict[str, list[str]]:
    lines = tmp_path / "one.jsonl"
    lines.write_text('{"event_id": "e1", "post_id": "p1"}\n')
    return {
        "worker": ["worker"],
        "send": ["send", str(lines)],
        "simulate": ["simulate", "--db", str(demo_db), "--events", "20", "--no-progress", "--seed", "1"],
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_credentials_or_trust_stop_every_command(
    secure_kafka: SecureSetup,
    case: str,
    commands: dict[str, list[str]],
    other_ca: Path,
    uid: str,
    tmp_path: Path,
    demo_db: Path,
) -> None:
    setup = secure_kafka
    changes, expected = CASES[case]
    env = {**setup.scram_env("shudi"), **app_settings(uid, demo_db), "SHUDI_METRICS_PORT": "0"}
    env["SHUDI_DATA_DIR"] = str(tmp_path / "data")
    for name, value in changes.items():
        env[name] = value.replace("<other-ca>", str(other_ca)).replace("<port>", str(setup.sasl_port))
    if "SHUDI_SASL_PASSWORD" in changes:
        del env["SHUDI_SASL_PASSWORD_FILE"]
    results = run_commands(commands, env)
    wrong = {
        name: (code, last_line(err))
        for name, (code, err, _) in results.items()
        if code != 1 or expected not in last_line(err) or not last_line(err).startswith("shudi: ")
    }
    assert wrong == {}, f"expected exit 1 and a last line with {expected!r}: {wrong}"
    for name, (_, err, secs) in results.items():
        assert secs < FAIL_WITHIN_S, name
        assert setup.password("shudi") not in err, name


# --- send and simulate on a broker without a PLAINTEXT listener -----------------------------------------


@pytest.fixture
def input_topic(secure_kafka: SecureSetup, uid: str) -> str:
    topic = f"comments-{uid}"
    asyncio.run(create_topics(secure_kafka.admin(), {topic: 2}))
    return topic


@pytest.mark.parametrize("how", ["scram", "mutual-tls"])
def test_send_and_simulate_produce_over_tls(
    secure_kafka: SecureSetup, how: str, input_topic: str, tmp_path: Path, demo_db: Path
) -> None:
    setup = secure_kafka
    if how == "scram":
        env, principal = setup.scram_env("shudi"), "User:shudi"
    else:
        env, principal = setup.tls_env("shudi-tls"), "User:CN=shudi-tls"
    env = {**env, "SHUDI_INPUT_TOPIC": input_topic, "SHUDI_GEOIP_DB": str(demo_db)}
    grant(setup, principal, [Acl("topic", input_topic, Operation.WRITE, "produce")])
    lines = tmp_path / "lines.jsonl"
    lines.write_text("".join(f'{{"event_id": "e{i}", "post_id": "p{i % 7}"}}\n' for i in range(50)))
    code, err, _ = run_command(["send", str(lines)], env, timeout=60)
    assert code == 0, err
    code, err, _ = run_command(
        ["simulate", "--db", str(demo_db), "--events", "150", "--rate", "2000", "--no-progress"],
        env,
        timeout=120,
    )
    assert code == 0, err
    records = asyncio.run(read_topics(setup.admin(), [input_topic], until=200, timeout=60, settle=1))
    assert len(records) == 200


# --- a right revoked while the worker runs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("revoked", "exit_codes", "logged"),
    [
        # The enrichment loop: its produce is refused, the loop is fatal (exit 70, cli.errors.EXIT_FATAL).
        ("enriched-write", {70}, "TopicAuthorizationFailedError"),
        # Faust's counting agent: its consumer may no longer read the counts; Faust crashes the worker.
        ("counts-read", {1, 70}, "TopicAuthorizationFailedError"),
    ],
    ids=["enriched-write", "counts-read"],
)
def test_a_right_revoked_while_running_stops_the_worker(
    secure_kafka: SecureSetup,
    revoked: str,
    exit_codes: set[int],
    logged: str,
    uid: str,
    tmp_path: Path,
    demo_db: Path,
) -> None:
    """Never a live worker that silently stops working: it exits non-zero within 60 s, the log naming it."""
    setup = secure_kafka
    env = {**setup.scram_env("shudi-acl"), **app_settings(uid, demo_db)}
    settings = load_settings(env)
    precreate_topics(setup, env)
    acls = required_acls(settings)
    grant(setup, "User:shudi-acl", acls)
    target = {
        "enriched-write": Acl("topic", settings.enriched_topic, Operation.WRITE, ""),
        "counts-read": Acl("topic", settings.counts_topic, Operation.READ, ""),
    }[revoked]
    worker_proc = WorkerProcess.configure(tmp_path, "worker", env)
    worker_proc.start()
    try:
        worker_proc.wait_ready()
        assert asyncio.run(delete_acls(setup.admin(), "User:shudi-acl", rules([target]))) == 1
        ips = sample_ips(demo_db, None, n=50, seed=5)
        events = (e.value for e in sample_events(ips, 500, bad_fraction=0.0, seed=6))
        asyncio.run(produce_lines(setup.admin(), settings.input_topic, events))
        assert worker_proc.proc is not None
        try:
            code = worker_proc.proc.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker still running 60 s after {target} was revoked:\n{worker_proc.log()[-3000:]}"
            ) from None
    finally:
        worker_proc.stop()
        grant(setup, "User:shudi-acl", [target])
    assert code in exit_codes, worker_proc.log()[-3000:]
    assert logged in worker_proc.log()
    assert target.name in worker_proc.log()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_every_sasl_mechanism_logs_in(secure_kafka: SecureSetup, mechanism: str) -> None:
    asyncio.run(probe(secure_kafka.scram("admin", mechanism=mechanism)))
