"""The KServe model: loads Chatterbox and reports ready to KServe's health and readiness endpoints.

Importing this module imports kserve, whose model_server module parses sys.argv at import time: only
`__main__.main()` imports it, never a module that tests import. Inference endpoints arrive with the
server issue; this model answers KServe's V1/V2 health, readiness and metadata endpoints.
"""

from __future__ import annotations

import logging
import time

import kserve

from .loading import load_model, resolve_checkpoint, resolve_device
from .settings import PredictorSettings

log = logging.getLogger(__name__)


class ChatterboxModel(kserve.Model):
    def __init__(self, name: str, settings: PredictorSettings):
        super().__init__(name)
        self.settings = settings
        self.tts = None

    def load(self) -> bool:
        started = time.monotonic()
        directory = resolve_checkpoint(self.settings)
        device = resolve_device(self.settings.device)
        self.tts = load_model(directory, self.settings.variant, device=device)
        log.info("loaded Chatterbox %s from %s on %s in %.1f s", self.settings.variant, directory, device,
                 time.monotonic() - started)
        self.ready = True
        return self.ready
