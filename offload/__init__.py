"""Everything between resolved rules and the target: compiler, P4Runtime client, software target."""
