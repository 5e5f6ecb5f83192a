"""The worst-case stack of the generated module's entry points, from the cross-compiler's own call graph.

Static RAM and the caller-owned state (:mod:`tinywarden.target.build`) are not all the RAM a module needs: each
call also takes stack. The module is compiled as :func:`~tinywarden.target.build.module_size` compiles it, with
GCC's ``-fstack-usage -fcallgraph-info=su``: every function's frame as the compiler laid it out, and every call
it kept after inlining. An entry point's worst case is its frame plus the deepest chain of calls below it. The
generated C has no recursion, no variable-length array and no ``alloca``; a module that had any is refused
(its stack would have no bound).

Calls out of the module (``memset``, libgcc's helpers for 64-bit arithmetic or division on a core without them)
have no frame in GCC's graph. They are read from the code a firmware links: the module is linked with the core's
own newlib and libgcc, and each such routine's frame is bounded from its disassembly (every instruction that
lowers the stack, counted once: ``push``, ``stmdb sp!``, ``vpush``, ``sub sp``, a pre-indexed store to ``sp``),
plus the deepest routine it calls, branches to or falls into. Routines hand-written in assembly lower the stack
once on each path, so the sum is a bound. A routine whose stack the disassembly cannot bound (an indirect call,
``sp`` written otherwise, a loop of branches between routines) is named in :attr:`StackUsage.uncounted`.

Example (needs the cross toolchain and a generated module)::

    st = stack_usage(Path("out"), "cortex-m0plus")
    print(st.worst["tw_push"], " -> ".join(st.path["tw_push"]))
"""

from __future__ import annotations

import bisect
import dataclasses
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tinywarden.target.build import MODEL_STEM, CpuTarget, compile_object, get_target, model_source
from tinywarden.target.toolchain import TargetError, check_newlib, find_tool, run_tool

#: The module's public entry points a firmware calls while running (tinywarden_model.h).
STACK_ENTRIES = ("tw_init", "tw_push", "tw_push_q", "tw_push_fixed")

_NODE = re.compile(r'node:\s*\{\s*title:\s*"([^"]+)"\s*label:\s*"([^"]*)"')
_EDGE = re.compile(r'edge:\s*\{\s*sourcename:\s*"([^"]+)"\s*targetname:\s*"([^"]+)"')
_FRAME = re.compile(r"\\n(\d+) bytes \((static|dynamic|dynamic,bounded)\)")


@dataclass(frozen=True)
class StackUsage:
    """Worst-case stack of each entry point on one core, in bytes, and the call chain that reaches it."""

    target: str
    #: entry point -> its frame plus the deepest chain of frames below it
    worst: dict[str, int]
    #: entry point -> the functions of that chain, the entry point first
    path: dict[str, tuple[str, ...]]
    #: functions the module calls that it does not define (libc/libgcc), counted in :attr:`worst`
    external: tuple[str, ...]
    #: of those, the ones whose stack the linked code does not bound: named, not counted
    uncounted: tuple[str, ...] = ()

    @property
    def deepest(self) -> int:
        """The largest worst case over the entry points: the stack a firmware must leave the module."""
        return max(self.worst.values(), default=0)

    @property
    def deepest_path(self) -> tuple[str, ...]:
        """The call chain of :attr:`deepest` (empty when no entry point is defined)."""
        return self.path[max(self.worst, key=self.worst.__getitem__)] if self.worst else ()


def _short(title: str) -> str:
    """A call-graph node's function name (GCC titles a file-local function ``file:name``)."""
    return title.rsplit(":", 1)[-1]


#: The external functions' own worst cases and chains, given their names (:func:`library_stack`).
LibraryStack = Callable[[tuple[str, ...]], Mapping[str, tuple[int, tuple[str, ...]]]]


def parse_callgraph(text: str, source: str, entries: Sequence[str] = STACK_ENTRIES,
                    library: LibraryStack | None = None) -> tuple[
        dict[str, int], dict[str, tuple[str, ...]], tuple[str, ...]]:
    """``(worst, path, external)`` of ``entries`` from one ``-fcallgraph-info=su`` file's text (see
    :class:`StackUsage`); an entry point the module does not define is left out. ``library``, called once with the
    external functions' names, gives each one's own worst case and chain; one it does not give adds nothing.
    Raises TargetError on a frame of dynamic size or a call cycle, whose stack has no static bound."""
    frames: dict[str, int] = {}
    external: set[str] = set()
    for title, label in _NODE.findall(text):
        m = _FRAME.search(label)
        if m is None:
            external.add(_short(title))
        elif m.group(2) != "static":
            raise TargetError(f"{source}: {_short(title)} has a stack frame of {m.group(2)} size: no static bound")
        else:
            frames[title] = int(m.group(1))
    calls: dict[str, list[str]] = {}
    for src, dst in _EDGE.findall(text):
        calls.setdefault(src, []).append(dst)
    below_module = library(tuple(sorted(external))) if library is not None and external else {}
    best: dict[str, tuple[int, tuple[str, ...]]] = {}

    def deepest(node: str, chain: tuple[str, ...]) -> tuple[int, tuple[str, ...]]:
        if node in chain:
            raise TargetError(f"{source}: recursion through {_short(node)}: the stack has no static bound")
        if node not in best:
            below = [deepest(c, (*chain, node)) for c in calls.get(node, []) if c in frames]
            below += [below_module[_short(c)] for c in calls.get(node, [])
                      if c not in frames and _short(c) in below_module]
            depth, tail = max(below, default=(0, ()))
            best[node] = (frames[node] + depth, (_short(node), *tail))
        return best[node]

    by_name = {_short(t): t for t in frames}
    worst: dict[str, int] = {}
    path: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        if entry in by_name:
            worst[entry], path[entry] = deepest(by_name[entry], ())
    return worst, path, tuple(sorted(external))


_BLOCK = re.compile(r"^([0-9a-f]+) <([^>]+)>:$")
_INSN = re.compile(r"^\s*([0-9a-f]+):\s+(\S+)\s*([^;@]*)")
_TARGET = re.compile(r"^([0-9a-f]+) <[^>]+>$")
#: a register list's size in words ({r4, r5, lr}: 3; {d8-d15}: 8 double registers)
_REGS = re.compile(r"\{([^}]*)\}")


def _list_bytes(operands: str, double: bool = False) -> int:
    m = _REGS.search(operands)
    if m is None:
        return 0
    n = 0
    for item in m.group(1).split(","):
        lo, _, hi = item.strip().partition("-")
        n += 1 if not hi else int(re.sub(r"\D", "", hi)) - int(re.sub(r"\D", "", lo)) + 1
    return n * (8 if double and m.group(1).lstrip().startswith("d") else 4)


def _lowers_by(op: str, operands: str) -> int | None:
    """Bytes one instruction lowers the stack by (0: it does not touch ``sp`` that way), None when it writes ``sp``
    in a way the bound cannot follow (``mov sp``, ``sub sp, rN``, ``ldr sp``)."""
    base = op.split(".")[0]
    ops = operands.replace(" ", "")
    if base == "push":
        return _list_bytes(operands)
    if base == "vpush":
        return _list_bytes(operands, double=True)
    if base in ("stmdb", "stmfd") and ops.startswith("sp!"):
        return _list_bytes(operands)
    if base in ("str", "strd", "strb", "strh") and "[sp,#-" in ops and ops.endswith("]!"):
        return int(ops.split("[sp,#-")[1].split("]")[0], 0)
    if ops.startswith("sp,") and base in ("sub", "subw", "subs"):
        imm = ops.rsplit("#", 1)
        return int(imm[1], 0) if len(imm) == 2 and re.fullmatch(r"\d+|0x[0-9a-f]+", imm[1]) else None
    if ops.startswith("sp,") and base in ("add", "addw", "adds") and "#" in ops:
        return 0  # raises the stack back
    if ops.startswith("sp,") or base in ("ldm", "ldmia", "pop") and ops.startswith("sp"):
        return 0 if base in ("ldm", "ldmia", "pop") else None
    return 0


def parse_disassembly(text: str, symbols: Mapping[str, int]) -> dict[str, tuple[int, tuple[str, ...]]]:
    """Each of ``symbols`` (name -> address) with its worst-case stack and chain, from ``objdump -d
    --no-show-raw-insn`` of a linked image (see the module docstring); a symbol whose stack the code does not bound,
    or that is not in the image, is left out."""
    blocks: list[tuple[int, str, list[tuple[int, str, str]]]] = []
    for line in text.splitlines():
        head = _BLOCK.match(line)
        if head:
            blocks.append((int(head.group(1), 16), head.group(2), []))
        elif blocks and (m := _INSN.match(line)):
            blocks[-1][2].append((int(m.group(1), 16), m.group(2), m.group(3).strip()))
    starts = [b[0] for b in blocks]  # in address order, as objdump lists them

    def block_of(addr: int) -> int | None:
        i = bisect.bisect_right(starts, addr) - 1
        return i if i >= 0 and blocks[i][2] and addr <= blocks[i][2][-1][0] else None

    own: dict[int, int | None] = {}
    succ: dict[int, set[int | None]] = {}
    for i, (start, _, insns) in enumerate(blocks):
        total: int | None = 0
        nexts: set[int | None] = set()
        for _, op, operands in insns:
            lowered = _lowers_by(op, operands)
            total = None if lowered is None or total is None else total + lowered
            base = op.split(".")[0]
            target = _TARGET.match(operands)
            if base in ("bl", "blx", "b") or (base.startswith("b") and len(base) == 3 and target):
                if target is None:
                    if not (base == "bx" and operands == "lr"):
                        nexts.add(None)  # an indirect call or branch
                    continue
                addr = int(target.group(1), 16)
                if base in ("bl", "blx") or not (start <= addr <= insns[-1][0]):
                    nexts.add(block_of(addr))
            elif base == "bx" and operands != "lr":
                nexts.add(None)
        code = [(op.split(".")[0], args) for _, op, args in insns if op != "nop"]  # alignment padding ends some
        last_op, last_args = code[-1] if code else ("", "")
        ends = (last_op == "b" or (last_op == "bx" and last_args == "lr") or
                (last_op in ("pop", "ldmia", "ldm") and "pc" in last_args))
        if not ends and i + 1 < len(blocks):
            nexts.add(i + 1)  # falls into the next routine
        own[i], succ[i] = total, nexts
    memo: dict[int, tuple[int, tuple[str, ...]] | None] = {}

    def deepest(i: int, chain: tuple[int, ...]) -> tuple[int, tuple[str, ...]] | None:
        if i in chain:
            return None
        if i not in memo:
            frame = own[i]
            below = [None if n is None else deepest(n, (*chain, i)) for n in succ[i] if n != i]
            if frame is None or any(b is None for b in below):
                memo[i] = None
            else:
                depth, tail = max((b for b in below if b is not None), default=(0, ()))
                memo[i] = (frame + depth, (blocks[i][1], *tail))
        return memo[i]

    out: dict[str, tuple[int, tuple[str, ...]]] = {}
    for name, addr in symbols.items():
        i = block_of(addr)
        if i is not None and starts[i] == addr and (found := deepest(i, ())) is not None:
            out[name] = (found[0], (name, *found[1][1:]))
    return out


def library_stack(obj: Path, cpu: CpuTarget, names: Sequence[str], work: Path) -> dict[str, tuple[int, tuple[
        str, ...]]]:
    """The worst-case stack and chain of each of ``names`` (libc/libgcc routines ``obj`` calls) as ``cpu``'s own
    newlib and libgcc define them: ``obj`` linked with them, the image disassembled (:func:`parse_disassembly`)."""
    if not names:
        return {}
    check_newlib()
    image = work / "linked.elf"
    run_tool([find_tool("arm-none-eabi-gcc"), *cpu.cflags, "-nostdlib", f"-Wl,--entry={STACK_ENTRIES[0]}",
              str(obj), "-Wl,--start-group", "-lc", "-lgcc", "-Wl,--end-group", "-o", str(image)],
             f"linking {obj.name} with {cpu.name}'s newlib and libgcc")
    symbols: dict[str, int] = {}
    for line in run_tool([find_tool("arm-none-eabi-nm"), str(image)], "listing symbols").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] in names:
            symbols[parts[2]] = int(parts[0], 16) & ~1
    text = run_tool([find_tool("arm-none-eabi-objdump"), "-d", "--no-show-raw-insn", str(image)],
                    f"disassembling {image.name}")
    return parse_disassembly(text, symbols)


def stack_usage(model_dir: Path, target: str = "cortex-m4", entries: Sequence[str] = STACK_ENTRIES) -> StackUsage:
    """Cross-compile ``model_dir/tinywarden_model.c`` for ``target`` (the flags :func:`module_size` uses) and
    return each entry point's worst-case stack from GCC's call graph, the library routines it calls included."""
    cpu = get_target(target)
    src = model_source(model_dir)
    with tempfile.TemporaryDirectory(prefix="tw-stack-") as tmp:
        obj = Path(tmp) / f"{MODEL_STEM}.o"
        flagged = dataclasses.replace(cpu, cflags=(*cpu.cflags, "-fstack-usage", "-fcallgraph-info=su"))
        compile_object(src, flagged, obj, [src.parent])
        graph = obj.with_suffix(".ci")
        if not graph.exists():
            raise TargetError(f"compiling {src.name} for {target}: the compiler wrote no call graph (GCC >= 10 "
                              "writes it with -fcallgraph-info)")
        bounded: dict[str, tuple[int, tuple[str, ...]]] = {}

        def library(names: tuple[str, ...]) -> Mapping[str, tuple[int, tuple[str, ...]]]:
            bounded.update(library_stack(obj, cpu, names, Path(tmp)))
            return bounded

        worst, path, external = parse_callgraph(graph.read_text(), src.name, entries, library)
    return StackUsage(target, worst, path, external, tuple(n for n in external if n not in bounded))
