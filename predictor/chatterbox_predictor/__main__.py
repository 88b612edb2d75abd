"""Entry point: `python -m chatterbox_predictor` (the container's command) and `make run`.

The parser extends KServe's own (`parents=[kserve.model_server.parser]`), so every KServe flag keeps
working; ours come from `PredictorSettings`. kserve is imported here, inside functions, because its
model_server module parses sys.argv when it is imported.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .loading import CheckpointError
from .settings import PredictorSettings

log = logging.getLogger("chatterbox_predictor")


def build_parser() -> argparse.ArgumentParser:
    from kserve import model_server

    parser = argparse.ArgumentParser(
        prog="chatterbox-predictor", parents=[model_server.parser],
        description="KServe custom predictor serving Chatterbox text-to-speech.")
    # KServe's gRPC server has no API key check, so it would serve V2 inference to anyone: off unless
    # asked for (and refused when keys are configured, see main).
    parser.set_defaults(enable_grpc=False)
    PredictorSettings.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    import kserve
    from kserve import model_server

    from .api.app import install
    from .api.auth import ApiKeys
    from .api.observability import json_logs
    from .api.service import TTSService
    from .model import ChatterboxModel

    args = build_parser().parse_args(argv)
    try:
        settings = PredictorSettings.load(args)
    except ValueError as exc:
        print(f"chatterbox-predictor: {exc}", file=sys.stderr)
        return 2
    keys = ApiKeys(settings.api_keys, settings.api_keys_file)
    if args.enable_grpc and keys.enabled:
        print("chatterbox-predictor: --enable_grpc true serves V2 inference over gRPC without the API key "
              "check; with API keys configured, run without gRPC (the default here)", file=sys.stderr)
        return 2
    json_logs()
    model = ChatterboxModel(args.model_name, settings)
    try:
        model.load()
    except CheckpointError as exc:
        print(f"chatterbox-predictor: {exc}", file=sys.stderr)
        return 1
    # Our routes beside KServe's, on the app its server serves.
    install(model_server.app, TTSService(model.tts_engine, model.voices, model.cloner, settings), keys,
            open_metrics=settings.open_metrics, max_text_chars=settings.max_text_chars,
            max_tune_steps=settings.clone_max_tune_steps)
    server = kserve.ModelServer(
        http_port=args.http_port, grpc_port=args.grpc_port, workers=args.workers,
        max_threads=args.max_threads, max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc, enable_docs_url=args.enable_docs_url,
        enable_latency_logging=args.enable_latency_logging, access_log_format=args.access_log_format,
        event_loop=args.event_loop, timeout_keep_alive=args.timeout_keep_alive)
    try:
        server.start([model])
    finally:
        model.stop(wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
