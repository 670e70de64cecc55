#!/usr/bin/env bash
# Operations checks that need Prometheus's promtool (Debian package
# `prometheus`, installed here if missing):
#   - the alert rules in deploy/prometheus/rules parse (promtool check rules)
#     and their unit tests pass (promtool test rules: every alert firing and
#     staying quiet);
#   - every alert has a runbook_url naming a section of docs/runbook.md;
#   - every Grafana panel expression in deploy/grafana parses (promtool);
#   - the Kubernetes manifests render, validate against the Kubernetes
#     schemas, and every configuration in them passes `meridian ... --check`;
#   - Google's Python reflection client (v1alpha only) lists exactly each
#     process's services;
#   - every process's /metrics passes `promtool check metrics` (the
#     observability test scrapes a shard node, a control-plane member and
#     a gateway and runs promtool on each).
#
#   scripts/test-ops.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v promtool >/dev/null; then
    echo "installing promtool (Debian: prometheus)"
    if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool check rules deploy/prometheus/rules/*.yml
promtool test rules deploy/prometheus/tests/*.test.yml
python3 - <<'PY'
import re, pathlib, sys
headings = set()
for line in pathlib.Path("docs/runbook.md").read_text().splitlines():
    if line.startswith("## "):
        slug = re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
        headings.add(slug)
bad = []
for rules in sorted(pathlib.Path("deploy/prometheus/rules").glob("*.yml")):
    text = rules.read_text()
    alerts = re.findall(r"^\s*- alert: (\S+)", text, re.M)
    urls = re.findall(r'runbook_url: "docs/runbook\.md#([^"]+)"', text)
    if len(alerts) != len(urls):
        bad.append(f"{rules}: {len(alerts)} alerts but {len(urls)} runbook_url annotations")
    bad += [f"{rules}: runbook section #{u} not in docs/runbook.md" for u in urls if u not in headings]
if bad:
    sys.exit("\n".join(bad))
print(f"runbook: every alert points at one of {len(headings)} sections")
PY
# Every Grafana panel's expression is valid PromQL: each becomes a recording
# rule (dashboard variables replaced by sample values) for promtool to parse.
python3 - <<'PY'
import json, pathlib, re
rules = []
for board in sorted(pathlib.Path("deploy/grafana").glob("*.json")):
    for panel in json.loads(board.read_text())["panels"]:
        for target in panel["targets"]:
            expr = re.sub(r"\$(region|shard)", "sample", target["expr"])
            rules.append({"record": f"dashboard:{board.stem}:{panel['id']}:{target['refId']}", "expr": expr})
out = pathlib.Path("target/dashboard-exprs.rules.json")
out.parent.mkdir(exist_ok=True)
out.write_text(json.dumps({"groups": [{"name": "dashboards", "rules": rules}]}))
print(f"dashboards: {len(rules)} panel expressions")
PY
promtool check rules target/dashboard-exprs.rules.json
# Kubernetes manifests: rendered from deploy/kubernetes/values.yaml,
# validated against the Kubernetes schemas (kubernetes-validate, PyPI), and
# every Meridian configuration in them checked by the binary itself.
python3 -c "import yaml" 2>/dev/null || python3 -m pip install --quiet pyyaml
command -v kubernetes-validate >/dev/null || python3 -m pip install --quiet 'kubernetes-validate==1.37.0'
rm -rf target/k8s && python3 deploy/kubernetes/render.py --values deploy/kubernetes/values.yaml --out target/k8s >/dev/null
# cert-manager's Certificate has no schema there: reported, not failed.
kubernetes-validate --strict --quiet --no-warn target/k8s/*.yaml
cargo build --quiet -p meridian
python3 - <<'PY'
import os, pathlib, subprocess, sys, yaml
checked = 0
for path in sorted(pathlib.Path("target/k8s").glob("*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc or doc["kind"] != "ConfigMap":
            continue
        for name, text in doc["data"].items():
            kind = name.removesuffix(".toml")
            config = pathlib.Path("target/k8s") / f"{doc['metadata']['name']}-{name}"
            config.write_text(text)
            env = dict(os.environ)
            if kind == "node":
                # What the pod's start command exports for ordinal 0.
                env.update(MERIDIAN__NODE__ID="1", MERIDIAN__NETWORK__ADVERTISE="pod-0.example:7401")
            run = subprocess.run(["target/debug/meridian", kind, "--config", str(config), "--check"],
                                 env=env, capture_output=True, text=True)
            if run.returncode != 0:
                sys.exit(f"{config}: {run.stderr or run.stdout}")
            checked += 1
print(f"kubernetes: manifests valid, {checked} Meridian configurations check out")
PY
# A third-party gRPC reflection client that speaks only v1alpha (Google's
# grpcio-reflection, PyPI) against a plaintext lab: every process lists
# exactly its own services and serves their descriptors.
python3 -c "import grpc_reflection" 2>/dev/null || python3 -m pip install --quiet grpcio grpcio-reflection
OPS_LAB=target/ops-lab
rm -rf "$OPS_LAB"
stop_ops_lab() { target/debug/meridian lab down --dir "$OPS_LAB" >/dev/null 2>&1 || true; rm -rf "$OPS_LAB"; }
trap stop_ops_lab EXIT
target/debug/meridian lab up --dir "$OPS_LAB" --detach --plaintext >/dev/null
python3 scripts/reflection_client_check.py "$OPS_LAB"
stop_ops_lab
trap - EXIT
MERIDIAN_PROMTOOL="$(command -v promtool)" cargo test -p meridian --test observability -- --nocapture metrics_pass_promtool_and_cover_the_alert_rules
