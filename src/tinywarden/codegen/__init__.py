"""Emitters that turn a fitted model into something a device runs.

:data:`EXPORTERS` is the one dispatch point of ``tinywarden export --target``: target name ->
``"module:function"``, imported only when that target is asked for. Each function has the signature
``(pipeline, out_dir, source) -> list[pathlib.Path]`` (``source`` names the model file in error
messages; the result is the list of files written). Every emitter writes through :func:`write_export`.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any

from tinywarden.errors import ConfigError
from tinywarden.fileio import atomic_write

EXPORTERS: dict[str, str] = {
    "c": "tinywarden.codegen.c:export_c",
    "tflite": "tinywarden.codegen.tflite:export_tflite_target",
    "onnx": "tinywarden.codegen.onnx:export_onnx_target",
}


def export(pipeline: Any, target: str, out_dir: str | Path, source: str = "<model>") -> list[Path]:
    """Export a loaded, fitted pipeline for ``target`` into ``out_dir``; return the written files."""
    if target not in EXPORTERS:
        raise ConfigError(f"unknown export target {target!r}; known: {', '.join(sorted(EXPORTERS))}")
    module, func = EXPORTERS[target].split(":")
    return getattr(import_module(module), func)(pipeline, Path(out_dir), source)


def write_export(path: Path, data: str | bytes) -> Path:
    """Replace ``path`` with an exported file crash-safely (:func:`tinywarden.fileio.atomic_write`): never torn,
    and a symlink at ``path`` is replaced, not written through. :class:`ConfigError` naming ``path`` if it cannot be
    written."""
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path
