"""The Helm chart in deploy/helm/shudi: lint, render and validate every manifest it can produce.

Helm itself is built from the Go module proxy by deploy/tools/helm.sh (cached after the first run); a failed
build fails these tests. Built-in kinds are validated against the Kubernetes JSON schemas that
kubernetes-validate ships (strict: unknown fields are errors), pinned to KUBE_VERSION. The custom resources
(ServiceMonitor, PrometheusRule, ScaledObject, TriggerAuthentication) are validated against schemas
transcribed here from their CRDs (see CRD_SCHEMAS).
"""

from __future__ import annotations

import copy
import functools
import importlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import ENV_PREFIX, SECRET_FILE_SETTINGS, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "shudi"
HELM_SH = REPO / "deploy" / "tools" / "helm.sh"

# The Kubernetes version the manifests are rendered for and validated against (kubernetes-validate 1.37
# ships schemas for 1.25–1.37). 1.31 is the oldest minor still common on managed clusters.
KUBE_VERSION = "1.31.0"
RELEASE = "r"

# The first test builds Helm when it is not cached yet (about 5 minutes on 2 cores).
pytestmark = pytest.mark.timeout(1800)
NAMESPACE = "shudi"

Doc = dict[str, Any]

REQUIRED: Doc = {
    "image": {"tag": "0.1.0"},
    "kafka": {"bootstrapServers": "kafka-0.kafka:9092,kafka-1.kafka:9092"},
    "geoip": {"pvc": {"existingClaim": "geoip"}},
}


def _setting_defaults() -> Doc:
    """A value for every setting the `config` map accepts: each Settings field's own default."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    names = schema["properties"]["config"]["properties"]
    return {name: Settings.model_fields[name].default for name in names}


def _merge(*layers: Doc) -> Doc:
    out: Doc = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = _merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


SCENARIOS: dict[str, Doc | Path] = {
    "defaults": REQUIRED,
    "production": CHART / "values-production.yaml",
    "geoip-pvc": _merge(REQUIRED, {"geoip": {"source": "pvc", "pvc": {"subPath": "geolite"}}}),
    "geoip-secret": _merge(
        REQUIRED, {"geoip": {"source": "secret", "secret": {"name": "geoip-db", "key": "city.mmdb"}}}
    ),
    "geoip-configMap": _merge(
        REQUIRED, {"geoip": {"source": "configMap", "configMap": {"name": "geoip-db", "key": "city.mmdb"}}}
    ),
    "geoip-geoipupdate": _merge(
        REQUIRED, {"geoip": {"source": "geoipupdate", "geoipupdate": {"existingSecret": "maxmind"}}}
    ),
    # Everything else switched on: HPA, SASL with the user name from the secret, a chart-made ip-hash
    # Secret, the Prometheus Operator and Grafana objects, and every setting of `config`.
    "everything": _merge(
        REQUIRED,
        {
            "image": {"digest": "sha256:" + "ab" * 32},
            "autoscaling": {"enabled": True, "maxReplicas": 8},
            "kafka": {
                "securityProtocol": "SASL_PLAINTEXT",
                "sasl": {"mechanism": "SCRAM-SHA-256", "existingSecret": "kafka-user", "usernameKey": "user"},
            },
            "ipHashKey": {"value": "not-a-real-key"},
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "grafanaDashboards": {"enabled": True, "folder": "shudi"},
            "extraEnv": [{"name": "TZ", "value": "UTC"}],
            "podDisruptionBudget": {"maxUnavailable": "25%"},
        },
        {"config": _setting_defaults()},
    ),
    "keda-ssl": _merge(
        REQUIRED,
        {
            "keda": {"enabled": True, "maxReplicaCount": 8},
            "kafka": {"securityProtocol": "SSL", "tls": {"caSecret": {"name": "cluster-ca-cert"}}},
        },
    ),
    # Mutual TLS from a Strimzi-style user Secret (user.crt, user.key) with an encrypted key, KEDA included.
    "mutual-tls": _merge(
        REQUIRED,
        {
            "keda": {"enabled": True, "maxReplicaCount": 8},
            "kafka": {
                "securityProtocol": "SSL",
                "tls": {
                    "caSecret": {"name": "my-cluster-cluster-ca-cert"},
                    "clientSecret": {"name": "shudi-tls", "keyPasswordKey": "user.password"},
                },
            },
        },
    ),
    "keda-plaintext": _merge(
        REQUIRED,
        {"keda": {"enabled": True, "minReplicaCount": 0}, "networkPolicy": {"metrics": {"namespaces": []}}},
    ),
}


# --- helm --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm() -> str:
    """The pinned Helm binary, built on first use (no skip: a failed build is a failed test)."""
    proc = subprocess.run(["bash", str(HELM_SH)], capture_output=True, text=True, timeout=1500, check=False)
    assert proc.returncode == 0, f"deploy/tools/helm.sh failed:\n{proc.stderr[-4000:]}"
    path = proc.stdout.strip().splitlines()[-1]
    assert os.access(path, os.X_OK), path
    return path


@functools.cache
def _values_file(name: str) -> Path:
    source = SCENARIOS[name]
    if isinstance(source, Path):
        return source
    path = Path(tempfile.mkdtemp(prefix="shudi-helm-")) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(source))
    return path


def _write_values(tmp_path: Path, values: Doc) -> Path:
    path = tmp_path / f"values-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _template(helm: str, *values: Path, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    args = [helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    for path in values:
        args += ["--values", str(path)]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def _docs(stdout: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(stdout) if d]


def render(helm: str, *values: Path, chart: Path = CHART) -> list[Doc]:
    proc = _template(helm, *values, chart=chart)
    assert proc.returncode == 0, proc.stderr
    return _docs(proc.stdout)


@functools.cache
def _render_scenario(helm: str, name: str) -> tuple[Doc, ...]:
    return tuple(render(helm, _values_file(name)))


@pytest.fixture(params=sorted(SCENARIOS))
def scenario(request: pytest.FixtureRequest, helm: str) -> tuple[str, list[Doc]]:
    name: str = request.param
    return name, copy.deepcopy(list(_render_scenario(helm, name)))


def only(docs: list[Doc], kind: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def pod_spec(docs: list[Doc]) -> Doc:
    spec: Doc = only(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def worker(docs: list[Doc]) -> Doc:
    containers: list[Doc] = [c for c in pod_spec(docs)["containers"] if c["name"] == "shudi"]
    assert len(containers) == 1
    return containers[0]


def worker_env(docs: list[Doc]) -> dict[str, str]:
    """What the worker's process sees: its ConfigMap (envFrom) and env; secret values as placeholders."""
    by_name = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    container = worker(docs)
    for source in container.get("envFrom", []):
        env.update(by_name[source["configMapRef"]["name"]]["data"])
    for var in container.get("env", []):
        env[var["name"]] = var.get("value", f"<from {var.get('valueFrom')}>")
    return env


# --- the script --------------------------------------------------------------------------------------------


def test_helm_script_is_pinned_idempotent_and_fast_when_cached(helm: str) -> None:
    proc = subprocess.run(["bash", str(HELM_SH)], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == helm
    assert "building" not in proc.stderr
    version = subprocess.run([helm, "version", "--template", "{{.Version}}"], capture_output=True, text=True)
    assert version.stdout.startswith("v3.")
    if "SHUDI_HELM_CACHE" not in os.environ:
        assert Path(helm).parent.name == f"helm-{version.stdout}"


# --- lint and render ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_helm_lint(helm: str, name: str) -> None:
    proc = subprocess.run(
        [
            helm,
            "lint",
            str(CHART),
            "--strict",
            "--kube-version",
            KUBE_VERSION,
            "--values",
            str(_values_file(name)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_notes_render(helm: str, tmp_path: Path, name: str) -> None:
    """NOTES.txt is only rendered by `helm install` (which needs a cluster): render it through `tpl` in a
    copy of the chart instead."""
    chart = tmp_path / "shudi"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "notes-check.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ tpl (.Files.Get "notes.txt") . | quote }}\n'
    )
    docs = render(helm, _values_file(name), chart=chart)
    notes = next(d for d in docs if d["metadata"]["name"] == "notes")["data"]["notes"]
    env = worker_env(docs)
    assert f"consumer groups {env['SHUDI_APP_ID']} and {env['SHUDI_APP_ID']}-enrich" in notes
    assert "rollout status deployment/" in notes
    assert "<no value>" not in notes


def test_packaged_chart_renders_like_the_directory(helm: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [helm, "package", str(CHART), "--destination", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (tgz,) = tmp_path.glob("shudi-*.tgz")
    with tarfile.open(tgz) as tar:
        names = tar.getnames()
    assert "shudi/values.schema.json" in names
    assert not [n for n in names if n.endswith(".gitkeep")]
    values = _values_file("everything")
    assert render(helm, values, chart=tgz) == render(helm, values)


# --- schemas -----------------------------------------------------------------------------------------------

kubernetes_validate: Any = importlib.import_module("kubernetes_validate")


# Custom resources. No PyPI package ships their CRD schemas in a form usable here (the cloudcoil model
# packages do, but install a pytest plugin into the suite), so these are transcribed from the CRDs of
# prometheus-operator 0.80 (monitoring.coreos.com/v1) and KEDA 2.16 (keda.sh/v1alpha1): every field those
# CRDs define at the levels the chart writes, with the CRDs' `required` lists and types for the fields the
# chart sets, closed like kubernetes-validate's strict schemas (unknown fields are errors).
DURATION = {
    "type": "string",
    "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
STR = {"type": "string"}
INT = {"type": "integer"}
STR_MAP = {"type": "object", "additionalProperties": STR}
ANY: Doc = {}


def _obj(properties: Doc, required: tuple[str, ...] = ()) -> Doc:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def _arr(items: Doc) -> Doc:
    return {"type": "array", "items": items}


def _cr(api_version: str, kind: str, spec: Doc) -> Doc:
    metadata = _obj({"name": STR, "namespace": STR, "labels": STR_MAP, "annotations": STR_MAP}, ("name",))
    return _obj(
        {"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": metadata, "spec": spec},
        ("apiVersion", "kind", "metadata", "spec"),
    )


LABEL_SELECTOR = _obj({"matchLabels": STR_MAP, "matchExpressions": _arr({"type": "object"})})
ENDPOINT = _obj(
    {
        **dict.fromkeys(
            [
                "authorization",
                "basicAuth",
                "bearerTokenFile",
                "bearerTokenSecret",
                "enableHttp2",
                "filterRunning",
                "followRedirects",
                "honorLabels",
                "honorTimestamps",
                "oauth2",
                "params",
                "proxyUrl",
                "scheme",
                "targetPort",
                "tlsConfig",
                "trackTimestampsStaleness",
            ],
            ANY,
        ),
        "port": STR,
        "path": STR,
        "interval": DURATION,
        "scrapeTimeout": DURATION,
        "relabelings": _arr({"type": "object"}),
        "metricRelabelings": _arr({"type": "object"}),
    }
)
SERVICE_MONITOR_SPEC = _obj(
    {
        **dict.fromkeys(
            [
                "attachMetadata",
                "bodySizeLimit",
                "fallbackScrapeProtocol",
                "keepDroppedTargets",
                "labelLimit",
                "labelNameLengthLimit",
                "labelValueLengthLimit",
                "nativeHistogramBucketLimit",
                "nativeHistogramMinBucketFactor",
                "podTargetLabels",
                "sampleLimit",
                "scrapeClass",
                "scrapeClassicHistograms",
                "scrapeProtocols",
                "selectorMechanism",
                "targetLabels",
                "targetLimit",
            ],
            ANY,
        ),
        "jobLabel": STR,
        "namespaceSelector": _obj({"any": {"type": "boolean"}, "matchNames": _arr(STR)}),
        "selector": LABEL_SELECTOR,
        "endpoints": _arr(ENDPOINT),
    },
    ("endpoints", "selector"),
)
RULE = _obj(
    {
        "alert": STR,
        "record": STR,
        "expr": {"type": ["integer", "string"]},
        "for": DURATION,
        "keep_firing_for": {**DURATION, "minLength": 1},
        "labels": STR_MAP,
        "annotations": STR_MAP,
    },
    ("expr",),
)
RULE_GROUP = _obj(
    {
        "name": STR,
        "interval": DURATION,
        "query_offset": DURATION,
        "labels": STR_MAP,
        "limit": INT,
        "partial_response_strategy": STR,
        "rules": _arr(RULE),
    },
    ("name",),
)
TRIGGER = _obj(
    {
        "type": STR,
        "name": STR,
        "metadata": STR_MAP,
        "authenticationRef": _obj(
            {"name": STR, "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]}},
            ("name",),
        ),
        "metricType": STR,
        "useCachedMetrics": {"type": "boolean"},
    },
    ("metadata", "type"),
)
SCALED_OBJECT_SPEC = _obj(
    {
        **{key: {"type": "object"} for key in ["advanced", "fallback"]},
        **{
            key: {"type": "integer", "minimum": 0}
            for key in [
                "cooldownPeriod",
                "idleReplicaCount",
                "initialCooldownPeriod",
                "maxReplicaCount",
                "minReplicaCount",
                "pollingInterval",
            ]
        },
        "scaleTargetRef": _obj(
            {"name": STR, "apiVersion": STR, "kind": STR, "envSourceContainerName": STR}, ("name",)
        ),
        "triggers": {**_arr(TRIGGER), "minItems": 1},
    },
    ("scaleTargetRef", "triggers"),
)
TRIGGER_AUTH_SPEC = _obj(
    {
        **dict.fromkeys(
            [
                "awsSecretManager",
                "azureKeyVault",
                "configMapTargetRef",
                "gcpSecretManager",
                "hashiCorpVault",
                "podIdentity",
            ],
            ANY,
        ),
        "secretTargetRef": _arr(
            _obj({"parameter": STR, "name": STR, "key": STR}, ("parameter", "name", "key"))
        ),
        "env": _arr(_obj({"parameter": STR, "name": STR, "containerName": STR}, ("parameter", "name"))),
    }
)
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _cr(
        "monitoring.coreos.com/v1", "ServiceMonitor", SERVICE_MONITOR_SPEC
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _cr(
        "monitoring.coreos.com/v1", "PrometheusRule", _obj({"groups": _arr(RULE_GROUP)})
    ),
    ("keda.sh/v1alpha1", "ScaledObject"): _cr("keda.sh/v1alpha1", "ScaledObject", SCALED_OBJECT_SPEC),
    ("keda.sh/v1alpha1", "TriggerAuthentication"): _cr(
        "keda.sh/v1alpha1", "TriggerAuthentication", TRIGGER_AUTH_SPEC
    ),
}
# Parameters of KEDA's kafka scaler (trigger metadata); anything else is ignored by KEDA, i.e. a mistake.
KEDA_KAFKA_PARAMETERS = {
    "bootstrapServers",
    "consumerGroup",
    "topic",
    "partitionLimitation",
    "lagThreshold",
    "activationLagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
    "excludePersistentLag",
    "scaleToZeroOnInvalidOffset",
    "limitToPartitionsWithLag",
    "ensureEvenDistributionOfPartitions",
    "version",
    "sasl",
    "tls",
    "unsafeSsl",
}


@functools.cache
def crd_validators() -> dict[tuple[str, str], Any]:
    jsonschema: Any = importlib.import_module("jsonschema")
    return {key: jsonschema.Draft202012Validator(schema) for key, schema in CRD_SCHEMAS.items()}


def validate_manifest(doc: Doc) -> None:
    key = (doc["apiVersion"], doc["kind"])
    if key in crd_validators():
        errors = sorted(crd_validators()[key].iter_errors(doc), key=lambda e: list(e.absolute_path))
        assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])
        if doc["kind"] == "ScaledObject":
            for trigger in doc["spec"]["triggers"]:
                unknown = set(trigger["metadata"]) - KEDA_KAFKA_PARAMETERS
                assert not unknown, f"not kafka scaler parameters: {unknown}"
    else:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_manifests_validate_against_their_schemas(scenario: tuple[str, list[Doc]]) -> None:
    name, docs = scenario
    for doc in docs:
        try:
            validate_manifest(doc)
        except Exception as exc:  # noqa: BLE001 -- report which object failed, whatever the validator raised
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {exc}")
        assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]


def test_crd_validation_catches_mistakes() -> None:
    """The custom-resource schemas are not vacuous: a misspelt field and a wrong type are rejected."""
    good = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "endpoints": [{"port": "metrics"}]},
    }
    validate_manifest(good)
    typo = _merge(good, {"spec": {"endpoints": [{"prot": "metrics"}]}})
    with pytest.raises(AssertionError):
        validate_manifest(typo)
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"name": "x"}, "triggers": [{"type": "kafka", "metadata": {"topic": 1}}]},
    }
    with pytest.raises(AssertionError):
        validate_manifest(scaled)


# --- settings ----------------------------------------------------------------------------------------------


def test_worker_env_names_are_real_settings_and_load(scenario: tuple[str, list[Doc]]) -> None:
    name, docs = scenario
    env = worker_env(docs)
    known = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    shudi_names = {k for k in env if k.upper().startswith(ENV_PREFIX)}
    assert shudi_names <= known, f"{name}: not shudi settings: {sorted(shudi_names - known)}"
    # The worker would start with this environment (names and values); files mounted in the pod are not here,
    # so a secret given as a file (SHUDI_<SECRET>_FILE) is checked with a placeholder secret.
    loadable = {k: v for k, v in env.items() if k in shudi_names}
    for secret in SECRET_FILE_SETTINGS:
        if loadable.pop(f"{ENV_PREFIX}{secret.upper()}_FILE", None) is not None:
            loadable[f"{ENV_PREFIX}{secret.upper()}"] = "<from the mounted Secret>"
    load_settings(loadable)
    for container in pod_spec(docs)["containers"] + pod_spec(docs).get("initContainers", []):
        if container["name"] != "shudi":
            assert not [v for v in container.get("env", []) if v["name"].startswith(ENV_PREFIX)]


def test_every_setting_can_be_set_through_the_chart(helm: str) -> None:
    emitted: set[str] = set()
    for name in SCENARIOS:
        emitted |= {k for k in worker_env(list(_render_scenario(helm, name))) if k.startswith(ENV_PREFIX)}
    schema = json.loads((CHART / "values.schema.json").read_text())
    config_names = set(schema["properties"]["config"]["properties"])
    fields = set(Settings.model_fields)
    assert config_names <= fields, (
        f"values.schema.json config names that are no setting: {config_names - fields}"
    )
    missing = {ENV_PREFIX + f.upper() for f in fields} - emitted
    # A secret is set either from a variable or from a mounted file; the chart uses one of the two forms.
    for secret in SECRET_FILE_SETTINGS:
        pair = {f"{ENV_PREFIX}{secret.upper()}", f"{ENV_PREFIX}{secret.upper()}_FILE"}
        if pair & emitted:
            missing -= pair
    assert not missing, (
        f"settings the chart cannot set: {sorted(missing)}; add them to `config` in values.schema.json "
        "(or to the values the chart manages)"
    )


def test_config_types_in_the_schema_match_the_settings() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    for name, prop in schema["properties"]["config"]["properties"].items():
        annotation = Settings.model_fields[name].annotation
        type_names: dict[object, str] = {int: "integer", float: "number", bool: "boolean", str: "string"}
        expected = type_names.get(annotation)
        if expected:
            assert prop.get("type") == expected, name
        elif typing.get_origin(annotation) is typing.Literal:
            assert prop.get("enum") == list(typing.get_args(annotation)), name


# --- pod hardening and probes ------------------------------------------------------------------------------


def test_pod_security_is_restricted(scenario: tuple[str, list[Doc]]) -> None:
    name, docs = scenario
    spec = pod_spec(docs)
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_sc["runAsUser"] == 10001
    assert pod_sc["runAsGroup"] == 10001
    assert pod_sc["fsGroup"] == 10001
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(key)
    assert spec["automountServiceAccountToken"] is False
    allowed_volumes = {"emptyDir", "secret", "configMap", "persistentVolumeClaim", "projected", "name"}
    for volume in spec["volumes"]:
        assert set(volume) <= allowed_volumes, volume
    containers = spec["containers"] + spec.get("initContainers", [])
    for container in containers:
        sc = container["securityContext"]
        where = f"{name}/{container['name']}"
        assert sc["runAsNonRoot"] is True, where
        assert sc["runAsUser"] == 10001, where
        assert sc["readOnlyRootFilesystem"] is True, where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc.get("privileged") is not True, where
        assert sc["capabilities"]["drop"] == ["ALL"], where
        assert not sc["capabilities"].get("add"), where
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert not container.get("ports") or all("hostPort" not in p for p in container["ports"]), where
        assert container["resources"]["requests"], where
        assert container["resources"]["limits"]["memory"], where
    # the worker writes only to its volumes
    mounts = {m["mountPath"]: m for m in worker(docs)["volumeMounts"]}
    env = worker_env(docs)
    assert env["SHUDI_DATA_DIR"] in mounts
    assert not mounts[env["SHUDI_DATA_DIR"]].get("readOnly")
    assert "/tmp" in mounts


def test_probes_hit_health_endpoints_on_the_metrics_port(scenario: tuple[str, list[Doc]]) -> None:
    _, docs = scenario
    container = worker(docs)
    env = worker_env(docs)
    (port,) = [p for p in container["ports"] if p["name"] == "metrics"]
    assert str(port["containerPort"]) == env["SHUDI_METRICS_PORT"]
    assert env["SHUDI_METRICS_HOST"] == "0.0.0.0"
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}, probe
    # liveness must not kill a worker before it could report a stall
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 30
    service = only(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": port["containerPort"], "targetPort": "metrics", "protocol": "TCP"}
    ]


# --- config checksum ---------------------------------------------------------------------------------------


def _checksum(docs: list[Doc]) -> str:
    annotation: str = only(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"][
        "checksum/config"
    ]
    return annotation


def test_checksum_annotation_follows_the_config(helm: str, tmp_path: Path) -> None:
    def checksum(*layers: Doc) -> str:
        return _checksum(render(helm, _write_values(tmp_path, _merge(REQUIRED, *layers))))

    base = checksum()
    assert len(base) == 64
    assert checksum() == base  # deterministic
    assert checksum({"replicaCount": 5}) == base  # not config: no roll
    changed = {
        checksum({"config": {"batch_size": 500}}),
        checksum({"app": {"logLevel": "debug"}}),
        checksum({"kafka": {"bootstrapServers": "other:9092"}}),
        checksum({"ipHashKey": {"value": "k1"}}),
        checksum({"ipHashKey": {"value": "k2"}}),
    }
    assert base not in changed
    assert len(changed) == 5


# --- values.schema.json and the chart's own checks ---------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (_merge({k: v for k, v in REQUIRED.items() if k != "kafka"}), "bootstrapServers"),
        (_merge(REQUIRED, {"kafka": {"bootstrapServers": ""}}), "bootstrapServers"),
        (
            _merge(REQUIRED, {"kafka": {"tls": {"clientSecret": {"name": "shudi-tls"}}}}),
            "kafka.tls.clientSecret",
        ),
        (_merge(REQUIRED, {"config": {"geoip_dbb": "/x"}}), "geoip_dbb"),
        (_merge(REQUIRED, {"config": {"batch_size": 0}}), "batch_size"),
        (_merge(REQUIRED, {"geoip": {"source": "http"}}), "source"),
        (_merge(REQUIRED, {"geoip": {"pvc": {"existingClaim": ""}}}), "existingClaim"),
        (_merge(REQUIRED, {"kafka": {"securityProtocol": "SASL_SSL"}}), "kafka.sasl.existingSecret"),
        (_merge(REQUIRED, {"keda": {"enabled": True, "maxReplicaCount": 9}}), "app.partitions"),
        (
            _merge(REQUIRED, {"keda": {"enabled": True}, "autoscaling": {"enabled": True}}),
            "mutually exclusive",
        ),
        (_merge(REQUIRED, {"extraEnv": [{"name": "SHUDI_BATCH_SIZE", "value": "1"}]}), "extraEnv"),
        (_merge(REQUIRED, {"config": {"data_dir": "/x"}}), "'data_dir'"),
        (
            _merge(
                REQUIRED, {"geoip": {"source": "secret", "secret": {"name": "g"}, "extraFiles": ["a.xdb"]}}
            ),
            "extraFiles",
        ),
    ],
    ids=[
        "no-bootstrap",
        "empty-bootstrap",
        "client-cert-without-tls",
        "unknown-setting",
        "bad-setting-value",
        "bad-geoip-source",
        "pvc-without-claim",
        "sasl-without-secret",
        "keda-above-partitions",
        "hpa-and-keda",
        "shudi-env-via-extraEnv",
        "managed-setting-in-config",
        "extra-files-without-pvc",
    ],
)
def test_bad_values_are_rejected(helm: str, tmp_path: Path, values: Doc, message: str) -> None:
    proc = _template(helm, _write_values(tmp_path, values))
    assert proc.returncode != 0, proc.stdout[:2000]
    assert message in proc.stderr, proc.stderr


# --- GeoIP -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["pvc", "secret", "configMap", "geoipupdate"])
def test_geoip_sources(helm: str, source: str) -> None:
    docs = list(_render_scenario(helm, f"geoip-{source}"))
    spec = pod_spec(docs)
    (volume,) = [v for v in spec["volumes"] if v["name"] == "geoip"]
    (mount,) = [m for m in worker(docs)["volumeMounts"] if m["name"] == "geoip"]
    assert mount["readOnly"] is True
    db = worker_env(docs)["SHUDI_GEOIP_DB"]
    assert db == f"{mount['mountPath']}/GeoLite2-City.mmdb"
    kind = {"pvc": "persistentVolumeClaim", "geoipupdate": "emptyDir"}.get(source, source)
    assert kind in volume
    if source in ("secret", "configMap"):
        # the whole directory is mounted (no subPath), so an updated object reaches the worker
        assert "subPath" not in mount
        assert volume[kind]["items"] == [{"key": "city.mmdb", "path": "GeoLite2-City.mmdb"}]
    if source == "geoipupdate":
        (init,) = spec["initContainers"]
        sidecar = next(c for c in spec["containers"] if c["name"] == "geoipupdate")
        for container, frequency in ((init, "0"), (sidecar, "24")):
            env = {e["name"]: e for e in container["env"]}
            assert env["GEOIPUPDATE_FREQUENCY"]["value"] == frequency
            assert env["GEOIPUPDATE_DB_DIR"]["value"] == mount["mountPath"]
            assert env["GEOIPUPDATE_EDITION_IDS"]["value"] == "GeoLite2-City"
            assert env["GEOIPUPDATE_LICENSE_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "maxmind"
            assert env["GEOIPUPDATE_ACCOUNT_ID"]["valueFrom"]["secretKeyRef"]["name"] == "maxmind"
            assert container["image"].startswith("ghcr.io/maxmind/geoipupdate:v")  # pinned, never :latest
            mounts = {m["name"]: m for m in container["volumeMounts"]}
            assert mounts["geoip"]["mountPath"] == mount["mountPath"]
            assert not mounts["geoip"].get("readOnly")
            assert "tmp" in mounts  # its entry script writes /tmp/geoipupdate
        egress = only(docs, "NetworkPolicy")["spec"]["egress"]
        assert any(rule["ports"] == [{"port": 443, "protocol": "TCP"}] for rule in egress)
    else:
        assert "initContainers" not in spec
        assert [c["name"] for c in spec["containers"]] == ["shudi"]


def test_geoip_several_files_from_one_volume(helm: str, tmp_path: Path) -> None:
    values = _merge(REQUIRED, {"geoip": {"extraFiles": ["ip2region_v4.xdb", "ip2region_v6.xdb"]}})
    docs = render(helm, _write_values(tmp_path, values))
    (mount,) = [m for m in worker(docs)["volumeMounts"] if m["name"] == "geoip"]
    d = mount["mountPath"]
    assert (
        worker_env(docs)["SHUDI_GEOIP_DB"]
        == f"{d}/ip2region_v4.xdb,{d}/ip2region_v6.xdb,{d}/GeoLite2-City.mmdb"
    )


# --- scaling, disruption, network ---------------------------------------------------------------------------


def test_keda_scales_on_the_enrich_group_lag(helm: str) -> None:
    for name in ("production", "keda-ssl", "keda-plaintext", "mutual-tls"):
        docs = list(_render_scenario(helm, name))
        env = worker_env(docs)
        scaled = only(docs, "ScaledObject")
        assert "replicas" not in only(docs, "Deployment")["spec"]
        assert not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
        assert scaled["spec"]["scaleTargetRef"]["name"] == only(docs, "Deployment")["metadata"]["name"]
        assert scaled["spec"]["maxReplicaCount"] <= int(env["SHUDI_PARTITIONS"])
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == env["SHUDI_APP_ID"] + "-enrich"
        assert meta["topic"] == env["SHUDI_INPUT_TOPIC"]
        assert meta["bootstrapServers"] == env["SHUDI_BROKER"]
        protocol = env["SHUDI_SECURITY_PROTOCOL"]
        assert ("sasl" in meta) == protocol.startswith("SASL")
        assert (meta.get("tls") == "enable") == protocol.endswith("SSL")
        auths = [d for d in docs if d["kind"] == "TriggerAuthentication"]
        if protocol == "PLAINTEXT":
            assert not auths
            assert "authenticationRef" not in trigger
        else:
            (auth,) = auths
            assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
            parameters = {ref["parameter"] for ref in auth["spec"].get("secretTargetRef", [])}
            assert ("cert" in parameters and "key" in parameters) == ("SHUDI_SSL_CERTFILE" in env)


def test_image_tag_defaults_to_the_app_version(helm: str, tmp_path: Path) -> None:
    """`helm install` with only the broker and the GeoIP volume given: the image is the chart's appVersion."""
    values = _merge({k: v for k, v in REQUIRED.items() if k != "image"})
    docs = render(helm, _write_values(tmp_path, values))
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert worker(docs)["image"] == f"ghcr.io/shudi/shudi:{app_version}"
    digest = "sha256:" + "cd" * 32
    docs = render(helm, _write_values(tmp_path, _merge(values, {"image": {"digest": digest}})))
    assert worker(docs)["image"] == f"ghcr.io/shudi/shudi@{digest}"


def test_mutual_tls_mounts_the_client_secret(helm: str) -> None:
    docs = list(_render_scenario(helm, "mutual-tls"))
    env = worker_env(docs)
    mounts = {m["name"]: m for m in worker(docs)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    client = volumes["kafka-client"]["secret"]
    assert client["secretName"] == "shudi-tls"
    assert {i["key"] for i in client["items"]} == {"user.crt", "user.key", "user.password"}
    where = mounts["kafka-client"]["mountPath"]
    assert mounts["kafka-client"]["readOnly"]
    assert env["SHUDI_SSL_CERTFILE"] == f"{where}/user.crt"
    assert env["SHUDI_SSL_KEYFILE"] == f"{where}/user.key"
    assert env["SHUDI_SSL_KEY_PASSWORD_FILE"] == f"{where}/user.password"
    assert env["SHUDI_SSL_CAFILE"].startswith(mounts["kafka-ca"]["mountPath"] + "/")


def test_hpa_and_fixed_replicas(helm: str) -> None:
    docs = list(_render_scenario(helm, "everything"))
    hpa = only(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in only(docs, "Deployment")["spec"]
    docs = list(_render_scenario(helm, "defaults"))
    assert only(docs, "Deployment")["spec"]["replicas"] == 2
    assert only(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_network_policy(helm: str) -> None:
    docs = list(_render_scenario(helm, "production"))
    policy = only(docs, "NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["podSelector"]["matchLabels"] == only(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert ingress["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    ports = [p for rule in policy["egress"] for p in rule["ports"]]
    assert {"port": 53, "protocol": "UDP"} in ports
    assert {"port": 9093, "protocol": "TCP"} in ports
    assert {p["port"] for p in ports} == {53, 9093}
    closed = only(list(_render_scenario(helm, "keda-plaintext")), "NetworkPolicy")["spec"]
    assert closed["ingress"] == []


# --- monitoring objects from the repository's rule and dashboard files ------------------------------------


def test_alert_rules_are_the_charts_files_unchanged(helm: str) -> None:
    """The PrometheusRule holds exactly the groups of the chart's rules/*.yml, in file-name order: the same
    files compose's Prometheus mounts and promtool tests (a chart cannot read outside its directory, so the
    one copy lives here; tests/deploy/test_compose.py checks that no other copy exists)."""
    files = sorted((CHART / "rules").glob("*.yml"))
    docs = list(_render_scenario(helm, "everything"))
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    if not files:
        assert not rules
        return
    expected = [g for src in files for g in yaml.safe_load(src.read_text())["groups"]]
    (rule,) = rules
    assert rule["spec"] == {"groups": expected}
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_dashboards_are_the_charts_files_unchanged(helm: str) -> None:
    files = sorted((CHART / "dashboards").glob("*.json"))
    docs = list(_render_scenario(helm, "everything"))
    maps = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboards")]
    if not files:
        assert not maps
        return
    (dashboards,) = maps
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboards["data"] == {src.name: src.read_text() for src in files}
    for src in files:
        json.loads(src.read_text())


def test_service_monitor_selects_the_service(helm: str) -> None:
    docs = list(_render_scenario(helm, "production"))
    monitor = only(docs, "ServiceMonitor")
    service = only(docs, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    # job="shudi", as the alert rules and dashboards expect
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "shudi"
