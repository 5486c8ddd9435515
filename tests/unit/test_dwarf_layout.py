"""The C structs shared with Python have the layout dpdk_app/layout.py assumes, read from DWARF.

The check reads DW_TAG_structure_type DIEs (DW_AT_byte_size) and their DW_TAG_member children
(DW_AT_data_member_location, and the member type's size) with pyelftools, and compares them with
the numpy dtypes of layout.SHARED_STRUCTS. It runs on the built fast path when it exists, and
always on a tiny program compiled with gcc -g from the same header, so it runs without DPDK.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from elftools.dwarf.die import DIE
from elftools.elf.elffile import ELFFile

from dpdk_app.fastpath import find_binary
from dpdk_app.layout import SHARED_STRUCTS

HEADER_DIR = Path(__file__).resolve().parents[2] / "dpdk_app" / "include"

_QUALIFIERS = {"DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type"}


@dataclass(frozen=True)
class Member:
    """A struct member as DWARF describes it."""

    offset: int
    size: int


@dataclass(frozen=True)
class StructLayout:
    """A struct's size and members, from DWARF."""

    size: int
    members: dict[str, Member]


def _type_size(die: DIE) -> int:
    """Byte size of a type DIE, through typedefs/qualifiers and arrays."""
    while die.tag in _QUALIFIERS:
        die = die.get_DIE_from_attribute("DW_AT_type")
    if die.tag == "DW_TAG_array_type":
        count = 1
        for sub in die.iter_children():
            if sub.tag != "DW_TAG_subrange_type":
                continue
            if "DW_AT_count" in sub.attributes:
                count *= sub.attributes["DW_AT_count"].value
            else:
                count *= sub.attributes["DW_AT_upper_bound"].value + 1
        return count * _type_size(die.get_DIE_from_attribute("DW_AT_type"))
    return int(die.attributes["DW_AT_byte_size"].value)


def _member_offset(die: DIE) -> int:
    value = die.attributes["DW_AT_data_member_location"].value
    if isinstance(value, int):
        return value
    # DWARF 2/3 location expression: [DW_OP_plus_uconst, uleb128 offset].
    return int.from_bytes(bytes(value[1:]), "little") if value[0] == 0x23 else -1


def struct_layouts(path: Path, names: set[str]) -> dict[str, StructLayout]:
    """Layouts of the named structs defined at file scope in an ELF file's DWARF."""
    found: dict[str, StructLayout] = {}
    with path.open("rb") as fh:
        elf = ELFFile(fh)
        if not elf.has_dwarf_info():
            raise AssertionError(f"{path} has no DWARF (build with -g)")
        for cu in elf.get_dwarf_info().iter_CUs():
            for die in cu.get_top_DIE().iter_children():
                if die.tag != "DW_TAG_structure_type" or "DW_AT_byte_size" not in die.attributes:
                    continue
                name_attr = die.attributes.get("DW_AT_name")
                name = name_attr.value.decode() if name_attr else ""
                if name not in names or name in found:
                    continue
                members = {
                    m.attributes["DW_AT_name"].value.decode(): Member(
                        _member_offset(m), _type_size(m.get_DIE_from_attribute("DW_AT_type"))
                    )
                    for m in die.iter_children()
                    if m.tag == "DW_TAG_member"
                }
                found[name] = StructLayout(int(die.attributes["DW_AT_byte_size"].value), members)
            if len(found) == len(names):
                break
    return found


def layout_mismatches(layouts: dict[str, StructLayout], structs: dict[str, np.dtype]) -> list[str]:
    """Every difference between the DWARF layouts and the dtypes, one message each."""
    problems = []
    for name, dtype in structs.items():
        c = layouts.get(name)
        if c is None:
            problems.append(f"struct {name}: not in the DWARF")
            continue
        if c.size != dtype.itemsize:
            problems.append(f"struct {name}: C size {c.size}, dtype itemsize {dtype.itemsize}")
        fields = dtype.fields or {}
        for field, spec in fields.items():
            ftype, offset = spec[0], spec[1]
            member = c.members.get(field)
            if member is None:
                problems.append(f"{name}.{field}: no such C member")
            elif (member.offset, member.size) != (offset, ftype.itemsize):
                problems.append(
                    f"{name}.{field}: C offset {member.offset} size {member.size}, "
                    f"dtype offset {offset} size {ftype.itemsize}"
                )
        for member_name in c.members.keys() - fields.keys():
            problems.append(f"{name}.{member_name}: C member missing from the dtype")
    return problems


@pytest.fixture(scope="module")
def header_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A program compiled with gcc -g that uses every shared struct (so DWARF has them)."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler to build the header check program")
    src = tmp_path_factory.mktemp("dwarf") / "shared.c"
    uses = "\n".join(f"struct {name} v_{name};" for name in SHARED_STRUCTS)
    src.write_text(f'#include "nicfw_shared.h"\n{uses}\nint main(void) {{ return 0; }}\n')
    out = src.with_suffix("")
    subprocess.run([gcc, "-g", "-O0", "-I", str(HEADER_DIR), str(src), "-o", str(out)], check=True)
    return out


def test_header_layout_matches_dtypes(header_program: Path) -> None:
    layouts = struct_layouts(header_program, set(SHARED_STRUCTS))
    assert layout_mismatches(layouts, SHARED_STRUCTS) == []


def test_built_fastpath_layout_matches_dtypes() -> None:
    binary = find_binary()
    if binary is None:
        pytest.skip("nicfw-fastpath is not built (make dpdk); the header check covers the layout")
    layouts = struct_layouts(binary, set(SHARED_STRUCTS))
    assert set(layouts) == set(SHARED_STRUCTS), "the binary must use every shared struct"
    assert layout_mismatches(layouts, SHARED_STRUCTS) == []


def _with_field(dtype: np.dtype, name: str, replacement: tuple) -> np.dtype:
    spec = [replacement if f == name else (f, dtype.fields[f][0]) for f in dtype.names or ()]
    return np.dtype(spec)


def test_checker_reports_a_wrong_field_width(header_program: Path) -> None:
    layouts = struct_layouts(header_program, set(SHARED_STRUCTS))
    rule = SHARED_STRUCTS["nicfw_rule"]
    wrong = _with_field(rule, "priority", ("priority", "<u2"))  # shifts everything after it
    problems = layout_mismatches(layouts, {"nicfw_rule": wrong})
    assert any("nicfw_rule.priority" in p for p in problems)
    assert any("nicfw_rule.src_addr: C offset 8" in p for p in problems)
    assert any("C size 64" in p for p in problems)


def test_checker_reports_swapped_and_missing_fields(header_program: Path) -> None:
    layouts = struct_layouts(header_program, set(SHARED_STRUCTS))
    rec = SHARED_STRUCTS["nicfw_flow_record"]
    names = list(rec.names or ())
    i, j = names.index("sport"), names.index("dport")
    names[i], names[j] = names[j], names[i]  # same sizes, swapped order
    swapped = np.dtype([(n, rec.fields[n][0]) for n in names])
    problems = layout_mismatches(layouts, {"nicfw_flow_record": swapped})
    assert any(p.startswith("nicfw_flow_record.sport: C offset 32") for p in problems)
    ident = SHARED_STRUCTS["nicfw_identity"]
    renamed = np.dtype(
        [("user" if n == "user_id" else n, ident.fields[n][0]) for n in ident.names or ()]
    )
    problems = layout_mismatches(layouts, {"nicfw_identity": renamed})
    assert "nicfw_identity.user: no such C member" in problems
    assert "nicfw_identity.user_id: C member missing from the dtype" in problems
    assert layout_mismatches(layouts, {"nicfw_nothing": rec}) == [
        "struct nicfw_nothing: not in the DWARF"
    ]
