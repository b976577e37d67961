#!/usr/bin/env bash
# Static check of docker-compose.yml (no container engine runs in CI):
#
# - the file parses (YAML, with its anchors and merge keys) and has services;
# - every image is pinned to a version (a tag other than `latest`);
# - every service has a healthcheck, and every agent's probes /readyz;
# - every bind-mounted file exists; every mounted agent configuration
#   passes `invalog config check` with that container's environment, and
#   every mounted nats-server configuration passes `nats-server -t` with
#   that container's environment;
# - the nats services form one cluster: distinct server names, and the
#   routes of their configuration name every nats service (and nothing else);
# - every agent has its own node id, depends on every nats service being
#   healthy, connects only to the nats services, provisions as many replicas
#   as there are nats services, and finds the hosts its appliers name
#   (`app`, `redis`) on exactly one network of its own;
# - every probe service (`invalog probe --serve`) has a client configuration
#   that passes `invalog config check --as client` and names only the nats
#   services, and a healthcheck on its /healthz.
#
# Needs python3 with PyYAML (installed into $CACHE/py if missing), the
# `invalog` binary (built if missing) and nats-server ($NATS_SERVER_BIN or
# PATH). Usage: .ci/check-compose.sh [docker-compose.yml]
set -euo pipefail
cd "$(dirname "$0")/.."

COMPOSE_FILE=${1:-docker-compose.yml}
CACHE="${INVALOG_CACHE:-$PWD/.cache}"
export PYTHONPATH="$CACHE/py${PYTHONPATH:+:$PYTHONPATH}"

if ! python3 -c 'import yaml' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --target "$CACHE/py" pyyaml >&2
fi
INVALOG_BIN=${INVALOG_BIN:-target/debug/invalog}
if [ ! -x "$INVALOG_BIN" ]; then
  cargo build --quiet --bin invalog
fi
NATS_SERVER_BIN=${NATS_SERVER_BIN:-$(command -v nats-server || true)}
[ -n "$NATS_SERVER_BIN" ] || { echo "check-compose: nats-server not found (set NATS_SERVER_BIN)" >&2; exit 1; }
export INVALOG_BIN NATS_SERVER_BIN

python3 - "$COMPOSE_FILE" <<'PY'
"""Checks a docker-compose file; prints every problem, exits 1 if any."""
import os
import re
import subprocess
import sys
import tomllib
from urllib.parse import urlparse

import yaml

path = sys.argv[1]
problems = []


def problem(message):
    problems.append(message)


def env_of(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def binds(service):
    """(host path, container path) of every bind mount, short or long syntax."""
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
            if source.startswith((".", "/")):
                yield source, target
        elif volume.get("type") == "bind":
            yield volume["source"], volume["target"]


def networks_of(service):
    networks = service.get("networks") or {}
    if isinstance(networks, list):
        return {name: {} for name in networks}
    return {name: (value or {}) for name, value in networks.items()}


with open(path, encoding="utf-8") as f:
    compose = yaml.safe_load(f)
services = compose.get("services") or {}
if not services:
    sys.exit(f"{path}: no services")
declared_networks = set((compose.get("networks") or {}).keys())

nats = {n: s for n, s in services.items() if "nats" in str(s.get("image", "")).split(":")[0].split("/")[-1]}
agents = {n: s for n, s in services.items() if "agent" in (s.get("command") or [])}
if len(nats) < 3:
    problem(f"expected a cluster of at least 3 nats services, found {sorted(nats)}")
if len(agents) < 2:
    problem(f"expected at least 2 agents (`invalog agent`), found {sorted(agents)}")

for name, service in services.items():
    image = service.get("image")
    if not image:
        problem(f"{name}: no image")
    else:
        repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        if not tag or tag == "latest":
            problem(f"{name}: image {image} is not pinned to a version")
    health = service.get("healthcheck") or {}
    if health.get("disable") or not health.get("test"):
        problem(f"{name}: no healthcheck")
    for network in networks_of(service):
        if network not in declared_networks:
            problem(f"{name}: network {network} is not declared")
    for source, target in binds(service):
        if not os.path.exists(source):
            problem(f"{name}: mounts {source}, which does not exist")

# The nats cluster: names and routes.
server_names = {}
for name, service in nats.items():
    env = env_of(service)
    confs = [(s, t) for s, t in binds(service) if s.endswith(".conf")]
    command = service.get("command") or []
    if not confs:
        problem(f"{name}: mounts no nats-server configuration")
    for source, target in confs:
        if target not in command:
            problem(f"{name}: mounts {source} at {target}, but its command does not use it")
        result = subprocess.run([os.environ["NATS_SERVER_BIN"], "-t", "-c", source],
                                env={**os.environ, **env}, capture_output=True, text=True)
        if result.returncode != 0:
            problem(f"{name}: nats-server -t -c {source}: {result.stderr.strip()}")
        text = open(source, encoding="utf-8").read()
        server_name = re.search(r"^\s*server_name\s*[:=]\s*(\S+)", text, re.M)
        if server_name:
            value = server_name.group(1)
            if value.startswith("$"):
                value = env.get(value[1:], "")
            server_names[name] = value
        routes = set(re.findall(r"nats-route://([A-Za-z0-9_.-]+):\d+", text))
        if routes != set(nats):
            problem(f"{name}: cluster routes {sorted(routes)} are not the nats services {sorted(nats)}")
        if not re.search(r"^\s*jetstream\b", text, re.M):
            problem(f"{name}: {source} does not enable JetStream")
if len(set(server_names.values())) != len(nats) or "" in server_names.values():
    problem(f"nats services need distinct server names, found {server_names}")

# The agents.
node_ids = {}
for name, service in agents.items():
    env = env_of(service)
    node_ids.setdefault(env.get("INVALOG_NODE__ID"), []).append(name)
    test = " ".join(map(str, service["healthcheck"]["test"])) if service.get("healthcheck") else ""
    if "/readyz" not in test:
        problem(f"{name}: the healthcheck does not probe /readyz")
    depends = service.get("depends_on") or {}
    for server in nats:
        condition = depends.get(server, {}).get("condition") if isinstance(depends, dict) else None
        if condition != "service_healthy":
            problem(f"{name}: does not wait for {server} to be healthy")
    command = service.get("command") or []
    config_target = command[command.index("--config") + 1] if "--config" in command else None
    mounted = {t: s for s, t in binds(service)}
    if config_target not in mounted:
        problem(f"{name}: its --config {config_target} is not a mounted file")
        continue
    source = mounted[config_target]
    check_env = {k: v for k, v in os.environ.items() if not k.startswith("INVALOG_")}
    result = subprocess.run([os.environ["INVALOG_BIN"], "config", "check", source],
                            env={**check_env, **env}, capture_output=True, text=True)
    if result.returncode != 0:
        problem(f"{name}: invalog config check {source}: {result.stderr.strip()}")
        continue
    config = tomllib.loads(result.stdout)  # the effective configuration
    for url in config["nats"]["urls"]:
        host = urlparse(url).hostname
        if host not in nats:
            problem(f"{name}: nats.urls names {host}, not a nats service")
    if config["stream"].get("replicas") != len(nats):
        problem(f"{name}: stream.replicas is {config['stream'].get('replicas')}, "
                f"not the {len(nats)} nats services")
    own = networks_of(service)
    for refresher in config.get("refreshers", []):
        applier = refresher["applier"]
        url = applier.get("url")
        if url is None or url == "[redacted]":
            url = None
        host = urlparse(url).hostname if url else None
        if applier["kind"] == "redis":
            raw = tomllib.load(open(source, "rb"))
            match = [r for r in raw["refreshers"] if r["name"] == refresher["name"]]
            host = urlparse(match[0]["applier"]["url"]).hostname if match else None
        if host is None:
            continue
        answering = [
            (other, network)
            for other, other_service in services.items()
            for network, settings in networks_of(other_service).items()
            if network in own and (other == host or host in (settings.get("aliases") or []))
        ]
        if len(answering) != 1:
            problem(f"{name}: applier of `{refresher['name']}` reaches `{host}` through "
                    f"{answering or 'no service'}; expected exactly one")
# The probe services (`invalog probe --serve`): a client configuration
# that reaches the nats services, and a healthcheck on the served address.
probes = {n: s for n, s in services.items() if (s.get("command") or [])[:1] == ["probe"]}
for name, service in probes.items():
    command = service.get("command") or []
    if "--serve" not in command or "--config" not in command:
        problem(f"{name}: runs `probe` without --serve and --config")
        continue
    port = str(command[command.index("--serve") + 1]).rpartition(":")[2]
    test = " ".join(map(str, (service.get("healthcheck") or {}).get("test") or []))
    if f":{port}/healthz" not in test:
        problem(f"{name}: the healthcheck does not ask /healthz on port {port}")
    mounted = {t: s for s, t in binds(service)}
    source = mounted.get(command[command.index("--config") + 1])
    if source is None:
        problem(f"{name}: its --config is not a mounted file")
        continue
    check_env = {k: v for k, v in os.environ.items() if not k.startswith("INVALOG_")}
    result = subprocess.run([os.environ["INVALOG_BIN"], "config", "check", "--as", "client", source],
                            env={**check_env, **env_of(service)}, capture_output=True, text=True)
    if result.returncode != 0:
        problem(f"{name}: invalog config check --as client {source}: {result.stderr.strip()}")
        continue
    for url in tomllib.loads(result.stdout)["nats"]["urls"]:
        if urlparse(url).hostname not in nats:
            problem(f"{name}: nats.urls names {urlparse(url).hostname}, not a nats service")
for node_id, names in node_ids.items():
    if node_id is None:
        problem(f"{names}: no INVALOG_NODE__ID")
    elif len(names) > 1:
        problem(f"{names} share the node id {node_id}")

if problems:
    for message in problems:
        print(f"{path}: {message}", file=sys.stderr)
    sys.exit(1)
print(f"{path}: {len(services)} services, nats cluster {sorted(nats)}, "
      f"agents {sorted(agents)} ({', '.join(sorted(filter(None, node_ids)))}), "
      f"probes {sorted(probes)}: ok")
PY

# deploy/: every nats-server configuration is valid (with placeholder
# values for the variables it reads from the environment), every Kubernetes
# manifest parses, and every agent configuration in a ConfigMap passes
# `invalog config check` as a pod would load it (the probe's, labelled
# app.kubernetes.io/component: invalog-probe, as a client's).
python3 - <<'PY'
import glob
import os
import re
import subprocess
import sys
import tempfile

import yaml

problems = []
with tempfile.TemporaryDirectory() as tmp:
    for conf in sorted(glob.glob("deploy/nats/*.conf")):
        text = open(conf, encoding="utf-8").read()
        names = set(re.findall(r":\s*\$([A-Za-z_][A-Za-z0-9_]*)", text))
        env = {**os.environ, **{name: "placeholder" for name in names}}
        result = subprocess.run([os.environ["NATS_SERVER_BIN"], "-t", "-c", conf],
                                env=env, capture_output=True, text=True)
        if result.returncode != 0:
            problems.append(f"{conf}: {result.stderr.strip()}")
    password = os.path.join(tmp, "password")
    open(password, "w").write("placeholder\n")
    configs = 0
    for manifest in sorted(glob.glob("deploy/k8s/*.yaml")):
        try:
            documents = [d for d in yaml.safe_load_all(open(manifest, encoding="utf-8")) if d]
        except yaml.YAMLError as e:
            problems.append(f"{manifest}: {e}")
            continue
        for document in documents:
            if not {"apiVersion", "kind", "metadata"} <= document.keys():
                problems.append(f"{manifest}: a document without apiVersion, kind or metadata")
            if document.get("kind") != "ConfigMap":
                continue
            for key, value in (document.get("data") or {}).items():
                if not key.endswith(".toml"):
                    continue
                configs += 1
                path = os.path.join(tmp, key)
                open(path, "w").write(value)
                env = {k: v for k, v in os.environ.items() if not k.startswith("INVALOG_")}
                env.update(INVALOG_NODE__ID="web-0", INVALOG_NATS__PASSWORD_FILE=password)
                # The probe's ConfigMap (deploy/k8s/probe.yaml) is a client's.
                role = ["--as", "client"] if (document["metadata"].get("labels") or {}).get(
                    "app.kubernetes.io/component") == "invalog-probe" else []
                result = subprocess.run([os.environ["INVALOG_BIN"], "config", "check", *role, path],
                                        env=env, capture_output=True, text=True)
                if result.returncode != 0:
                    problems.append(f"{manifest}: {key}: {result.stderr.strip()}")
for message in problems:
    print(message, file=sys.stderr)
if problems:
    sys.exit(1)
print(f"deploy/: nats configurations, Kubernetes manifests and {configs} invalog configuration(s): ok")
PY
