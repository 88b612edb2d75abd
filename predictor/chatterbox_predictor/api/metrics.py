"""Prometheus metrics, in prometheus_client's default registry, which KServe's `/metrics` serves."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

TTFA = Histogram("chatterbox_time_to_first_audio_seconds",
                 "From a request's arrival to its first audio chunk (queue wait included).", ["endpoint"],
                 buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30))
RTF = Histogram("chatterbox_real_time_factor",
                "Generation time over audio duration per request (below 1: faster than real time).",
                ["endpoint"], buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10))
REQUESTS = Counter("chatterbox_speech_requests", "Speech requests that reached the engine, by endpoint.",
                   ["endpoint"])
AUDIO_SECONDS = Counter("chatterbox_audio_seconds", "Seconds of audio generated, by endpoint.", ["endpoint"])
ACTIVE_STREAMS = Gauge("chatterbox_active_streams", "Responses streaming audio right now.")
ERRORS = Counter("chatterbox_errors", "Requests that failed, by error type.", ["type"])


class _EngineCollector:
    """Reads the engine's own counters when scraped (queue depth, voice cache hits and misses)."""

    def __init__(self):
        self.engine = None

    def collect(self):
        engine = self.engine
        if engine is None:
            return
        yield GaugeMetricFamily("chatterbox_queue_depth", "Requests waiting for the model.",
                                value=engine.queue_depth)
        yield GaugeMetricFamily("chatterbox_generating", "Requests the model is generating now.",
                                value=engine.active)
        cache = engine.voices.cache
        yield CounterMetricFamily("chatterbox_voice_cache_hits", "Voice loads served from the cache.",
                                  value=cache.hits)
        yield CounterMetricFamily("chatterbox_voice_cache_misses", "Voice loads read from disk.",
                                  value=cache.misses)
        yield GaugeMetricFamily("chatterbox_voice_cache_bytes", "Bytes of voices held on the device.",
                                value=cache.nbytes)


_collector = _EngineCollector()
REGISTRY.register(_collector)


def register_engine(engine) -> None:
    _collector.engine = engine
