"""The numba fallback of the firewall service: nicfw-fastpath's behaviour without DPDK.

`python -m dpdk_app.pyservice <EAL args> -- --ctrl PATH [options]` takes the C binary's command
line, speaks the same control channel (dpdk_app/fastpath.py works unchanged against it) and gives
the same verdicts: packets in batches parsed by dpdk_app/packets.py, connection tracking and the
identity table in numba hash tables (kernels.py), classification by the incremental TupleMerge
classifier (rules.py), I/O by AF_PACKET raw socket or pcap files (ports.py).
"""
