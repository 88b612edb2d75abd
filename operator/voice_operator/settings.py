"""The operator's settings: one typed object read from `VOICE_OPERATOR_*` environment variables.

Each field is one variable (`voices_dir` is `VOICE_OPERATOR_VOICES_DIR`), declared once through the
mechanism the predictor uses too (chatterbox_common.settings); the Deployment in manifests/ and the Helm
chart set them. Nothing here talks to Kubernetes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from chatterbox_common import Settings, load_settings, read_key_file
from chatterbox_voicefile import MAX_VOICE_BYTES, VARIANTS
from pydantic import Field

ENV_PREFIX = "VOICE_OPERATOR_"

# Built from the voice format's own list, so that a new variant needs no edit here.
VariantName = Literal[VARIANTS]


class OperatorSettings(Settings):
    voices_dir: Path = Field(Path("/voices"), description="The voice directory: the PVC the predictors "
                             "mount.")
    variant: VariantName = Field("turbo", description="The Chatterbox variant the predictors serve; a voice "
                                 "file is checked against what it needs.")
    namespaces: tuple[str, ...] = Field((), description="Namespaces to serve, comma-separated (globs "
                                        "allowed); empty serves all namespaces.")
    liveness_port: int = Field(8080, ge=0, lt=65536, description="Port of the liveness endpoint /healthz "
                               "(0: none).")
    peering: str = Field("chatterbox-voice-operator", description="Name of the kopf peering object through "
                         "which replicas agree that one of them works at a time.")
    standalone: bool = Field(False, description="Run without peering: only safe with exactly one replica.")
    priority: int = Field(0, description="Peering priority; 0 derives one from the start time, so that of "
                          "several replicas exactly one (the newest) works and the others wait.")
    max_voice_bytes: int = Field(MAX_VOICE_BYTES, gt=0, description="Largest voice file accepted from a "
                                 "source.")
    fetch_timeout: float = Field(30.0, gt=0, description="Seconds to wait on a source or a predictor.")
    max_recording_bytes: int = Field(100 * 2**20, gt=0, description="Largest reference recording of a clone "
                                     "source.")
    max_clone_bytes: int = Field(100 * 2**20, gt=0, description="Largest total of a clone source's "
                                 "recordings: the predictors' --clone_max_upload_mb (the chart sets both).")
    clone_timeout: float = Field(900.0, gt=0, description="Seconds to wait for a predictor to clone a voice "
                                 "(minutes of audio, or a tuning run, take a while).")
    retry_max_delay: float = Field(60.0, gt=0, description="Longest pause between retries of a temporary "
                                   "failure (they back off exponentially from 1 s).")
    drift_interval: float = Field(60.0, gt=0, description="Seconds between checks that each voice file is "
                                  "still on disk as synced (a changed or missing file is repaired).")
    predictor_service: str = Field("{name}-predictor", description="Name of an InferenceService's "
                                   "predictor Service; {name} is the InferenceService.")
    predictor_port_name: str = Field("", description="Name of the predictor port in its EndpointSlices; "
                                     "empty takes the only port (or the one named http).")
    predictor_scheme: Literal["http", "https"] = Field("http", description="Scheme of the predictors' "
                                                       "reload endpoint.")
    log_format: Literal["text", "json"] = Field("text", description="Log lines as text or as JSON objects.")
    api_key_file: Path | None = Field(None, description="File holding the predictors' API key (a mounted "
                                      "Secret), sent as X-API-Key on reload.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        """From the environment (default: os.environ); raises ValueError naming a bad variable."""
        return load_settings(cls, ENV_PREFIX, environ=environ)

    @property
    def api_key(self) -> str | None:
        """The file's first key, read at each use so that a rotated Secret needs no restart. The file is
        the predictors' own key file, read by the same function (chatterbox_common.keys)."""
        if self.api_key_file is None:
            return None
        keys = read_key_file(self.api_key_file)
        return keys[0] if keys else None
