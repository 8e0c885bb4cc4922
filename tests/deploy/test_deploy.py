"""The deployment files, checked as far as this machine allows (no cluster, no container registry).

- The Helm chart is linted and rendered by Helm's own engine (helm-python-sdk binds Helm v4's Go SDK,
  no `helm` binary needed), and every rendered manifest is validated against the Kubernetes OpenAPI
  schemas of a supported version (kubernetes-validate bundles them; what kubeconform does).
- The compose file is validated against the Compose Specification's JSON schema (vendored from
  compose-spec/compose-spec, Apache-2.0, in tests/deploy/data).
- Every keel.yaml shipped beside them (the image's, compose's, the chart's ConfigMap) passes Keel's own
  config check with the environment those files say they get.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from keel import config as keel_config
from keel.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "keel"
KUBE_VERSIONS = ("1.29.0", "1.33.0")  # the oldest and newest this chart is checked against
ENV = {
    "KEEL_ADMIN_TOKEN": "t0ken",
    "KEEL_DATABASE_URL": "postgresql://keel:pw@postgres:5432/keel",
    "KEEL_REDIS_URL": "redis://redis:6379/0",
    "POSTGRES_PASSWORD": "pw",
}
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "everything-on": {"serviceMonitor": {"enabled": True}, "gateway": {"processes": 2}},
    "fixed-replicas": {"gateway": {"autoscaling": {"enabled": False}, "podDisruptionBudget": {"enabled": False}}},
    "minimal": {"worker": {"enabled": False}, "migration": {"enabled": False}, "serviceAccount": {"create": False}},
}


def rendered(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = helm.Chart.load(str(CHART))
    try:
        out = chart.render(values, name="keel", namespace="ai", is_install=True)
    finally:
        chart.close()
    docs: list[dict[str, Any]] = []
    for path, text in sorted(out.items()):
        if path.endswith(".txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def test_chart_lints_clean() -> None:
    report = helm.lint(str(CHART), strict=True, namespace="ai")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert problems == []


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_chart_renders_manifests_valid_for_kubernetes(variant: str) -> None:
    docs = rendered(VARIANTS[variant])
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Deployment") == (1 if variant == "minimal" else 2)
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            # a CRD (Prometheus Operator): no schema in Kubernetes' own set; kubeconform skips it the same way
            assert doc["spec"]["endpoints"][0]["path"] == "/metrics"
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 4


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_pod_runs_hardened(variant: str) -> None:
    docs = rendered(VARIANTS[variant])
    for where, spec in pod_specs(docs):
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert {"/etc/keel", "/tmp", "/data"} <= mounts, where  # the only writable paths are volumes
            # secrets reach the process only as references to Kubernetes Secrets
            for env in container["env"]:
                if env["name"] in ("KEEL_ADMIN_TOKEN", "KEEL_DATABASE_URL", "KEEL_REDIS_URL"):
                    assert "secretKeyRef" in env["valueFrom"], where


def test_gateway_probes_hpa_and_service_line_up() -> None:
    docs = rendered({})
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    gateway = by_kind[("Deployment", "keel-gateway")]
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["args"][0] == "serve"
    assert "replicas" not in gateway["spec"]  # the HPA owns the replica count
    hpa = by_kind[("HorizontalPodAutoscaler", "keel-gateway")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "keel-gateway"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    service = by_kind[("Service", "keel")]
    pod_labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    worker = by_kind[("Deployment", "keel-worker")]
    assert worker["spec"]["template"]["spec"]["containers"][0]["args"] == ["worker"]
    job = by_kind[("Job", "keel-migrate")]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "migrate"]
    # the hook's config exists before the job (hooks run before the release's own ConfigMap)
    migrate_cm = by_kind[("ConfigMap", "keel-migrate")]
    assert int(migrate_cm["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0


def check_keel_yaml(text: str, env: dict[str, str]) -> keel_config.Config:
    return keel_config.parse(yaml.safe_load(text), env, source="deploy")


def test_the_charts_config_is_a_valid_keel_yaml() -> None:
    docs = rendered({})
    configmaps = [d for d in docs if d["kind"] == "ConfigMap"]
    assert len(configmaps) == 2
    for cm in configmaps:
        cfg = check_keel_yaml(cm["data"]["keel.yaml"], ENV)
        assert cfg.storage.url == ENV["KEEL_DATABASE_URL"]


def test_a_typo_in_the_charts_config_is_named_by_keel_before_it_serves() -> None:
    docs = rendered({"config": {"serverr": {"port": 1}}})
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    with pytest.raises(ConfigError, match="serverr"):
        check_keel_yaml(cm["data"]["keel.yaml"], ENV)


def test_compose_file_matches_the_compose_spec() -> None:
    schema = json.loads((Path(__file__).parent / "data" / "compose-spec.json").read_text())
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert [f"{list(e.path)}: {e.message}" for e in errors] == []
    services = compose["services"]
    assert {"gateway", "worker", "migrate", "postgres", "redis"} <= services.keys()
    for name in ("gateway", "worker", "migrate"):
        assert services[name]["read_only"] is True
        assert services[name]["user"] == "10001:10001"
    assert services["gateway"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "pgvector" in services["postgres"]["image"]
    # every file the compose file mounts or builds from exists
    for volume in services["gateway"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (DEPLOY / source).exists(), source
    assert (DEPLOY / services["gateway"]["build"]["context"] / services["gateway"]["build"]["dockerfile"]).exists()


def test_compose_and_image_configs_are_valid_keel_yaml() -> None:
    cfg = check_keel_yaml((DEPLOY / "keel.compose.yaml").read_text(), ENV)
    assert cfg.storage.url.startswith("postgresql://")
    image_cfg = check_keel_yaml((DEPLOY / "keel.container.yaml").read_text(), {})
    assert image_cfg.storage.url == "sqlite:////data/keel.db"
    assert image_cfg.server.host == "0.0.0.0"


def test_dockerfile_is_multi_stage_non_root_with_a_health_check() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\w+)", text, flags=re.MULTILINE)
    assert stages == ["build", "runtime"]
    runtime = text.split("AS runtime", 1)[1]
    assert re.search(r"^USER\s+10001", runtime, flags=re.MULTILINE)
    assert "HEALTHCHECK" in runtime and "/healthz" in runtime
    assert "gcc" not in runtime and "build-essential" not in runtime
    for source in re.findall(r"^COPY\s+(?!--from)(\S+)", text, flags=re.MULTILINE):
        assert (ROOT / source).exists(), source
