"""Generated from proto/mlua_swarm/v1 by clients/python/gen_stubs.sh; do not edit."""
