"""P4Runtime protobuf modules, generated for the current protobuf runtime.

The bindings come from finsy, which ships them with their .proto sources; the stale `p4runtime`
PyPI modules only import with the pure-Python protobuf runtime, far too slow for table sync.
Everything else in nicfw reaches protobuf through these short prefixes: `p4r.TableEntry`,
`p4i.P4Info`.
"""

from finsy.proto import p4d, p4i, p4r, p4r_grpc, rpc_code, rpc_status

__all__ = ["p4d", "p4i", "p4r", "p4r_grpc", "rpc_code", "rpc_status"]
