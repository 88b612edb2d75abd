"""The predictor's HTTP API, in layers (the shape of vLLM's `entrypoints/openai`):

- `protocol`: request and response models of every protocol, with field docs and ranges;
- `auth`: the one authentication rule (a middleware over the whole app);
- `service`: what every protocol shares (engine, voice directory, streamed audio);
- `routes` (the plan's REST API), `openai` (OpenAI speech), `websocket` (real-time): thin routes;
- `kserve_v2`: the V1/V2 tensors the KServe model (`model.py`) declares and checks;
- `observability` (request ids, JSON logs) and `metrics` (Prometheus);
- `errors`: the one error-to-response table; `spec`: the OpenAPI document's statuses, links and
  security; `app`: the wiring.

Nothing here imports kserve: the app is handed in (see `__main__`).
"""
