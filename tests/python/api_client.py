"""An independent client of the VFN's control API, built from control/proto alone.

Usage: api_client.py PROTO_DIR SOCKET CLIENT_ADDRESS SERVER_ADDRESS

Generates the Python stubs with grpcio-tools, then, over the router's Unix socket: checks the
health service and server reflection, applies a rule set (dry run, then for real with
compare-and-set) that allows CLIENT_ADDRESS to reach SERVER_ADDRESS on TCP port 8080, reads it
back, is refused an invalid set (INVALID_ARGUMENT with a google.rpc.BadRequest naming the rule)
and a stale writer (FAILED_PRECONDITION), and adds, lists and removes a dynamic entry. Leaves the
rule set "py-1" in force; prints one line per check; exits non-zero on the first failure.
"""

import importlib
import sys
import tempfile

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status
from grpc_tools import protoc


def generate(proto_dir, out_dir):
    status = protoc.main(
        [
            "protoc",
            f"-I{proto_dir}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            "vfn/v1/vfn.proto",
        ]
    )
    if status != 0:
        raise SystemExit(f"protoc failed with {status}")
    sys.path.insert(0, out_dir)
    return (
        importlib.import_module("vfn.v1.vfn_pb2"),
        importlib.import_module("vfn.v1.vfn_pb2_grpc"),
    )


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def main():
    proto_dir, socket, client, server = sys.argv[1:5]
    with tempfile.TemporaryDirectory() as out_dir:
        pb, rpc = generate(proto_dir, out_dir)
        # grpc-core would send the socket's path as the :authority, which is not a valid
        # authority (HTTP/2 servers such as the VFN's reset the stream): name a host instead.
        channel = grpc.insecure_channel(
            f"unix:{socket}", options=[("grpc.default_authority", "localhost")]
        )
        grpc.channel_ready_future(channel).result(timeout=10)

        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="vfn.v1.Control"), timeout=5
        )
        check(health.status == health_pb2.HealthCheckResponse.SERVING, "health: serving")
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
        check("vfn.v1.Control" in services, f"reflection lists vfn.v1.Control ({services})")

        control = rpc.ControlStub(channel)
        before = control.GetRuleSet(pb.GetRuleSetRequest(), timeout=5)
        web = pb.Rule(
            id="py-web",
            source=pb.Addresses(prefixes=[client]),
            destination=pb.Addresses(prefixes=[server]),
            protocol=pb.Protocol(tcp=pb.Empty()),
            destination_ports=[pb.PortRange(first=8080, last=8080)],
            action=pb.Action(allow=pb.Empty()),
        )
        rule_set = pb.RuleSet(
            version="py-1", default_action=pb.DEFAULT_ACTION_DENY, rules=[web]
        )
        dry = control.ApplyRuleSet(
            pb.ApplyRuleSetRequest(rule_set=rule_set, dry_run=True), timeout=30
        )
        check(not dry.applied and list(dry.diff.added) == ["py-web"], "dry run: diff, not applied")
        check(
            control.GetRuleSet(pb.GetRuleSetRequest(), timeout=5).rule_set.version
            == before.rule_set.version,
            "dry run changed nothing",
        )

        applied = control.ApplyRuleSet(
            pb.ApplyRuleSetRequest(
                rule_set=rule_set, expected_version=before.rule_set.version
            ),
            timeout=30,
        )
        check(applied.applied and applied.version_after == "py-1", "applied with compare-and-set")
        got = control.GetRuleSet(pb.GetRuleSetRequest(), timeout=5)
        # Read back in canonical form: a plain address comes back as a host prefix.
        expected = pb.RuleSet()
        expected.CopyFrom(rule_set)
        expected.rules[0].source.prefixes[:] = [f"{client}/32"]
        expected.rules[0].destination.prefixes[:] = [f"{server}/32"]
        check(
            got.rule_set == expected and got.hash == applied.hash,
            f"read back equal ({got.rule_set})",
        )

        bad = pb.RuleSet(
            version="py-bad",
            default_action=pb.DEFAULT_ACTION_DENY,
            rules=[
                pb.Rule(
                    id="bad",
                    destination=pb.Addresses(segments=["nowhere"]),
                    action=pb.Action(drop=pb.Empty()),
                )
            ],
        )
        try:
            control.ApplyRuleSet(pb.ApplyRuleSetRequest(rule_set=bad), timeout=30)
            check(False, "an invalid set is refused")
        except grpc.RpcError as error:
            check(error.code() == grpc.StatusCode.INVALID_ARGUMENT, "invalid: INVALID_ARGUMENT")
            status = rpc_status.from_call(error)
            violations = []
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad_request = error_details_pb2.BadRequest()
                    detail.Unpack(bad_request)
                    violations.extend(bad_request.field_violations)
            check(
                any(v.field.startswith("rules[0] (id bad)") and "nowhere" in v.description
                    for v in violations),
                f"BadRequest names the rule and field ({[(v.field, v.description) for v in violations]})",
            )

        try:
            control.ApplyRuleSet(
                pb.ApplyRuleSetRequest(rule_set=rule_set, expected_version="stale"), timeout=30
            )
            check(False, "a stale writer is refused")
        except grpc.RpcError as error:
            check(
                error.code() == grpc.StatusCode.FAILED_PRECONDITION,
                "stale writer: FAILED_PRECONDITION",
            )

        added = control.AddDynamicEntry(
            pb.AddDynamicEntryRequest(
                host="198.18.2.2",
                action=pb.DynamicAction(quarantine=pb.Empty()),
                ttl_millis=60_000,
                reason="python client",
            ),
            timeout=5,
        )
        listed = control.ListDynamicEntries(pb.ListDynamicEntriesRequest(), timeout=5)
        check(
            [(e.id, e.host) for e in listed.entries] == [(added.id, "198.18.2.2")],
            "dynamic entry listed",
        )
        control.RemoveDynamicEntry(pb.RemoveDynamicEntryRequest(id=added.id), timeout=5)
        listed = control.ListDynamicEntries(pb.ListDynamicEntriesRequest(), timeout=5)
        check(len(listed.entries) == 0, "dynamic entry removed")


if __name__ == "__main__":
    main()
