"""deploy/: the Kubernetes manifests and the Dockerfile are well-formed, agree with each other
(selectors, ports, volumes, the ConfigMap and claim they name) and with the server itself: every
flag is one the server knows, and the config files in the ConfigMap parse with the server's own
parsers. No cluster and no Docker daemon are needed."""

from __future__ import annotations

import json
import re
import shlex
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

from server.transports.health import LIVENESS_SERVICE, READINESS_SERVICES
from server.lifecycle.model_config import parse_model_config, validate_model_config
from server.settings import parse_flags, prometheus_path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
REPO = DEPLOY.parent
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
GRPC_PORT, REST_PORT = 8500, 8501
# Native gRPC probes are GA from 1.27 (the oldest version the manifests claim); and the newest
# schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.27.0", "latest")


def load_documents() -> list[tuple[str, dict]]:
    docs = []
    for path in MANIFESTS:
        with open(path, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if doc is not None:  # an empty document between two `---`
                    docs.append((path.name, doc))
    return docs


DOCUMENTS = load_documents()


def objects(kind: str) -> list[dict]:
    return [d for _, d in DOCUMENTS if d.get("kind") == kind]


def the(kind: str) -> dict:
    found = objects(kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def named(kind: str, name: str) -> dict:
    found = [d for d in objects(kind) if d["metadata"]["name"] == name]
    assert found, f"{kind} {name!r} is referenced but not in deploy/kubernetes/"
    return found[0]


def pod_spec() -> dict:
    return the("Deployment")["spec"]["template"]["spec"]


def container() -> dict:
    containers = pod_spec()["containers"]
    assert len(containers) == 1
    return containers[0]


def container_flags() -> list[str]:
    c = container()
    return [a for a in list(c.get("command", [])) + list(c.get("args", [])) if a.startswith("-")]


def flag_value(flags: list[str], name: str) -> str:
    values = [f.partition("=")[2] for f in flags if f.partition("=")[0] == f"--{name}"]
    assert len(values) == 1, f"--{name} given {len(values)} times in {flags}"
    return values[0]


def config_map_file(path: str) -> str:
    """The text a container sees at ``path``, when ``path`` is in a ConfigMap volume."""
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    for m in container()["volumeMounts"]:
        prefix = m["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix) and "configMap" in volumes[m["name"]]:
            cm = named("ConfigMap", volumes[m["name"]]["configMap"]["name"])
            key = path[len(prefix):]
            assert key in cm["data"], f"{path}: no key {key!r} in ConfigMap {cm['metadata']['name']}"
            return cm["data"][key]
    raise AssertionError(f"{path} is not in a ConfigMap volume of the Deployment")


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)  # continuation lines
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def exec_form(instruction: str) -> list[str]:
    [rest] = [r for op, r in dockerfile_instructions() if op == instruction]
    value = json.loads(rest)  # the exec (JSON) form: no shell between Kubernetes' signals and the server
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


def test_manifests_exist_and_every_document_is_an_object():
    assert MANIFESTS, "no deploy/kubernetes/*.yaml"
    assert {"ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"} <= {d.get("kind") for _, d in DOCUMENTS}
    seen = set()
    for file, doc in DOCUMENTS:
        assert isinstance(doc, dict), file
        assert doc.get("apiVersion") and doc.get("kind"), file
        meta = doc.get("metadata") or {}
        assert meta.get("name"), f"{file}: {doc['kind']} without metadata.name"
        # Namespace-less, so `kubectl apply -n NS` places everything.
        assert "namespace" not in meta, f"{file}: {doc['kind']} {meta['name']} names a namespace"
        key = (doc["kind"], meta["name"])
        assert key not in seen, f"{key} defined twice"
        seen.add(key)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version):
    """Strict: an unknown or misspelt field (``readinesProbe``) fails, not just a wrong type."""
    kv = pytest.importorskip("kubernetes_validate",
                             reason="kubernetes-validate is not installed (pip install kubernetes-validate)")
    if version == "latest":
        version = kv.latest_version()
    for file, doc in DOCUMENTS:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            pytest.fail(f"{file}: {doc['kind']} {doc['metadata']['name']} at {where}: {e.message} (k8s {version})")


def test_deployment_selector_matches_its_pods():
    d = the("Deployment")
    selector = d["spec"]["selector"]["matchLabels"]
    labels = d["spec"]["template"]["metadata"]["labels"]
    assert selector and selector.items() <= labels.items()
    assert d["spec"]["replicas"] >= 2
    for c in pod_spec().get("topologySpreadConstraints", []):
        assert c["labelSelector"]["matchLabels"].items() <= labels.items()
    for pdb in objects("PodDisruptionBudget"):
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_container_image_ports_and_resources():
    c = container()
    assert c.get("image")
    ports = {p["containerPort"]: p.get("name") for p in c["ports"]}
    assert ports == {GRPC_PORT: "grpc", REST_PORT: "http"}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), kind


@pytest.mark.parametrize("probe, service", [("readinessProbe", ""), ("livenessProbe", LIVENESS_SERVICE),
                                            ("startupProbe", LIVENESS_SERVICE)])
def test_probes_ask_the_grpc_health_service(probe, service):
    """Kubernetes' native gRPC probe calls grpc.health.v1.Health/Check on the gRPC port. Readiness
    asks for "" (SERVING while every model has an AVAILABLE version, NOT_SERVING from SIGTERM
    on); liveness and start-up ask for the service that answers as long as the server runs, so
    a missing model does not get the pod restarted."""
    c = container()
    p = c[probe]
    assert set(p) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}
    assert p["grpc"]["port"] == GRPC_PORT
    assert p["grpc"].get("service", "") == service
    assert service in READINESS_SERVICES + (LIVENESS_SERVICE,)  # a name the server registers


def test_volumes_the_pods_mount_are_declared_and_exist():
    spec = pod_spec()
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container()["volumeMounts"]}
    for m in mounts.values():
        assert m["name"] in volumes, f"mount of undeclared volume {m['name']}"
    config = volumes[mounts["/config"]["name"]]
    named("ConfigMap", config["configMap"]["name"])
    models = volumes[mounts["/models"]["name"]]
    claim = named("PersistentVolumeClaim", models["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert mounts["/models"].get("readOnly") is True  # replicas only read; versions are published elsewhere


def test_services_select_the_pods_and_target_container_ports():
    pod_labels = the("Deployment")["spec"]["template"]["metadata"]["labels"]
    by_name = {p["name"]: p["containerPort"] for p in container()["ports"]}
    by_number = set(by_name.values())
    services = objects("Service")
    for s in services:
        assert s["spec"]["selector"].items() <= pod_labels.items(), s["metadata"]["name"]
        for port in s["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in by_name or target in by_number, f"{s['metadata']['name']}: no container port {target}"
    targets = {s["metadata"]["name"]: {by_name.get(p.get("targetPort"), p.get("targetPort", p["port"]))
                                       for p in s["spec"]["ports"]} for s in services}
    # gRPC through a headless Service (per-pod DNS records for client-side round_robin);
    # REST through an ordinary ClusterIP Service.
    headless = [s for s in services if s["spec"].get("clusterIP") == "None"]
    assert [targets[s["metadata"]["name"]] for s in headless] == [{GRPC_PORT}]
    assert any(REST_PORT in targets[s["metadata"]["name"]] and s["spec"].get("clusterIP") != "None"
               for s in services)


def test_termination_grace_covers_the_drain():
    """SIGKILL must not cut the drain short: the pod's grace period outlasts the preStop sleep
    plus the server's --shutdown_grace_seconds."""
    grace = float(flag_value(container_flags(), "shutdown_grace_seconds"))
    pre_stop = 0.0
    exec_ = container().get("lifecycle", {}).get("preStop", {}).get("exec")
    if exec_:
        command = exec_["command"]
        assert command[0] == "sleep", command  # the only preStop hook this check can time
        pre_stop = float(command[1])
    assert pod_spec()["terminationGracePeriodSeconds"] > pre_stop + grace


def test_container_flags_are_server_flags():
    flags = container_flags()
    settings = parse_flags(flags)
    assert settings.unknown == (), f"the server would print 'unknown argument' for {settings.unknown}"
    assert settings.unimplemented == (), f"accepted but ignored by Verso: {settings.unimplemented}"
    assert settings.port == GRPC_PORT and settings.rest_api_port == REST_PORT
    # Every value parsed as the server will parse it at start-up.
    from server.settings import grpc_channel_arguments
    grpc_channel_arguments(settings)


def test_models_config_parses_with_the_server_parser():
    flags = container_flags()
    path = flag_value(flags, "model_config_file")
    text = config_map_file(path)
    entries = validate_model_config(parse_model_config(text, path))
    assert entries, "models.config lists no model"
    for e in entries:
        assert e.base_path.startswith("/models/"), f"{e.name}: base_path {e.base_path} is not on the model volume"


def test_monitoring_config_parses_and_matches_the_scrape_annotations(tmp_path):
    path = flag_value(container_flags(), "monitoring_config_file")
    local = tmp_path / "monitoring.config"
    local.write_text(config_map_file(path), encoding="utf-8")
    metrics_path = prometheus_path(parse_flags([f"--monitoring_config_file={local}"]))
    assert metrics_path == "/monitoring/prometheus/metrics"
    annotations = the("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == metrics_path
    assert int(annotations["prometheus.io/port"]) == REST_PORT  # metrics are served on the REST port only


def test_dockerfile_runs_the_server_with_real_flags():
    ops = dockerfile_instructions()
    assert ops[0] == ("FROM", "python:3.11-slim")
    assert any(op == "RUN" and re.search(r"\bpip install \.(\s|$|&)", rest) for op, rest in ops)
    entry = exec_form("ENTRYPOINT")
    assert entry == ["tensorflow_model_server"]
    assert entry_points(group="console_scripts", name="tensorflow_model_server"), "console script not declared"
    cmd = exec_form("CMD")
    settings = parse_flags(cmd)
    assert settings.unknown == () and settings.unimplemented == ()
    assert (settings.port, settings.rest_api_port, settings.model_config_file) == \
        (GRPC_PORT, REST_PORT, "/config/models.config")
    exposed = {int(p) for op, rest in ops if op == "EXPOSE" for p in rest.split()}
    assert exposed == {GRPC_PORT, REST_PORT}


def test_dockerfile_copies_what_pip_install_needs():
    """Every COPY source exists, and every top-level package of pyproject.toml is copied."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    copied = set()
    for op, rest in dockerfile_instructions():
        if op == "COPY":
            *sources, _dest = shlex.split(rest)
            for s in sources:
                assert (REPO / s).exists(), f"COPY {s}: not in the repository"
                copied.add(s.rstrip("/"))
    assert {"pyproject.toml", project["project"]["readme"]} <= copied
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"packages not copied: {packages - copied}"
