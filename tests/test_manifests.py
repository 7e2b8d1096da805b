"""deploy/: the Kubernetes manifests and the container image recipe, checked offline.

- Every core object (Namespace, ConfigMap, Secret, DaemonSet, Service) is validated against the
  Kubernetes API's own JSON schemas, in their strict form (an unknown field is an error), for the
  oldest version the manifests are for (1.30) and the newest the `kubernetes-validate` package
  ships. PodMonitor and ServiceMonitor are custom resources: no package here ships their schema,
  so `MONITOR_SCHEMA` below spells out the part of prometheus-operator's CRD schema
  (monitoring.coreos.com/v1, `example/prometheus-operator-crd/` of prometheus-operator v0.91)
  these manifests use, with the Kubernetes LabelSelector and ObjectMeta definitions for the rest;
  a field outside it is an error (add it here once checked against the CRD).
- The objects agree with each other and with the config they carry: selectors, named ports,
  probes, mounts, the paths rules.yaml names, the env its `${VAR}`s need, the image's user.
- The ConfigMap's rules.yaml passes `xinf-watch check` (paths moved into a temporary directory)
  and runs: the real daemon reads CRI-wrapped ingress-nginx lines through kubelet's symlink layout,
  attributes them with the Secret's keys.yaml, and answers the probes' path.
- The Containerfile's COPY set builds the package (pip builds a wheel from exactly those files).
  No container engine runs here, so the image itself is not built by the tests.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import DaemonProcess, parse_metrics, total
from receivers import free_port
from tools import require_module, require_program

from xinf_watch.config.schema import load_config
from xinf_watch.keys.files import load_registry
from xinf_watch.keys.sources import SETTLE_NS, KeySources
from xinf_watch.model import KeyState

kubernetes_validate = require_module("kubernetes_validate")  # it brings jsonschema and referencing

import jsonschema  # noqa: E402
from kubernetes_validate.utils import latest_version, schema_contents  # noqa: E402
from referencing import Registry, Resource  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
CONTAINERFILE = DEPLOY / "Containerfile"
MIN_VERSION = "1.30.0"
VERSIONS = (MIN_VERSION, latest_version())
CORE_FILES = sorted(K8S.glob("*.yaml"))
MONITOR_FILES = sorted((K8S / "monitoring").glob("*.yaml"))

# -- loading ------------------------------------------------------------------------------------


def documents(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} holds no object"
    return docs


def objects() -> dict[str, dict[str, Any]]:
    """Every object of deploy/kubernetes by kind (each kind appears once)."""
    found: dict[str, dict[str, Any]] = {}
    for path in CORE_FILES + MONITOR_FILES:
        for doc in documents(path):
            assert doc["kind"] not in found, f"a second {doc['kind']} in {path}"
            found[doc["kind"]] = doc
    return found


def test_the_manifests_are_all_there() -> None:
    assert sorted(objects()) == [
        "ConfigMap", "DaemonSet", "Namespace", "PodMonitor", "Secret", "Service", "ServiceMonitor",
    ]  # fmt: skip


# -- Kubernetes API schemas ---------------------------------------------------------------------


def core_documents() -> list[Any]:
    return [pytest.param(d, id=f"{p.name}:{d['kind']}") for p in CORE_FILES for d in documents(p)]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("doc", core_documents())
def test_core_objects_validate_against_the_kubernetes_api_schema(doc: dict[str, Any], version: str) -> None:
    assert kubernetes_validate.validate(doc, version, strict=True) == version.rsplit(".", 1)[0]


def daemonset_with(change: str) -> dict[str, Any]:
    ds = copy.deepcopy(objects()["DaemonSet"])
    container = ds["spec"]["template"]["spec"]["containers"][0]
    if change == "misspelt field":
        container["volumeMount"] = container.pop("volumeMounts")
    elif change == "port as a string":
        container["ports"][0]["containerPort"] = "9877"
    elif change == "no container name":
        del container["name"]
    return ds


@pytest.mark.parametrize("change", ["misspelt field", "port as a string", "no container name"])
def test_the_schema_validation_catches_a_broken_daemonset(change: str) -> None:
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset_with(change), MIN_VERSION, strict=True)


# -- prometheus-operator's PodMonitor and ServiceMonitor ----------------------------------------

K8S_DEFS = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg."
DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
RELABEL_ACTIONS = [
    spelling
    for action in ("replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep", "lowercase",
                   "uppercase", "keepequal", "dropequal")
    for spelling in (action, {"hashmod": "HashMod", "labelmap": "LabelMap", "labeldrop": "LabelDrop",
                              "labelkeep": "LabelKeep", "keepequal": "KeepEqual",
                              "dropequal": "DropEqual"}.get(action, action.capitalize()))
]  # fmt: skip
RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}},
        "separator": {"type": "string"},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "modulus": {"type": "integer"},
        "replacement": {"type": "string"},
        "action": {"enum": RELABEL_ACTIONS},
    },
}
ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "port": {"type": "string"},
        "path": {"type": "string"},
        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
        "interval": {"type": "string", "pattern": DURATION},
        "scrapeTimeout": {"type": "string", "pattern": DURATION},
        "honorLabels": {"type": "boolean"},
        "relabelings": {"type": "array", "items": RELABEL},
        "metricRelabelings": {"type": "array", "items": RELABEL},
    },
}


def monitor_schema(kind: str, endpoints: str) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": {"$ref": K8S_DEFS + "apis.meta.v1.ObjectMeta"},
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", endpoints],
                "properties": {
                    "jobLabel": {"type": "string"},
                    "selector": {"$ref": K8S_DEFS + "apis.meta.v1.LabelSelector"},
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "any": {"type": "boolean"},
                            "matchNames": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    endpoints: {"type": "array", "minItems": 1, "items": ENDPOINT},
                },
            },
        },
    }


MONITOR_SCHEMA = {
    "PodMonitor": monitor_schema("PodMonitor", "podMetricsEndpoints"),
    "ServiceMonitor": monitor_schema("ServiceMonitor", "endpoints"),
}


def monitor_validator(kind: str) -> jsonschema.Draft202012Validator:
    version = VERSIONS[0]
    path = f"kubernetes-json-schema/v{version}-local-strict/_definitions.json"
    definitions = schema_contents(path, version)
    registry: Registry[Any] = Resource.from_contents(definitions) @ Registry()
    return jsonschema.Draft202012Validator(MONITOR_SCHEMA[kind], registry=registry)


@pytest.mark.parametrize("kind", ["PodMonitor", "ServiceMonitor"])
def test_monitors_validate_against_the_prometheus_operator_schema(kind: str) -> None:
    monitor_validator(kind).validate(objects()[kind])


@pytest.mark.parametrize("kind", ["PodMonitor", "ServiceMonitor"])
def test_the_monitor_schema_catches_mistakes(kind: str) -> None:
    validator = monitor_validator(kind)
    good = objects()[kind]
    endpoints = "podMetricsEndpoints" if kind == "PodMonitor" else "endpoints"
    broken = []
    for change in ("typo", "interval", "selector", "action", "metadata"):
        doc = copy.deepcopy(good)
        endpoint = doc["spec"][endpoints][0]
        if change == "typo":
            endpoint["scrapeInterval"] = endpoint.pop("interval")
        elif change == "interval":
            endpoint["interval"] = "30 seconds"
        elif change == "selector":
            doc["spec"]["selector"] = {"matchLabel": {"app.kubernetes.io/name": "xinf-watch"}}
        elif change == "action":
            endpoint["relabelings"][0]["action"] = "rename"
        elif change == "metadata":
            doc["metadata"]["label"] = {}
        broken.append(doc)
    for doc in broken:
        assert not validator.is_valid(doc)


# -- the objects agree with each other ----------------------------------------------------------


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = objects()["DaemonSet"]["spec"]["template"]["spec"]
    return spec


def main_container() -> dict[str, Any]:
    [container] = pod_spec()["containers"]
    return container


def rules_text() -> str:
    text: str = objects()["ConfigMap"]["data"]["rules.yaml"]
    return text


def rules_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(rules_text())
    return data


def mounts() -> dict[str, dict[str, Any]]:
    """mountPath -> {volume, readOnly} of the main container."""
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    return {
        m["mountPath"]: {"volume": volumes[m["name"]], "readOnly": m.get("readOnly", False)}
        for m in main_container()["volumeMounts"]
    }


def volume_at(path: str) -> tuple[str, dict[str, Any]]:
    """The mount holding `path` (the longest mountPath above it) and the rest of the path in it."""
    holding = max((m for m in mounts() if path.startswith(m.rstrip("/") + "/")), key=len)
    return path[len(holding) + 1 :], mounts()[holding]


def test_one_namespace_and_the_app_label_everywhere() -> None:
    found = objects()
    assert found["Namespace"]["metadata"]["name"] == "xinf-watch"
    for kind, obj in found.items():
        if kind != "Namespace":
            assert obj["metadata"]["namespace"] == "xinf-watch", kind
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "xinf-watch", kind
    # hostPath volumes are refused by the baseline and restricted Pod Security levels
    assert found["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_selectors_select_the_daemonsets_pods() -> None:
    found = objects()
    ds = found["DaemonSet"]
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    selected = ds["spec"]["selector"]["matchLabels"]
    assert selected.items() <= pod_labels.items()
    assert found["Service"]["spec"]["selector"].items() <= pod_labels.items()
    assert found["PodMonitor"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service_labels = found["Service"]["metadata"]["labels"]
    assert found["ServiceMonitor"]["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    # job="xinf-watch", which rules/prometheus/xinf-watch.rules.yml's XinfWatchDown looks at
    assert 'up{job="xinf-watch"}' in (ROOT / "rules" / "prometheus" / "xinf-watch.rules.yml").read_text()
    for kind, labels in (("PodMonitor", pod_labels), ("ServiceMonitor", service_labels)):
        assert labels[found[kind]["spec"]["jobLabel"]] == "xinf-watch"


def test_the_metrics_port_is_the_one_rules_yaml_listens_on() -> None:
    host, _, port = rules_data()["metrics"]["listen"].rpartition(":")
    assert host == "0.0.0.0"  # the pod's address: scraped from another pod (default 127.0.0.1)
    [container_port] = main_container()["ports"]
    assert (container_port["name"], container_port["containerPort"]) == ("metrics", int(port))
    found = objects()
    [service_port] = found["Service"]["spec"]["ports"]
    assert service_port["targetPort"] == "metrics" and service_port["port"] == int(port)
    assert found["Service"]["spec"]["clusterIP"] == "None"  # one target per pod
    for kind, endpoints in (("PodMonitor", "podMetricsEndpoints"), ("ServiceMonitor", "endpoints")):
        [endpoint] = found[kind]["spec"][endpoints]
        assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = main_container()[probe]["httpGet"]
        assert get["port"] == "metrics" and get["path"].startswith("/metrics"), probe


def test_the_paths_rules_yaml_names_are_mounted() -> None:
    rules = rules_data()
    container = main_container()
    # the daemon's --rules is the ConfigMap's rules.yaml
    args = container["args"]
    rules_path = args[args.index("--rules") + 1]
    key, mount = volume_at(rules_path)
    assert mount["volume"]["configMap"]["name"] == objects()["ConfigMap"]["metadata"]["name"]
    assert key == "rules.yaml" and mount["readOnly"]
    # keys: the Secret's keys.yaml, and nothing else of the Secret on disk
    [keys_path] = rules["keys"]
    key, mount = volume_at(keys_path)
    secret = mount["volume"]["secret"]
    assert secret["secretName"] == objects()["Secret"]["metadata"]["name"] and mount["readOnly"]
    assert secret["items"] == [{"key": key, "path": key}] and key in objects()["Secret"]["stringData"]
    # state: a hostPath at the same path, created when missing, writable
    state = rules["state"]["dir"]
    assert state.startswith("/var/lib/xinf-watch")
    volume = mounts()[state]
    assert volume["volume"]["hostPath"] == {"path": state, "type": "DirectoryOrCreate"}
    assert not volume["readOnly"]
    # logs: both kubelet directories, read-only, at the node's own paths (the links are absolute)
    for directory in ("/var/log/containers", "/var/log/pods"):
        volume = mounts()[directory]
        assert volume["volume"]["hostPath"] == {"path": directory, "type": "Directory"}
        assert volume["readOnly"], directory
    [source] = rules["sources"]
    assert source["path"].startswith("/var/log/containers/ingress-nginx-controller-")
    assert source["format"] == "nginx" and source["wrapper"] == "cri"
    assert source["log_format"] == "ingress-nginx-key"


def test_the_environment_rules_yaml_needs_comes_from_the_secret() -> None:
    needed = set(re.findall(r"\$\{(\w+)\}", rules_text()))
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in main_container()["env"]}
    assert needed and needed == set(env)
    secret = objects()["Secret"]
    for ref in env.values():
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]


def test_the_configmap_rules_are_the_shipped_rules() -> None:
    shipped = yaml.safe_load((ROOT / "rules" / "rules.yaml").read_text())
    assert rules_data()["rules"] == shipped["rules"]


def test_security_context() -> None:
    spec = pod_spec()
    main = main_container()["securityContext"]
    assert main["runAsNonRoot"] is True and main["runAsUser"] != 0
    assert main["allowPrivilegeEscalation"] is False and main["readOnlyRootFilesystem"] is True
    assert main["capabilities"] == {"drop": ["ALL"]}
    assert spec["securityContext"]["supplementalGroups"] == [0]  # containerd's logs: root:root 0640
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert "hostNetwork" not in spec and "hostPID" not in spec
    # the init container gives the state dir to the daemon's user, with CAP_CHOWN alone
    [init] = spec["initContainers"]
    assert init["image"] == main_container()["image"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert init["command"][-1].endswith(f"chown {main['runAsUser']}:{main['runAsGroup']} /var/lib/xinf-watch")
    # the image's own user is the one the manifest runs as
    assert containerfile_value("USER") == f"{main['runAsUser']}:{main['runAsGroup']}"
    # resources: requests and limits on both
    for container in (init, main_container()):
        assert set(container["resources"]) == {"requests", "limits"}
        assert set(container["resources"]["limits"]) == {"cpu", "memory"}


def run_as(uid: int, gids: list[int], *command: str) -> subprocess.CompletedProcess[str]:
    """`command` as uid/gid `uid` with supplemental `gids`, without any capability (setpriv, as root)."""
    setpriv = require_program("setpriv")
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("this test changes users: it runs as root (CI does)")
        pytest.skip("needs root to change users")
    groups = ["--groups", ",".join(map(str, gids))] if gids else ["--clear-groups"]
    return subprocess.run(
        [setpriv, "--reuid", str(uid), "--regid", str(uid), *groups, "--inh-caps=-all",
         "--bounding-set=-all", "--", *command],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="xw-manifests-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.mark.system
def test_the_daemons_user_reads_containerd_logs_and_owns_its_state(shared_dir: Path) -> None:
    """What the security context relies on, on this kernel: uid 10001 with group 0 and no
    capability reads a root:root 0640 log (containerd's mode), not a 0600 one (CRI-O's); the init
    container's command, as root with CAP_CHOWN alone, hands a root-owned 0755 state dir to it."""
    main = main_container()["securityContext"]
    uid, groups = main["runAsUser"], pod_spec()["securityContext"]["supplementalGroups"]
    containerd, crio = shared_dir / "containerd.log", shared_dir / "crio.log"
    for path, mode in ((containerd, 0o640), (crio, 0o600)):
        path.write_text("2026-12-05T07:00:00.000000000Z stdout F a line\n")
        os.chown(path, 0, 0)
        path.chmod(mode)
    assert run_as(uid, groups, "cat", str(containerd)).stdout.endswith("a line\n")
    assert run_as(uid, [], "cat", str(containerd)).returncode != 0  # group 0 is what reads it
    assert run_as(uid, groups, "cat", str(crio)).returncode != 0

    state = shared_dir / "state"
    state.mkdir(mode=0o755)  # what the kubelet makes for DirectoryOrCreate
    assert run_as(uid, groups, "touch", str(state / "state.db")).returncode != 0
    [init] = pod_spec()["initContainers"]
    command = [c.replace("/var/lib/xinf-watch", str(state)) for c in init["command"]]
    setpriv = require_program("setpriv")
    done = subprocess.run([setpriv, "--inh-caps=-all", "--bounding-set=-all,+chown", "--", *command],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    st = state.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, main["runAsGroup"], 0o700)
    assert run_as(uid, groups, "touch", str(state / "state.db")).returncode == 0


# -- the config it carries works ----------------------------------------------------------------


def secret_value(key: str) -> str:
    value: str = objects()["Secret"]["stringData"][key]
    return value


def local_rules(tmp_path: Path, port: int) -> Path:
    """The ConfigMap's rules.yaml with the node's paths moved under `tmp_path` and the Secret's
    keys.yaml beside it (the layout of the pod's mounts, nothing else changed)."""
    keys = tmp_path / "etc" / "xinf-watch-keys" / "keys.yaml"
    keys.parent.mkdir(parents=True)
    keys.write_text(secret_value("keys.yaml"))
    text = rules_text()
    for node_path in ("/etc/xinf-watch-keys/", "/var/lib/xinf-watch", "/var/log/containers/"):
        assert node_path in text
        text = text.replace(node_path, str(tmp_path) + node_path)
    text = text.replace('listen: "0.0.0.0:9877"', f'listen: "0.0.0.0:{port}"')
    rules = tmp_path / "etc" / "xinf-watch" / "rules.yaml"
    rules.parent.mkdir(parents=True)
    rules.write_text(text)
    return rules


def daemon_env() -> dict[str, str]:
    return {**os.environ, "XINF_WATCH_NOTIFY_URL": secret_value("notify-url")}


def test_the_configmap_rules_pass_check(tmp_path: Path) -> None:
    rules = local_rules(tmp_path, 9877)
    done = subprocess.run([sys.executable, "-m", "xinf_watch", "check", "--rules", str(rules)],
                          capture_output=True, text=True, timeout=60, env=daemon_env())  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"{rules}: ok: 1 sources, 2 keys, 15 rules"
    # without the Secret's variable it fails, naming it
    env = {k: v for k, v in daemon_env().items() if k != "XINF_WATCH_NOTIFY_URL"}
    done = subprocess.run([sys.executable, "-m", "xinf_watch", "check", "--rules", str(rules)],
                          capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert done.returncode == 2 and '"XINF_WATCH_NOTIFY_URL" is not set' in done.stdout + done.stderr


def test_the_secrets_keys_yaml_loads(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(secret_value("keys.yaml"))
    registry = load_registry([keys])
    assert len(registry) == 2
    at = time.time()
    keys_used = ("sk-ExampleChatbot0001", "sk-ExampleNotebook002")
    found = {(a.key, a.state) for a in (registry.resolve(f"Bearer {key}", at) for key in keys_used)}
    assert found == {("chatbot-prod", KeyState.VALID), ("analyst-notebook", KeyState.VALID)}
    assert "sk-Example" not in secret_value("keys.yaml")  # by hash only


def test_a_secret_update_is_seen_through_the_kubelets_symlinks(tmp_path: Path) -> None:
    """The kubelet updates a Secret volume by writing a new `..<timestamp>` directory and swapping
    the `..data` link; `keys.yaml` is a link through `..data`. The daemon's key reload must see it."""
    volume = tmp_path / "etc" / "xinf-watch-keys"
    volume.mkdir(parents=True)

    def publish(name: str, text: str) -> None:
        (volume / name).mkdir()
        (volume / name / "keys.yaml").write_text(text)
        (volume / "..data_tmp").symlink_to(name)
        (volume / "..data_tmp").rename(volume / "..data")

    publish("..2026_12_05_07_00_00.1", secret_value("keys.yaml"))
    (volume / "keys.yaml").symlink_to("..data/keys.yaml")
    sources = KeySources([volume / "keys.yaml"], clock=lambda: time.time_ns() + 2 * SETTLE_NS)
    assert len(sources.load()) == 2
    assert sources.reload_if_changed() is None
    more = secret_value("keys.yaml") + "  - key_sha256: " + "ab" * 32 + "\n    alias: batch-jobs\n"
    publish("..2026_12_05_07_01_00.2", more)
    reloaded = sources.reload_if_changed()
    assert reloaded is not None and len(reloaded) == 3


INGRESS_LINE = (
    '{ip} - - [{time}] "POST /v1/chat/completions HTTP/1.1" 200 {size} "-" "python-httpx/0.28.1" 512 0.250 '
    "[xinference-xinference-9997] [] 10.244.1.12:9997 {size} 0.249 200 {req_id} "
    '"Bearer {key}"'
)


def cri(line: str, stream: str = "stdout") -> str:
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}.123456789Z {stream} F {line}\n"


@pytest.mark.system
def test_the_daemon_runs_the_configmap_rules_on_kubelets_layout(tmp_path: Path) -> None:
    """The real daemon, started with the ConfigMap's rules.yaml and the Secret's keys.yaml on a
    /var/log/containers -> /var/log/pods layout: the ingress controller's CRI-wrapped lines are
    read and attributed to the Secret's keys, another pod's log is not read, the probes' path
    answers, and the state lands in the state dir."""
    port = free_port()
    rules = local_rules(tmp_path, port)
    pods, links = tmp_path / "var" / "log" / "pods", tmp_path / "var" / "log" / "containers"
    links.mkdir(parents=True)
    controller = pods / "ingress-nginx_ingress-nginx-controller-7d9f8-x2xkq_0c1e4f" / "controller" / "0.log"
    other = pods / "default_web-5f4c7-abcde_77aa10" / "web" / "0.log"
    for log, link in ((controller, "ingress-nginx-controller-7d9f8-x2xkq_ingress-nginx_controller-"),
                      (other, "web-5f4c7-abcde_default_web-")):  # fmt: skip
        log.parent.mkdir(parents=True)
        log.write_text(cri("startup line", "stderr"))
        (links / f"{link}{'e' * 64}.log").symlink_to(log)

    daemon = DaemonProcess(rules, tmp_path, port)
    old = os.environ.get("XINF_WATCH_NOTIFY_URL")
    os.environ["XINF_WATCH_NOTIFY_URL"] = secret_value("notify-url")
    try:
        daemon.start()
        now = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
        lines = [
            INGRESS_LINE.format(ip="10.1.2.3", time=now, size=100 + i, req_id=f"{i:032x}", key=key)
            for i, key in enumerate(["sk-ExampleChatbot0001"] * 3 + ["sk-ExampleNotebook002"] * 2)
        ]
        with controller.open("a") as f:
            f.write(cri("2026/12/05 07:00:00 [error] 31#31: *1 connect() failed", "stderr"))
            f.writelines(cri(line) for line in lines)
        with other.open("a") as f:
            f.writelines(cri(line) for line in lines)

        def counted(metrics: dict[Any, float]) -> bool:
            return total(metrics, "xinf_requests_total") >= len(lines)

        metrics = daemon.wait_until(counted, timeout=20, what="the ingress lines")
        assert total(metrics, "xinf_requests_total", key="chatbot-prod") == 3
        assert total(metrics, "xinf_requests_total", key="analyst-notebook") == 2
        assert total(metrics, "xinf_requests_total") == 5  # the other pod's log is not read
        assert total(metrics, "xinf_watch_lines_total", result="unparsed") == 0

        # the probes' path answers with the whole exposition (collected under the loop's lock)
        [path] = {main_container()[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe",
                                                                   "livenessProbe")}  # fmt: skip
        assert path == "/metrics"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            assert response.status == 200
            families = {name for name, _labels in parse_metrics(response.read().decode())}
        assert {"xinf_watch_build_info", "xinf_requests_total", "xinf_watch_state_writable"} <= families
        daemon.terminate()
    finally:
        daemon.close()
        if old is None:
            os.environ.pop("XINF_WATCH_NOTIFY_URL", None)
        else:
            os.environ["XINF_WATCH_NOTIFY_URL"] = old
    assert (tmp_path / "var" / "lib" / "xinf-watch" / "state.db").is_file()
    config = load_config(rules, environ=daemon_env())
    assert config.state.dir == tmp_path / "var" / "lib" / "xinf-watch"


# -- the image recipe ---------------------------------------------------------------------------


def containerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Containerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", CONTAINERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def containerfile_value(instruction: str) -> str:
    [value] = [args for name, args in containerfile() if name == instruction]
    return value


def copied_sources() -> list[str]:
    """What the build stage COPYs from the build context (the repository's root)."""
    sources = []
    for name, args in containerfile():
        if name == "COPY" and not args.startswith("--from="):
            sources += args.split()[:-1]
    return sources


def test_containerfile_contract() -> None:
    froms = [args for name, args in containerfile() if name == "FROM"]
    assert froms == ["docker.io/library/python:3.13-slim AS build", "docker.io/library/python:3.13-slim"]
    assert containerfile_value("ENTRYPOINT") == '["/opt/xinf-watch/bin/xinf-watch"]'
    cmd = yaml.safe_load(containerfile_value("CMD"))
    assert cmd == ["--rules", "/etc/xinf-watch/rules.yaml"]
    assert main_container()["args"][:2] == cmd  # the DaemonSet adds only the log level
    assert "command" not in main_container()  # the image's entrypoint runs
    [install] = [args for name, args in containerfile() if name == "RUN" and "pip install" in args]
    assert install == "python -m venv /opt/xinf-watch && /opt/xinf-watch/bin/pip install /src"


def ignored(path: str) -> bool:
    """Whether the build context leaves `path` out (.dockerignore, last matching pattern wins)."""
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()]
    result = False
    for pattern in (p for p in patterns if p and not p.startswith("#")):
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch(path, pattern) or fnmatch(path, pattern.replace("**/", "")):
            result = not negate
    return result


def test_the_containerfile_copies_what_exists_and_the_context_keeps() -> None:
    assert copied_sources() == ["pyproject.toml", "README.md", "xinf_watch"]
    for source in copied_sources():
        assert (ROOT / source).exists(), source
        assert not ignored(source), source
    # pyproject's readme must be in the context: setuptools reads it to build the package
    assert 'readme = "README.md"' in (ROOT / "pyproject.toml").read_text()
    for left_out in ("tests", ".git", "mutants", "bench", ".venv"):
        assert ignored(left_out), left_out


@pytest.mark.system
def test_the_copied_sources_build_the_package(tmp_path: Path) -> None:
    """pip builds a wheel from exactly the files the Containerfile copies (as its RUN line does,
    without the dependencies): every module, the route table and the entry point are in it.
    pip fetches the build backend (setuptools) from the package index, as the image build does."""
    context = tmp_path / "src"
    context.mkdir()
    for source in copied_sources():
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / source, context / source)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path / "dist"),
         str(context)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    [wheel] = (tmp_path / "dist").glob("xinf_watch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "xinf_watch").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    data = {str(p.relative_to(ROOT)) for p in (ROOT / "xinf_watch" / "data").glob("*.yaml")}
    assert data and data <= names
    [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "xinf-watch = xinf_watch.app.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
