"""Entry point: `python -m chatterbox_predictor` (the container's command) and `make run`.

The parser extends KServe's own (`parents=[kserve.model_server.parser]`), so every KServe flag keeps
working; ours come from `PredictorSettings`. kserve is imported here, inside main(), because its
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
    PredictorSettings.add_arguments(parser)
    return parser


def _json_logs() -> None:
    """Our loggers write one JSON object per line, with the request id (KServe keeps its own format)."""
    from .server import JsonLogFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def main(argv: list[str] | None = None) -> int:
    import kserve
    from kserve import model_server

    from .model import ChatterboxModel
    from .server import ApiKeys, TTSService, install

    args = build_parser().parse_args(argv)
    try:
        settings = PredictorSettings.load(args)
    except ValueError as exc:
        print(f"chatterbox-predictor: {exc}", file=sys.stderr)
        return 2
    _json_logs()
    model = ChatterboxModel(args.model_name, settings)
    try:
        model.load()
    except CheckpointError as exc:
        print(f"chatterbox-predictor: {exc}", file=sys.stderr)
        return 1
    service = TTSService(model.engine, ApiKeys(settings.api_keys, settings.api_keys_file),
                         scan_interval=settings.voice_scan_interval)
    install(model_server.app, service)  # our routes beside KServe's, on the app its server serves
    service.start()
    server = kserve.ModelServer(
        http_port=args.http_port, grpc_port=args.grpc_port, workers=args.workers,
        max_threads=args.max_threads, max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc, enable_docs_url=args.enable_docs_url,
        enable_latency_logging=args.enable_latency_logging, access_log_format=args.access_log_format,
        event_loop=args.event_loop, timeout_keep_alive=args.timeout_keep_alive)
    server.start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
