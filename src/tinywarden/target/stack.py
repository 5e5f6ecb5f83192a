"""The worst-case stack of the generated module's entry points, from the cross-compiler's own call graph.

Static RAM and the caller-owned state (:mod:`tinywarden.target.build`) are not all the RAM a module needs: each
call also takes stack. The module is compiled as :func:`~tinywarden.target.build.module_size` compiles it, with
GCC's ``-fstack-usage -fcallgraph-info=su``: every function's frame as the compiler laid it out, and every call
it kept after inlining. An entry point's worst case is its frame plus the deepest chain of calls below it. The
generated C has no recursion, no variable-length array and no ``alloca``; a module that had any is refused
(its stack would have no bound). Calls out of the module (``memset``, libgcc's division helpers on a core
without a divider) have no frame in the graph: they are named, not counted (a few words each).

Example (needs the cross toolchain and a generated module)::

    st = stack_usage(Path("out"), "cortex-m0plus")
    print(st.worst["tw_push"], " -> ".join(st.path["tw_push"]))
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tinywarden.target.build import MODEL_STEM, compile_object, get_target, model_source
from tinywarden.target.toolchain import TargetError

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
    #: functions the module calls that it does not define (libc/libgcc): not counted
    external: tuple[str, ...]

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


def parse_callgraph(text: str, source: str, entries: Sequence[str] = STACK_ENTRIES) -> tuple[
        dict[str, int], dict[str, tuple[str, ...]], tuple[str, ...]]:
    """``(worst, path, external)`` of ``entries`` from one ``-fcallgraph-info=su`` file's text (see
    :class:`StackUsage`); an entry point the module does not define is left out. Raises TargetError on a
    frame of dynamic size or a call cycle, whose stack has no static bound."""
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
    best: dict[str, tuple[int, tuple[str, ...]]] = {}

    def deepest(node: str, chain: tuple[str, ...]) -> tuple[int, tuple[str, ...]]:
        if node in chain:
            raise TargetError(f"{source}: recursion through {_short(node)}: the stack has no static bound")
        if node not in best:
            below = [deepest(c, (*chain, node)) for c in calls.get(node, []) if c in frames]
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


def stack_usage(model_dir: Path, target: str = "cortex-m4", entries: Sequence[str] = STACK_ENTRIES) -> StackUsage:
    """Cross-compile ``model_dir/tinywarden_model.c`` for ``target`` (the flags :func:`module_size` uses) and
    return each entry point's worst-case stack from GCC's call graph."""
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
        worst, path, external = parse_callgraph(graph.read_text(), src.name, entries)
    return StackUsage(target, worst, path, external)
