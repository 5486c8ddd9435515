"""The firewall service fast path: DPDK application (C) and its numba fallback."""
