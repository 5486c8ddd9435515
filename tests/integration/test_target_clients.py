"""P4Runtime clients nobody here wrote, against the target: finsy and p4runtime-shell.

Each connects, pushes the pipeline (P4Info + device config), inserts an entry, reads it back
and deletes it. p4runtime-shell pins an old protobuf, so it runs in its own virtual
environment (`make p4rt-shell-venv`) as a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from vectors.session import next_election
from vectors.targets import REPO, TargetHandle

P4RT_SHELL_PYTHON = REPO / "build" / "p4rt-shell-venv" / "bin" / "python"


def test_finsy(target: TargetHandle) -> None:
    import finsy as fy

    async def session() -> list[fy.P4TableEntry]:
        options = fy.SwitchOptions(
            p4info=target.p4info_path,
            p4blob=target.device_config,
            device_id=target.device_id,
            initial_election_id=next_election().low,
            p4force=True,
        )
        entry = fy.P4TableEntry(
            "l2_forward",
            match=fy.P4TableMatch(eth_dst="00:00:00:00:00:09"),
            action=fy.P4TableAction("set_egress_port", port=3),
        )
        async with fy.Switch("nicfw", target.address, options) as switch:
            assert switch.is_primary
            await switch.insert([entry])
            read = [e async for e in switch.read(fy.P4TableEntry("l2_forward"))]
            await switch.delete([entry])
            after = [e async for e in switch.read(fy.P4TableEntry("l2_forward"))]
        assert after == []
        return read

    read = asyncio.run(session())
    assert len(read) == 1
    (entry,) = read
    assert entry.match is not None and entry.action is not None
    assert entry.match["eth_dst"] == 0x09  # finsy gives MACs without a format hint as ints
    assert entry.action.name.endswith("set_egress_port")
    assert entry.action.args == {"port": 3}


SHELL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import p4runtime_sh.shell as sh
    from p4runtime_sh.p4runtime import P4RuntimeWriteException

    addr, device_id, election, p4info, blob = sys.argv[1:]
    sh.setup(device_id=int(device_id), grpc_addr=addr, election_id=(0, int(election)),
             config=sh.FwdPipeConfig(p4info, blob), verbose=False)
    te = sh.TableEntry("FirewallIngress.fwd.l2_forward")(
        action="FirewallIngress.fwd.set_egress_port")
    te.match["eth_dst"] = "00:00:00:00:00:0a"
    te.action["port"] = "3"
    te.insert()
    duplicate = None
    try:
        te.insert()
    except P4RuntimeWriteException as exc:
        duplicate = [(i, e.canonical_code) for i, e in exc.errors]
    read = [(e.match["eth_dst"].exact.value.hex(), e.action["port"].value.hex())
            for e in sh.TableEntry("FirewallIngress.fwd.l2_forward").read()]
    te.delete()
    left = list(sh.TableEntry("FirewallIngress.fwd.l2_forward").read())
    sh.teardown()
    print(json.dumps({"read": read, "duplicate": duplicate, "left": len(left)}))
    """
)


def _shell_python() -> Path:
    """The p4runtime-shell venv's interpreter, building the venv if it is missing."""
    if not P4RT_SHELL_PYTHON.exists():
        build = subprocess.run(
            ["make", "-C", str(REPO), "p4rt-shell-venv"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if build.returncode != 0 or not P4RT_SHELL_PYTHON.exists():
            pytest.skip(f"cannot build the p4runtime-shell venv: {build.stderr[-500:]}")
    return P4RT_SHELL_PYTHON


@pytest.mark.p4rtshell
def test_p4runtime_shell(target: TargetHandle, tmp_path: Path) -> None:
    python = _shell_python()
    script = tmp_path / "shell_session.py"
    script.write_text(SHELL_SCRIPT)
    blob = tmp_path / "device_config.bin"
    blob.write_bytes(target.device_config)
    run = subprocess.run(
        [
            str(python),
            str(script),
            target.address,
            str(target.device_id),
            str(next_election().low),
            str(target.p4info_path),
            str(blob),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["read"] == [["0a", "03"]]  # canonical byte strings, as the spec wants
    assert result["duplicate"] == [[0, 6]]  # index 0, ALREADY_EXISTS, decoded by the shell
    assert result["left"] == 0
