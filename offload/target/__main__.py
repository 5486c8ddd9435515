"""`python -m offload.target`: the software target's command line."""

from offload.target.cli import target_command

if __name__ == "__main__":
    target_command(prog_name="python -m offload.target")
