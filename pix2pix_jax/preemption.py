"""Preemption: SIGTERM or SIGINT becomes a request to checkpoint the current step and stop."""

import signal
import threading

import jax
from jax.experimental import multihost_utils


class PreemptionWatch:
    """Turns SIGTERM and SIGINT into a request to checkpoint the current step and stop.

    With several processes the decision must be the same on all of them, so
    it comes from JAX's preemption sync point (the coordination service
    catches SIGTERM); a single process uses its own signal handlers. A second
    signal while stopping is handled as usual (e.g. KeyboardInterrupt).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "PreemptionWatch":
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _handle(self, signum, frame) -> None:
        self.received = signum
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def should_stop(self, step: int) -> bool:
        """Whether to checkpoint `step` and stop (the same answer on every process)."""
        if jax.process_count() > 1:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.received is not None
