"""Lists every lab process's gRPC services with Google's Python reflection
client (grpcio-reflection), which speaks only the v1alpha protocol, and
fetches a service's descriptor: what `grpc_cli` and older `grpcurl` do.
Each process must list exactly the services it serves.

    python3 scripts/reflection_client_check.py LAB_DIR   (a --plaintext lab)
"""

import json
import pathlib
import sys

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

REFLECTION = ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]
EXPECTED = {
    "node": ["meridian.v1.Kv", "meridian.v1.Admin", "meridian.v1.Replication", "meridian.v1.RaftTransport", "meridian.v1.Workers", "grpc.health.v1.Health"],
    "control": ["meridian.v1.Control", "meridian.v1.RaftTransport", "meridian.v1.Workers", "grpc.health.v1.Health"],
    "gateway": ["meridian.v1.Kv", "meridian.v1.Workers", "grpc.health.v1.Health"],
}


def ask(address, request):
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        return next(stub.ServerReflectionInfo(iter([request]), timeout=10))


def main():
    lab = json.loads((pathlib.Path(sys.argv[1]) / "lab.json").read_text())
    seen = set()
    for process in lab["processes"]:
        role = process.get("role", "").lower()
        if role not in EXPECTED or role in seen:
            continue
        seen.add(role)
        address = process["grpc"]
        reply = ask(address, reflection_pb2.ServerReflectionRequest(list_services=""))
        listed = sorted(s.name for s in reply.list_services_response.service)
        expected = sorted(EXPECTED[role] + REFLECTION)
        if listed != expected:
            sys.exit(f"{process['name']} ({role}) lists {listed}, expected {expected}")
        first = EXPECTED[role][0]
        reply = ask(address, reflection_pb2.ServerReflectionRequest(file_containing_symbol=first))
        files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in reply.file_descriptor_response.file_descriptor_proto]
        services = {f"{f.package}.{s.name}" for f in files for s in f.service}
        if first not in services:
            sys.exit(f"{process['name']}: the descriptor of {first} was not served (got {sorted(services)})")
        print(f"v1alpha reflection (grpcio-reflection): {process['name']} lists {len(listed)} services; {first} described")
    if seen != set(EXPECTED):
        sys.exit(f"the lab has no {sorted(set(EXPECTED) - seen)} process")


if __name__ == "__main__":
    main()
