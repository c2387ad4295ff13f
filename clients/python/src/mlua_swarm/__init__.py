"""Generated protobuf / gRPC stubs of proto/mlua_swarm (clients/python/gen_stubs.sh)."""
