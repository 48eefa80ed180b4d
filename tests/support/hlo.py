"""The collectives of XLA's optimised HLO dumps (`--xla_dump_to`), for the
scripts that check a compiled step communicates nothing of the table's size.
Imported by the programs of tests/scripts/ (they put tests/support on
sys.path)."""

import re

COLLECTIVES = ("all-gather", "all-reduce", "collective-permute", "all-to-all", "reduce-scatter",
               "collective-broadcast", "ragged-all-to-all")
INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\(.*?\)|\w+\[[\d,]*\](?:\{[^}]*\})?)"
                         r"\s+([\w\-]+)\((.*?)\)")
SHAPE = re.compile(r"\w+\[([\d,]*)\]")


def collectives(path):
    """`[(opcode, [shape, ...])]`: each collective of an optimised HLO module,
    with the shapes of its result and its operands."""
    shapes, found = {}, []
    for line in path.read_text().splitlines():
        match = INSTRUCTION.match(line)
        if not match:
            continue
        name, result, opcode, operands = match.groups()
        shapes[name] = [tuple(int(d) for d in dims.split(",") if d) for dims in SHAPE.findall(result)]
        if opcode.removesuffix("-start") in COLLECTIVES:
            seen = list(shapes[name])
            for operand in re.findall(r"%([\w.\-]+)", operands):
                seen += shapes.get(operand, [])
            found.append((opcode, list(dict.fromkeys(seen))))
    return found


def compiled_steps(dump):
    """The optimised HLO files of the train steps dumped in `dump` so far."""
    return sorted(dump.glob("*train_step*after_optimizations.txt"))
