#!/usr/bin/env python3
"""Renders Meridian's Kubernetes manifests from one values file.

    python3 deploy/kubernetes/render.py --values deploy/kubernetes/values.yaml --out DIR
    python3 deploy/kubernetes/render.py --values ... --out DIR --region eu-west

Per region: a shard StatefulSet (stable identities, a persistent volume per
node, spread over zones, a PodDisruptionBudget keeping a Raft majority), its
headless Service and configuration; a control-plane member (a one-pod
StatefulSet pinned to the region: a member's region is part of its identity
and configuration, so the control plane is one StatefulSet per region, spread
over regions); a gateway Deployment with its Service and budget; and
cert-manager Certificates carrying each process's spiffe:// identity. Every
probe is `/health/ready` (HTTPS; health needs no client certificate).
`--region` renders one region's objects (one cluster per region); the
Namespace and the control plane's shared objects come with every region.
Writes one file per object kind and region; nothing else is read or written.
"""

import argparse
import pathlib
import sys

import yaml

LABEL = "app.kubernetes.io/name"
PART = "app.kubernetes.io/component"


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def toml(sections):
    """A TOML document from {section: {key: value}} (tables of arrays as lists of dicts)."""
    out = []
    for section, body in sections.items():
        arrays = {k: v for k, v in body.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
        out.append(f"[{section}]")
        for key, value in body.items():
            if key not in arrays:
                out.append(f"{key} = {toml_value(value)}")
        out.append("")
        for key, items in arrays.items():
            for item in items:
                out.append(f"[[{section}.{key}]]")
                for k, v in item.items():
                    out.append(f"{k} = {toml_value(v)}")
                out.append("")
    return "\n".join(out)


class Renderer:
    def __init__(self, values):
        self.v = values
        self.ns = values["namespace"]
        self.grpc = values["ports"]["grpc"]
        self.http = values["ports"]["http"]

    # Names and addresses -------------------------------------------------
    def shard(self, region):
        return f"meridian-{region}-s1"

    def control(self, region):
        return f"meridian-control-{region}"

    def gateway(self, region):
        return f"meridian-gateway-{region}"

    def address(self, pod, service):
        host = self.v["peerAddress"].format(pod=pod, service=service, namespace=self.ns)
        return f"{host}:{self.grpc}"

    def control_members(self):
        return [
            {"id": i + 1, "address": self.address(f"{self.control(r['name'])}-0", self.control(r["name"]))}
            for i, r in enumerate(self.v["regions"])
        ]

    def control_endpoints(self):
        return [m["address"] for m in self.control_members()]

    # Shared pieces --------------------------------------------------------
    def labels(self, component, region):
        return {LABEL: "meridian", PART: component, "meridian.io/region": region}

    def meta(self, name, component, region, **extra):
        return {"name": name, "namespace": self.ns, "labels": self.labels(component, region), **extra}

    def tls_section(self):
        return {"ca": "/etc/meridian/tls/ca.crt", "cert": "/etc/meridian/tls/tls.crt", "key": "/etc/meridian/tls/tls.key"}

    def probe(self, path, initial):
        return {
            "httpGet": {"path": path, "port": "http", "scheme": "HTTPS"},
            "initialDelaySeconds": initial,
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 6,
        }

    def container(self, name, command, resources, mounts):
        return {
            "name": name,
            "image": self.v["image"],
            "imagePullPolicy": self.v["imagePullPolicy"],
            "command": ["/bin/sh", "-c", command],
            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "ports": [
                {"name": "grpc", "containerPort": self.grpc},
                {"name": "http", "containerPort": self.http},
            ],
            "readinessProbe": self.probe("/health/ready", 5),
            "livenessProbe": self.probe("/health/live", 15),
            "resources": resources,
            "volumeMounts": mounts,
            "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 10001},
        }

    def at_rest(self):
        secret = (self.v.get("encryptionAtRest") or {}).get("secretName")
        if not secret:
            return None, [], []
        return (
            "/etc/meridian/at-rest/at-rest.key",
            [{"name": "at-rest", "secret": {"secretName": secret, "defaultMode": 0o400}}],
            [{"name": "at-rest", "mountPath": "/etc/meridian/at-rest", "readOnly": True}],
        )

    def tls_volume(self, secrets_by_ordinal):
        """One projected volume: ordinal N's certificate under N/, the CA at the top."""
        sources = []
        for ordinal, secret in enumerate(secrets_by_ordinal):
            sources.append({"secret": {"name": secret, "items": [
                {"key": "tls.crt", "path": f"{ordinal}/tls.crt"},
                {"key": "tls.key", "path": f"{ordinal}/tls.key", "mode": 0o400},
            ]}})
        sources.append({"secret": {"name": secrets_by_ordinal[0], "items": [{"key": "ca.crt", "path": "ca.crt"}]}})
        return {"name": "tls", "projected": {"sources": sources}}

    # Objects --------------------------------------------------------------
    def namespace(self):
        return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.ns, "labels": {LABEL: "meridian"}}}]

    def certificate(self, name, component, region, identity, dns):
        cm = self.v.get("certManager") or {}
        if not cm.get("issuer"):
            return []
        return [{
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": self.meta(f"{name}-tls", component, region),
            "spec": {
                "secretName": f"{name}-tls",
                "duration": cm["duration"],
                "renewBefore": cm["renewBefore"],
                "commonName": "meridian",
                # Every Meridian certificate names the cluster, not the host:
                # clients check "meridian"; the CA decides who is a member.
                "dnsNames": ["meridian", *dns],
                "uris": [f"spiffe://meridian/{identity}"],
                "usages": ["server auth", "client auth", "digital signature", "key encipherment"],
                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                "issuerRef": {"kind": cm["issuer"]["kind"], "name": cm["issuer"]["name"], "group": "cert-manager.io"},
            },
        }]

    def region_objects(self, r):
        region = r["name"]
        objects = []
        objects += self.shard_objects(r)
        objects += self.control_objects(r)
        objects += self.gateway_objects(r)
        return region, objects

    def shard_objects(self, r):
        region, name, count = r["name"], self.shard(r["name"]), self.v["shard"]["nodes"]
        key_file, key_volumes, key_mounts = self.at_rest()
        members = [{"id": i + 1, "address": self.address(f"{name}-{i}", name)} for i in range(count)]
        # node.id, network.advertise and the certificate paths come from the
        # environment at start (MERIDIAN__SECTION__KEY): they differ per pod.
        node = {
            "shard": name.removeprefix("meridian-"),
            "region": region,
            "data_dir": "/var/lib/meridian",
        }
        if key_file:
            node["encryption_key_file"] = key_file
        config = toml({
            "node": node,
            "network": {
                "grpc_listen": f"0.0.0.0:{self.grpc}",
                "http_listen": f"0.0.0.0:{self.http}",
                "tls": self.tls_section(),
            },
            "cluster": {"initial_members": members},
            "control": {"endpoints": self.control_endpoints()},
        })
        advertise = self.v["peerAddress"].format(pod="$POD_NAME", service=name, namespace=self.ns)
        start = (
            "ORDINAL=${POD_NAME##*-}; "
            "export MERIDIAN__NODE__ID=$((ORDINAL + 1)); "
            f"export MERIDIAN__NETWORK__ADVERTISE={advertise}:{self.grpc}; "
            "export MERIDIAN__NETWORK__TLS__CERT=/etc/meridian/tls/$ORDINAL/tls.crt; "
            "export MERIDIAN__NETWORK__TLS__KEY=/etc/meridian/tls/$ORDINAL/tls.key; "
            "exec meridian node --config /etc/meridian/config/node.toml"
        )
        secrets = [f"{name}-{i}-tls" for i in range(count)]
        pod_labels = self.labels("shard", region) | {"meridian.io/shard": name}
        mounts = [
            {"name": "data", "mountPath": "/var/lib/meridian"},
            {"name": "config", "mountPath": "/etc/meridian/config", "readOnly": True},
            {"name": "tls", "mountPath": "/etc/meridian/tls", "readOnly": True},
            *key_mounts,
        ]
        objects = [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": self.meta(f"{name}-config", "shard", region),
             "data": {"node.toml": config}},
            {"apiVersion": "v1", "kind": "Service", "metadata": self.meta(name, "shard", region),
             "spec": {
                 "clusterIP": "None",
                 # Raft peers must find each other before they are ready.
                 "publishNotReadyAddresses": True,
                 "selector": {LABEL: "meridian", "meridian.io/shard": name},
                 "ports": [{"name": "grpc", "port": self.grpc}, {"name": "http", "port": self.http}],
             }},
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": self.meta(name, "shard", region),
             "spec": {
                 "serviceName": name,
                 "replicas": count,
                 # Raft members join one by one anyway; start them together.
                 "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {LABEL: "meridian", "meridian.io/shard": name}},
                 "template": {
                     "metadata": {"labels": pod_labels},
                     "spec": {
                         "nodeSelector": {"topology.kubernetes.io/region": r["kubernetesRegion"]},
                         "topologySpreadConstraints": [{
                             "maxSkew": 1,
                             "topologyKey": "topology.kubernetes.io/zone",
                             "whenUnsatisfiable": "ScheduleAnyway",
                             "labelSelector": {"matchLabels": {"meridian.io/shard": name}},
                         }],
                         "securityContext": {"fsGroup": 10001},
                         "terminationGracePeriodSeconds": 30,
                         "containers": [self.container("node", start, self.v["shard"]["resources"], mounts)],
                         "volumes": [
                             {"name": "config", "configMap": {"name": f"{name}-config"}},
                             self.tls_volume(secrets),
                             *key_volumes,
                         ],
                     },
                 },
                 "volumeClaimTemplates": [{
                     "metadata": {"name": "data"},
                     "spec": {
                         "accessModes": ["ReadWriteOnce"],
                         **({"storageClassName": self.v["shard"]["storageClassName"]} if self.v["shard"]["storageClassName"] else {}),
                         "resources": {"requests": {"storage": self.v["shard"]["storage"]}},
                     },
                 }],
             }},
            {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": self.meta(name, "shard", region),
             "spec": {
                 # A voluntary disruption never takes the majority away.
                 "maxUnavailable": max(1, (count - 1) // 2),
                 "selector": {"matchLabels": {"meridian.io/shard": name}},
             }},
        ]
        for i in range(count):
            objects += self.certificate(f"{name}-{i}", "shard", region, f"node/{region}/{name.removeprefix('meridian-')}-{i + 1}", [f"{name}-{i}.{name}.{self.ns}.svc"])
        return objects

    def control_objects(self, r):
        region, name = r["name"], self.control(r["name"])
        key_file, key_volumes, key_mounts = self.at_rest()
        member_id = next(m["id"] for m in self.control_members() if m["address"].startswith(f"{name}-0."))
        node = {"id": member_id, "region": region, "data_dir": "/var/lib/meridian"}
        if key_file:
            node["encryption_key_file"] = key_file
        config = toml({
            "node": node,
            "network": {
                "grpc_listen": f"0.0.0.0:{self.grpc}",
                "http_listen": f"0.0.0.0:{self.http}",
                "advertise": self.address(f"{name}-0", name),
                "tls": self.tls_section(),
            },
            "cluster": {"initial_members": self.control_members()},
            "raft": self.v["control"]["raft"],
            "auth": {"bootstrap": [{"identity": self.v["control"]["bootstrapAdmin"], "role": "admin"}]},
        })
        # The regions the control plane starts with: a top-level array of tables.
        for seed in self.v["regions"]:
            config += "[[regions]]\n" + "".join(
                f"{key} = {toml_value(seed[key])}\n" for key in ("name", "jurisdictions", "latitude", "longitude")
            ) + "\n"
        mounts = [
            {"name": "data", "mountPath": "/var/lib/meridian"},
            {"name": "config", "mountPath": "/etc/meridian/config", "readOnly": True},
            {"name": "tls", "mountPath": "/etc/meridian/tls", "readOnly": True},
            *key_mounts,
        ]
        pod_labels = self.labels("control", region) | {"meridian.io/control": name}
        return [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": self.meta(f"{name}-config", "control", region),
             "data": {"control.toml": config}},
            {"apiVersion": "v1", "kind": "Service", "metadata": self.meta(name, "control", region),
             "spec": {
                 "clusterIP": "None",
                 "publishNotReadyAddresses": True,
                 "selector": {LABEL: "meridian", "meridian.io/control": name},
                 "ports": [{"name": "grpc", "port": self.grpc}, {"name": "http", "port": self.http}],
             }},
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": self.meta(name, "control", region),
             "spec": {
                 "serviceName": name,
                 "replicas": 1,
                 "selector": {"matchLabels": {LABEL: "meridian", "meridian.io/control": name}},
                 "template": {
                     "metadata": {"labels": pod_labels},
                     "spec": {
                         "nodeSelector": {"topology.kubernetes.io/region": r["kubernetesRegion"]},
                         "securityContext": {"fsGroup": 10001},
                         "containers": [self.container(
                             "control", "exec meridian control --config /etc/meridian/config/control.toml",
                             self.v["control"]["resources"], mounts)],
                         "volumes": [
                             {"name": "config", "configMap": {"name": f"{name}-config"}},
                             {"name": "tls", "secret": {"secretName": f"{name}-0-tls", "defaultMode": 0o400}},
                             *key_volumes,
                         ],
                     },
                 },
                 "volumeClaimTemplates": [{
                     "metadata": {"name": "data"},
                     "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": self.v["control"]["storage"]}}},
                 }],
             }},
            *self.certificate(f"{name}-0", "control", region, f"control/control-{member_id}", [f"{name}-0.{name}.{self.ns}.svc"]),
        ]

    def gateway_objects(self, r):
        region, name = r["name"], self.gateway(r["name"])
        # The gateway asks its own region's control member first.
        own = self.address(f"{self.control(region)}-0", self.control(region))
        endpoints = [own, *[e for e in self.control_endpoints() if e != own]]
        config = toml({
            "gateway": {"name": name.removeprefix("meridian-"), "region": region},
            "network": {"grpc_listen": f"0.0.0.0:{self.grpc}", "http_listen": f"0.0.0.0:{self.http}", "tls": self.tls_section()},
            "control": {"endpoints": endpoints},
        })
        selector = {LABEL: "meridian", "meridian.io/gateway": name}
        mounts = [
            {"name": "config", "mountPath": "/etc/meridian/config", "readOnly": True},
            {"name": "tls", "mountPath": "/etc/meridian/tls", "readOnly": True},
        ]
        return [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": self.meta(f"{name}-config", "gateway", region),
             "data": {"gateway.toml": config}},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": self.meta(name, "gateway", region),
             "spec": {
                 "replicas": self.v["gateway"]["replicas"],
                 "selector": {"matchLabels": selector},
                 "template": {
                     "metadata": {"labels": self.labels("gateway", region) | selector},
                     "spec": {
                         "nodeSelector": {"topology.kubernetes.io/region": r["kubernetesRegion"]},
                         "topologySpreadConstraints": [{
                             "maxSkew": 1,
                             "topologyKey": "topology.kubernetes.io/zone",
                             "whenUnsatisfiable": "ScheduleAnyway",
                             "labelSelector": {"matchLabels": selector},
                         }],
                         "containers": [self.container(
                             "gateway", "exec meridian gateway --config /etc/meridian/config/gateway.toml",
                             self.v["gateway"]["resources"], mounts)],
                         "volumes": [
                             {"name": "config", "configMap": {"name": f"{name}-config"}},
                             {"name": "tls", "secret": {"secretName": f"{name}-tls", "defaultMode": 0o400}},
                         ],
                     },
                 },
             }},
            {"apiVersion": "v1", "kind": "Service", "metadata": self.meta(name, "gateway", region),
             "spec": {
                 "type": self.v["gateway"]["serviceType"],
                 "selector": selector,
                 "ports": [{"name": "grpc", "port": self.grpc, "targetPort": "grpc"}],
             }},
            {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": self.meta(name, "gateway", region),
             "spec": {"minAvailable": 1, "selector": {"matchLabels": selector}}},
            *self.certificate(name, "gateway", region, f"gateway/{region}/{name.removeprefix('meridian-')}", []),
        ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", required=True, type=pathlib.Path)
    parser.add_argument("--out", required=True, type=pathlib.Path, help="directory for the manifests")
    parser.add_argument("--region", help="render only this region's objects")
    args = parser.parse_args()
    values = yaml.safe_load(args.values.read_text())
    names = [r["name"] for r in values["regions"]]
    if args.region and args.region not in names:
        sys.exit(f"region {args.region!r} is not in the values' regions {names}")
    renderer = Renderer(values)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    path = args.out / "00-namespace.yaml"
    path.write_text(yaml.safe_dump_all(renderer.namespace(), sort_keys=False))
    written.append(path)
    for r in values["regions"]:
        if args.region and r["name"] != args.region:
            continue
        region, objects = renderer.region_objects(r)
        path = args.out / f"10-{region}.yaml"
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
        written.append(path)
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
