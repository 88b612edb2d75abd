"""Schemathesis hooks for the predictor's fuzz run (loaded through SCHEMATHESIS_HOOKS by test_server).

A schema can say that `POST /voices` takes a binary `file`, not what a loadable voice file contains, so
random bytes are always refused (422) and the links from an uploaded voice (speak with it, delete it)
would never be followed. For each upload whose body schemathesis generated as schema-valid, this sends
a real voice file instead (the bytes at $VOICE_FILE, named `fuzzed.pth`); invalid bodies stay invalid.
Likewise random bytes are never speech, so a schema-valid `POST /voices/clone` sends two real
recordings instead (espeak-ng speech at $RECORDINGS, `:`-separated: two, so that tuning has a segment
to hold out).
"""

import os

import schemathesis
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation  # where 4.32 keeps it (no public alias)

with open(os.environ["VOICE_FILE"], "rb") as handle:
    VOICE = handle.read()
RECORDINGS = []
for path in os.environ["RECORDINGS"].split(":"):
    with open(path, "rb") as handle:
        RECORDINGS.append((os.path.basename(path), handle.read()))


def _valid_body(case) -> bool:
    if case.meta is None:  # an explicit example: schema-valid by definition
        return True
    body = case.meta.components.get(ParameterLocation.BODY)
    return (body.mode if body is not None else case.meta.generation.mode) is GenerationMode.POSITIVE


@schemathesis.hook.apply_to(method="POST", path="/voices")
def before_call(context, case, kwargs):
    if isinstance(case.body, dict) and "file" in case.body and _valid_body(case):
        # A `files` argument replaces the generated multipart body; query and headers stay the case's.
        kwargs["files"] = [("file", ("fuzzed.pth", VOICE, "application/octet-stream"))]


@schemathesis.hook.apply_to(method="POST", path="/voices/clone")
def before_call(context, case, kwargs):  # noqa: F811 - schemathesis registers each hook as it is defined
    if isinstance(case.body, dict) and "audio" in case.body and _valid_body(case):
        kwargs["files"] = [("audio", (name, data, "audio/wav")) for name, data in RECORDINGS]
