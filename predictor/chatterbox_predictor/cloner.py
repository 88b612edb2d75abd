"""Server-side cloning: the tool's pipeline on the predictor's own model and device, beside the engine.

Cloning (decoding, voice activity, the encoders, tuning) runs on a thread of its own, not on the
engine's worker: a minute of reference audio, or a tuning run, must not hold up the audio of the
requests being spoken meanwhile. Both threads read the same modules, which is safe because neither
changes them: the engine decodes under inference mode, and tuning asks autograd for the gradient of
the speaker embedding only (`torch.autograd.grad`), so no weight is written, not even its `.grad`.
At most `max_pending` clones run or wait; more is a 503 with Retry-After, as for speech.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

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
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(max_workers=1,
                                                                   thread_name_prefix="voice-cloner")

    async def clone(self, sources: list[Source], options: CloneOptions) -> CloneResult:
        with self._lock:
            if self._pool is None:
                raise EngineNotReady("the server is shutting down")
            if self._pending >= self.max_pending:
                raise QueueFull(f"{self.max_pending} voices are already being cloned", retry_after=10.0)
            self._pending += 1
            future = self._pool.submit(self._run, sources, options)
        try:
            return await asyncio.wrap_future(future)
        finally:
            with self._lock:
                self._pending -= 1

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
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)
