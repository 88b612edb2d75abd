"""The predictor's settings: one typed object, filled from flags, then environment variables, then defaults.

Each field is declared once (chatterbox_common.settings, shared with the operator) and becomes a
command-line flag (`--checkpoint_dir`, underscores like KServe's own flags), an environment variable
(`CHATTERBOX_CHECKPOINT_DIR`, which the Helm chart sets) and the flag's help text. KServe's own flags
(`--model_name`, `--http_port`, ...) stay KServe's: the predictor's parser extends KServe's parser
instead of copying it. Nothing here imports kserve or torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from chatterbox_common import Settings, load_settings
from chatterbox_common import add_arguments as add_flags
from pydantic import Field

from .backbones import SIZES
from .variants import VARIANTS

ENV_PREFIX = "CHATTERBOX_"

# Built from the registries, so that a new variant or checkpoint size needs no edit here.
VariantName = Literal[tuple(VARIANTS)]
RandomSize = Literal[("",) + tuple(SIZES)]


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "chatterbox-predictor"


class PredictorSettings(Settings):
    variant: VariantName = Field("turbo", description="Chatterbox variant to serve.")
    checkpoint_dir: Path | None = Field(
        None, description="Checkpoint directory holding the variant's files (KServe's storage initializer "
        "puts them in /mnt/models, used when it exists). Empty: download the variant from the Hugging "
        "Face Hub at start-up.")
    model_cache_dir: Path = Field(default_factory=_default_cache_dir, description="Where downloaded and "
                                  "generated checkpoints are kept between runs.")
    random_weights: RandomSize = Field(
        "", description="Offline mode: serve a generated checkpoint of the real architecture with RANDOM "
        "weights (it speaks noise) at this size instead of real weights. For trying the server without "
        "access to the weights.")
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="Device for inference: auto picks "
                                                   "CUDA when present.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Dtype of the T3 transformer (sampling stays float32; S3Gen: s3gen_dtype). "
        "float32 draws the library's tokens; bfloat16 reads half the bytes a step: on CUDA the usual choice; "
        "on a CPU with AVX512-BF16 a packed step of 1 to 4 streams takes 0.63-0.81 of float32's, of 8 the "
        "same (bench/steps.py). float16: CUDA only.")
    s3gen_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Dtype of S3Gen's heavy products: its flow's linear layers and its vocoder's "
        "convolutions (their inputs and everything else stay float32). auto: bfloat16 where the device "
        "computes it natively (CUDA, or a CPU with AVX512-BF16), else float32. On such a CPU a flow pass "
        "takes 0.68-0.81 of float32's time with its mels 49-52 dB from float32's (streaming's windows are "
        "17-20 dB from a one-shot decode), and a vocoder call 0.51-0.60 with its waveform 42 dB from "
        "float32's. float16: CUDA only.")
    pack_weights: bool = Field(
        True, description="On the CPU, lay T3's linear weights out once for oneDNN's kernels: a decode step "
        "of 2 to 8 streams then costs 1.2-1.4x one stream's instead of 1.8-2.8x, and one stream's is "
        "faster too (bench/steps.py). Its sums round differently from PyTorch's own in the last bits. No "
        "effect on CUDA.")
    voices_dir: Path = Field(Path("/voices"), description="Directory of voice files (<voice_id>.pth): the "
                             "volume the operator and uploads write to.")
    voice_scan_interval: float = Field(2.0, gt=0, description="Seconds between scans of the voice directory "
                                       "for files added, replaced or removed by others.")
    voice_cache_mb: int = Field(256, gt=0, description="Loaded voices kept on the device, in MiB (least "
                                "recently used go first).")
    api_keys: str = Field("", description="Comma-separated API keys accepted in X-API-Key or Authorization: "
                          "Bearer. With no key at all (here or in the file) the API is open.")
    api_keys_file: Path | None = Field(None, description="File with one API key per line (a mounted "
                                       "Secret); re-read when it changes.")
    open_metrics: bool = Field(False, description="Serve /metrics without an API key, so that a Prometheus "
                               "scraper inside the cluster needs no key (the metrics carry no request "
                               "content).")
    queue_size: int = Field(16, gt=0, description="Requests allowed to wait for the model; beyond it the "
                            "server answers 503 with Retry-After.")
    max_batch_size: int = Field(8, gt=0, description="Requests generated together, one batched T3 step "
                                "for all of them (continuous batching); more wait in the queue. On a GPU "
                                "a step costs about the same for 1 or 32 streams; on a CPU it grows with "
                                "the batch.")
    max_text_chars: int = Field(5000, gt=0, description="Longest text accepted per request.")
    token_cap: int = Field(1000, gt=0, description="Most speech tokens generated per sentence group (25 "
                           "tokens = 1 s); requests may ask for fewer.")
    clone_max_upload_mb: int = Field(100, gt=0, description="Largest total of the reference recordings "
                                     "of one cloning request (POST /voices with audio), in MiB.")
    clone_max_pending: int = Field(2, gt=0, description="Voices being cloned or waiting at once; beyond it "
                                   "the server answers 503 with Retry-After.")
    clone_max_tune_steps: int = Field(200, ge=0, description="Most fine-tuning steps a cloning request may "
                                      "ask for (0: no tuning on this server).")
    watermark: bool = Field(True, description="Perth watermark on generated audio (Resemble AI's "
                            "responsible-AI default).")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Adds one flag per field; an absent flag leaves the environment or the default in force."""
        add_flags(parser, cls, ENV_PREFIX, "chatterbox predictor")

    @classmethod
    def load(cls, args: argparse.Namespace | None = None,
             environ: Mapping[str, str] | None = None) -> PredictorSettings:
        """Flags in `args`, else `environ` (default: os.environ), else the defaults; raises ValueError
        naming the variable of a bad value."""
        return load_settings(cls, ENV_PREFIX, args, environ)
