"""Server-side cloning: the tool's pipeline on the predictor's own model and device, beside the engine.

Cloning (decoding, voice activity, the encoders, tuning) runs on a thread of its own, not on the
engine's worker: a minute of reference audio, or a tuning run, must not hold up the audio of the
requests being spoken meanwhile. Both threads read the same modules, which is safe because neither
changes them: the engine decodes under inference mode, and tuning asks autograd for the gradient of
the speaker embedding only (`torch.autograd.grad`), so no weight is written, not even its `.grad`.
At most `max_pending` clones run or wait; more is a 503 with Retry-After, as for speech. They run one
at a time, each on a thread that ends with it: a thread that has run torch's parallel kernels and stays
alive slows the engine's thread by ~30% on a small CPU (see `engine`), even while it waits.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future

from .cloning.pipeline import CloneOptions, CloneResult, NoUsableAudio, Source, clone
from .cloning.tuning import TooFewSegments
from .errors import EngineNotReady, GenerationFailed, InvalidInput, QueueFull, UnusableAudio

log = logging.getLogger(__name__)


class Cloner:
    def __init__(self, model, variant, max_pending: int = 2):
        self.model = model
        self.variant = variant
        self.max_pending = max_pending
        self._pending = 0
        self._lock = threading.Lock()
        self._one_at_a_time = threading.Lock()
        self._stopped = False
        self._threads: set[threading.Thread] = set()

    async def clone(self, sources: list[Source], options: CloneOptions) -> CloneResult:
        future: Future = Future()
        with self._lock:
            if self._stopped:
                raise EngineNotReady("the server is shutting down")
            if self._pending >= self.max_pending:
                raise QueueFull(f"{self.max_pending} voices are already being cloned", retry_after=10.0)
            self._pending += 1
            thread = threading.Thread(target=self._thread_main, args=(future, sources, options),
                                      name="voice-cloner", daemon=True)
            self._threads.add(thread)
        thread.start()
        try:
            return await asyncio.wrap_future(future)
        finally:
            with self._lock:
                self._pending -= 1

    def _thread_main(self, future: Future, sources: list[Source], options: CloneOptions) -> None:
        try:
            with self._one_at_a_time:
                if not future.set_running_or_notify_cancel():  # its request went away while it waited
                    return
                if self._stopped:
                    future.set_exception(EngineNotReady("the server is shutting down"))
                    return
                try:
                    future.set_result(self._run(sources, options))
                except BaseException as exc:  # noqa: BLE001 - handed to the awaiting request
                    future.set_exception(exc)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _run(self, sources: list[Source], options: CloneOptions) -> CloneResult:
        log.info("cloning a voice from %d recordings%s", len(sources), " (tuned)" if options.tune else "")
        try:
            result = clone(self.model, self.variant, sources, options)
        except NoUsableAudio as exc:
            raise UnusableAudio(str(exc)) from exc
        except TooFewSegments as exc:
            raise InvalidInput(str(exc)) from exc
        except Exception as exc:  # a bug or a device failure: reported, and the thread carries on
            log.exception("cloning failed")
            raise GenerationFailed(f"cloning failed: {type(exc).__name__}: {exc}") from exc
        log.info("cloned a voice from %d recordings: %d segments, %.1f s of speech, %d rejected",
                 len(sources), len(result.report["segments"]), result.report["total_duration_s"],
                 len(result.rejections))
        return result

    def stop(self, wait: bool = False) -> None:
        """Refuses new clones and fails the waiting ones; the running one finishes (`wait`: joined)."""
        with self._lock:
            self._stopped = True
            threads = list(self._threads)
        if wait:
            for thread in threads:
                thread.join()
