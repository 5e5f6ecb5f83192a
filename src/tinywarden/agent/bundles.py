"""Bundles on the device: the verified bundle turned into a running model, and the watcher that finds new ones.

At start :meth:`BundleWatcher.initial` installs ``bundle_path`` (verify, anti-rollback, copy into
``state_dir``); if that file is refused but ``state_dir`` holds an installed bundle, that one runs and
the refusal is reported. While running, :meth:`BundleWatcher.poll` looks at ``bundle_path`` and
``state_dir/trust.json`` (by mtime, size and inode) and hands each changed, verified bundle to
:meth:`BundleWatcher.prepare`, which builds its model, policy and channel mapping *before* installing
it, so a bundle the agent cannot run never becomes the accepted version.

Runtimes. With ``runtime="native"`` a model file's int8 program runs as the generated C, built on this host
and loaded through ctypes (:func:`tinywarden.native.load_native`, cached in ``state_dir/native``): the
agent's own process then never imports numpy. When that is not possible here (no C compiler, a model file
without an int8 program, a failed build) one warning line says why and the bundle runs as with
``runtime="int8"`` (the numpy interpreter of the same program, :mod:`tinywarden.runtime`).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinywarden import bundle as tb
from tinywarden.agent.config import AgentConfig, AgentError
from tinywarden.agent.sources import channel_indices
from tinywarden.errors import TinywardenError
from tinywarden.native import NativeModel, load_native
from tinywarden.payload import check_policy, load_payload
from tinywarden.respond import Policy, parse_policy

if TYPE_CHECKING:  # the float pipeline (and the training stack) loads only for a model without an int8 program
    from tinywarden.guard import GuardVerdict
    from tinywarden.pipeline import Pipeline
    from tinywarden.runtime import Int8Model

_log = logging.getLogger(__name__)

__all__ = ["BundleWatcher", "LoadedBundle", "ModelRunner", "Refusal", "load_bundle_contents"]


@dataclass(frozen=True)
class LoadedBundle:
    """A verified bundle turned into what the loop runs: the model (the int8 runtime, or the float pipeline
    of a model file without an int8 program) and the response policy."""

    bundle: tb.Bundle
    pipeline: NativeModel | Int8Model | Pipeline
    policy: Policy
    policy_overridden: bool

    @property
    def label(self) -> str:
        """``model_id@vN``: how audit records and the engine name this model."""
        return f"{self.bundle.model_id}@v{self.bundle.version}"

    def describe(self) -> dict[str, Any]:
        p = self.pipeline
        return {
            "id": self.bundle.model_id,
            "version": self.bundle.version,
            "digest": self.bundle.digest,
            "profile": self.bundle.profile,
            "threshold": float(p.threshold_),
            "window": p.window,
            "stride": p.stride,
            "channels": list(p.channels_),
            "runtime": getattr(p, "runtime", "float"),
            "policy": f"{self.policy.name} {self.policy.version}",
        }


def load_bundle_contents(bundle: tb.Bundle, policy_override: Policy | None = None,
                         prefer_int8: bool = True, native_cache: Path | None = None) -> LoadedBundle:
    """Load a verified bundle's model and policy with the checks install makes
    (:func:`tinywarden.payload.load_payload`; the bundle's own policy must load even when overridden);
    raises a :class:`TinywardenError` naming the bundle. With ``native_cache`` the model runs as native code
    when it can (module docstring), else as ``prefer_int8`` says."""
    if native_cache is not None:
        native = _load_native(bundle, policy_override, native_cache)
        if native is not None:
            return native
    payload = load_payload(bundle.model, bundle.policy, source=bundle.source, prefer_int8=prefer_int8)
    if policy_override is not None:
        return LoadedBundle(bundle, payload.pipeline, policy_override, True)
    return LoadedBundle(bundle, payload.pipeline, payload.policy, False)


def _load_native(bundle: tb.Bundle, policy_override: Policy | None, cache: Path) -> LoadedBundle | None:
    """The bundle with its model as native code, or None (with one warning line) when that cannot be had."""
    try:
        own = parse_policy(bundle.policy.decode("utf-8"), source=f"{bundle.source} (policy section)")
    except (TinywardenError, UnicodeDecodeError):
        return None  # load_payload names what is wrong with the policy
    try:
        model = load_native(bundle.model, (policy_override or own).adaptation, f"{bundle.source} (model section)",
                            cache)
    except TinywardenError as exc:
        _log.warning("native runtime not used (%s); scoring with the numpy runtime", exc)
        return None
    policy = check_policy(bundle.policy, model.threshold_, source=bundle.source)
    return LoadedBundle(bundle, model, policy_override or policy, policy_override is not None)


class ModelRunner:
    """One model's streaming state: its scorer, channel selection and the current window for summaries.

    ``rows`` and ``times`` hold the last ``window`` mapped samples and their timestamps (bounded deques),
    so an incident can describe the window that triggered it after the scorer has moved on.
    """

    def __init__(self, loaded: LoadedBundle, index: Sequence[int]) -> None:
        self.loaded = loaded
        self.index = list(index)
        # the int8 and native runtimes adapt inside their scorer, as the generated C does (the float one beside
        # the loop)
        p = loaded.pipeline
        self.native = isinstance(p, NativeModel)
        self.scorer = p.stream(loaded.policy.adaptation) if getattr(p, "runtime", "") else p.stream()
        self.rows: deque[Any] = deque(maxlen=loaded.pipeline.window)
        self.times: deque[float] = deque(maxlen=loaded.pipeline.window)
        self.pushed = 0
        self.placed = False  # the last sample pushed made it into the raw window (``rows``)
        self.due = False  # ... and completed a window (so a fault there loses that window's score)

    def push(self, t: float, sample: Any) -> float | None:
        self.placed = self.due = False
        x = self._select(sample)
        self.rows.append(x)
        self.placed = True
        self.times.append(t)
        self.pushed += 1
        w, stride = self.loaded.pipeline.window, self.loaded.pipeline.stride
        self.due = self.pushed >= w and (self.pushed - w) % stride == 0
        out = self.scorer.push(x)
        return None if out is None else out[0]

    def judge(self) -> GuardVerdict | None:
        """The fail-safe guard's verdict on the raw window that the last sample completed."""
        if not self.due:
            return None
        if self.native:
            return self.loaded.pipeline.judge_window(list(self.rows))
        import numpy as np

        return self.loaded.pipeline.judge_window(np.stack(self.rows))

    def new_rows(self) -> list[Any] | None:
        """The samples the window the last sample completed adds (every one for the first window, else the last
        ``stride``), for the likelihood's value record; None when no window is due."""
        if not self.due:
            return None
        w, stride = self.loaded.pipeline.window, self.loaded.pipeline.stride
        return list(self.rows)[-(w if self.pushed == w else stride):]

    def window_rows(self) -> Any:
        """The raw window the last sample completed, as an array (for an incident's summary; imports numpy)."""
        import numpy as np

        return np.asarray(list(self.rows), dtype=np.float64)

    def _select(self, sample: Any) -> Any:
        """The model's channels of one source sample: a list of floats for the native runtime, else an array."""
        if self.native:
            return [float(sample[i]) for i in self.index]
        import numpy as np

        return np.asarray(sample, dtype=np.float64)[self.index]

    def span(self, t: float) -> tuple[float, float]:
        return (self.times[0], self.times[-1]) if self.times else (t, t)


@dataclass(frozen=True)
class Refusal:
    """A bundle (or trust state) the watcher found and refused: where, and why."""

    source: str
    reason: str


class BundleWatcher:
    """Finds the bundle to start with and, while running, newly offered or installed ones (module docstring)."""

    def __init__(self, config: AgentConfig, channels: Sequence[str], state_dir: Path) -> None:
        self.config = config
        self.channels = tuple(channels)
        self.state_dir = state_dir
        self.trust_path = state_dir / tb.STATE_FILE
        self.bundle_path = Path(config.bundle_path) if config.bundle_path is not None else None
        self._seen: dict[Path, tuple[int, int, int] | None] = {}

    def initial(self) -> tuple[ModelRunner, str | None]:
        """The runner to start with, and why ``bundle_path`` was refused if the installed bundle runs instead."""
        cfg = self.config
        bundle, refusal, fresh = self._initial_bundle()
        try:
            runner = self._runner(bundle)
        except TinywardenError as exc:
            raise AgentError(f"cannot run bundle {bundle.source}: {exc}") from None
        if fresh and self.bundle_path is not None:
            # Installed only now that it is known to run here, so a bundle this device cannot use never
            # becomes its accepted version (install verifies again and refuses a file changed meanwhile).
            try:
                installed, _ = tb.install_bundle(self.bundle_path, cfg.pubkey, self.state_dir,
                                                 check=self._checked(bundle))
            except tb.BundleError as exc:
                raise AgentError(f"cannot install bundle: {exc}") from None
            if installed.digest != bundle.digest:
                raise AgentError(f"{self.bundle_path}: changed while the agent was starting; start it again")
        for p in (self.trust_path, self.bundle_path):
            if p is not None:
                self._seen[p] = _stat(p)
        return runner, refusal

    def _initial_bundle(self) -> tuple[tb.Bundle, str | None, bool]:
        """The bundle to start with, why ``bundle_path`` was refused if the installed one runs instead, and
        whether it still has to be installed (it is ``bundle_path``, verified but not yet accepted)."""
        cfg = self.config
        refusal = None
        if cfg.bundle_path is not None:
            try:
                state = tb.read_state(self.state_dir)
                if state is None or tb.file_digest(cfg.bundle_path) != state.bundle_sha256:
                    return tb.load_verified_bundle(cfg.bundle_path, cfg.pubkey, self.state_dir), None, True
            except tb.BundleError as exc:
                refusal = str(exc)
        try:
            b = tb.load_installed_bundle(self.state_dir, cfg.pubkey)
        except tb.BundleError as exc:
            raise AgentError(f"no bundle to run: {refusal + '; ' if refusal else ''}{exc}") from None
        return b, refusal, False

    def poll(self, known: Callable[[], set[str]]) -> Iterator[tuple[tb.Bundle, Path | None] | Refusal]:
        """Each new verified bundle (with the file to install it from, or ``None`` if already installed) or
        refusal since the last poll; ``known()`` gives the digests of the bundles running or pending."""
        bpath = self.bundle_path
        if bpath is not None:
            sig = _stat(bpath)
            if sig != self._seen.get(bpath):
                self._seen[bpath] = sig
                if sig is not None:
                    try:
                        if tb.file_digest(bpath) not in known():
                            yield tb.load_verified_bundle(bpath, self.config.pubkey, self.state_dir), bpath
                    except tb.BundleError as exc:
                        yield Refusal(str(bpath), str(exc))
        trust = self.trust_path
        sig = _stat(trust)
        if sig != self._seen.get(trust):
            self._seen[trust] = sig
            try:
                state = tb.read_state(self.state_dir)
                if state is not None and state.bundle_sha256 not in known():
                    yield tb.load_installed_bundle(self.state_dir, self.config.pubkey), None
            except tb.BundleError as exc:
                yield Refusal(str(trust), str(exc))

    def prepare(self, b: tb.Bundle, install_from: Path | None) -> ModelRunner:
        """Build the runner for a verified bundle and install it when it came from a file; raises whatever
        goes wrong (the caller refuses the bundle and keeps the current one)."""
        runner = self._runner(b)
        if install_from is not None:
            installed, _ = tb.install_bundle(install_from, self.config.pubkey, self.state_dir, check=self._checked(b))
            if installed.digest != b.digest:
                raise tb.BundleError(f"{install_from}: changed while it was being installed; will retry")
            self._seen[self.trust_path] = _stat(self.trust_path)
        return runner

    def _checked(self, built: tb.Bundle) -> Callable[[tb.Bundle], object]:
        """Install's check of a bundle whose runner was just built: nothing more to do for that same bundle (the
        native runtime's process stays free of numpy), the agent's own load for any other."""
        return lambda b: None if b.digest == built.digest else self._runner(b)

    def _runner(self, b: tb.Bundle) -> ModelRunner:
        native = self.state_dir / "native" if self.config.runtime == "native" else None
        loaded = load_bundle_contents(b, self.config.policy_override, self.config.runtime != "float", native)
        index = channel_indices(loaded.pipeline.channels_, self.channels, self.config.channel_map,
                                what=f"model {b.model_id} v{b.version}")  # fmt: skip
        return ModelRunner(loaded, index)


def _stat(path: Path) -> tuple[int, int, int] | None:
    """What tells us a file changed: (mtime ns, size, inode); ``None`` while it does not exist."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino
