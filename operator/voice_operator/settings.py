"""The operator's settings: one typed object read from `VOICE_OPERATOR_*` environment variables.

Each field is one variable (`voices_dir` is `VOICE_OPERATOR_VOICES_DIR`); the Deployment in manifests/
and the Helm chart set them. Nothing here talks to Kubernetes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from chatterbox_voicefile import MAX_VOICE_BYTES, VARIANTS

ENV_PREFIX = "VOICE_OPERATOR_"


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError(f"{raw!r} is not a boolean (true/false)")
    return value in ("1", "true", "yes", "on")


def _names(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _positive(kind):
    def parse(raw: str):
        value = kind(raw)
        if value <= 0:
            raise ValueError(f"{raw!r} must be > 0")
        return value
    return parse


def _setting(default, help: str, parse=str, choices=None):
    return field(default=default, metadata={"help": help, "parse": parse, "choices": choices})


@dataclass(frozen=True)
class OperatorSettings:
    voices_dir: Path = _setting(Path("/voices"), "The voice directory: the PVC the predictors mount.", Path)
    variant: str = _setting("turbo", "The Chatterbox variant the predictors serve; a voice file is "
                            "checked against what it needs.", choices=VARIANTS)
    namespaces: tuple[str, ...] = _setting((), "Namespaces to serve, comma-separated (globs allowed); "
                                           "empty serves all namespaces.", _names)
    liveness_port: int = _setting(8080, "Port of the liveness endpoint /healthz (0: none).", int)
    peering: str = _setting("chatterbox-voice-operator", "Name of the kopf peering object through which "
                            "replicas agree that one of them works at a time.")
    standalone: bool = _setting(False, "Run without peering: only safe with exactly one replica.", _bool)
    priority: int = _setting(0, "Peering priority; 0 derives one from the start time, so that of several "
                             "replicas exactly one (the newest) works and the others wait.", int)
    max_voice_bytes: int = _setting(MAX_VOICE_BYTES, "Largest voice file accepted from a source.",
                                    _positive(int))
    fetch_timeout: float = _setting(30.0, "Seconds to wait on a source or a predictor.", _positive(float))
    retry_max_delay: float = _setting(60.0, "Longest pause between retries of a temporary failure "
                                      "(they back off exponentially from 1 s).", _positive(float))
    drift_interval: float = _setting(60.0, "Seconds between checks that each voice file is still on disk "
                                     "as synced (a changed or missing file is repaired).", _positive(float))
    predictor_service: str = _setting("{name}-predictor", "Name of an InferenceService's predictor "
                                      "Service; {name} is the InferenceService.")
    predictor_port_name: str = _setting("", "Name of the predictor port in its EndpointSlices; empty "
                                        "takes the only port (or the one named http).")
    predictor_scheme: str = _setting("http", "Scheme of the predictors' reload endpoint.",
                                     choices=("http", "https"))
    log_format: str = _setting("text", "Log lines as text or as JSON objects.", choices=("text", "json"))
    api_key_file: Path | None = _setting(None, "File holding the predictors' API key (a mounted "
                                         "Secret), sent as X-API-Key on reload.",
                                         lambda raw: Path(raw) if raw else None)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            try:
                value = f.metadata["parse"](raw)
            except ValueError as exc:
                raise ValueError(f"{ENV_PREFIX}{f.name.upper()}: {exc}") from None
            if f.metadata["choices"] and value not in f.metadata["choices"]:
                raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r}: one of {f.metadata['choices']}")
            values[f.name] = value
        return cls(**values)

    @property
    def api_key(self) -> str | None:
        """The file's first key, read at each use so that a rotated Secret needs no restart. The
        predictors' key file format: one key a line, '#' comments and blank lines ignored."""
        if self.api_key_file is None:
            return None
        keys = [line.strip() for line in self.api_key_file.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
        return keys[0] if keys else None
