"""Policy, inventory, flows, the daemon and the CLI."""
