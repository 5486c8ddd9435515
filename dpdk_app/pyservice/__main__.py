"""`python -m dpdk_app.pyservice`: run the numba fallback service."""

from dpdk_app.pyservice.service import main

raise SystemExit(main())
