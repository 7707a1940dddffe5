"""The HTTP contract against its own OpenAPI document: schemathesis's engine (what its CLI runs:
examples, coverage, fuzzing and stateful phases) sends valid and invalid requests to every route of
the in-process app over the real tiny models and applies all of its checks."""

import io
import json
import logging
import pickle
import subprocess
from collections import Counter

import httpx
import pytest

from speech_service.errors import ModelUnavailable, ReferenceMissing, Unprocessable, refusal
from speech_service.logs import OUR_LOGGERS, configure_logging, valid_request_id

from conftest import SHORT_TEXT, InProcessBackends, add_voice
from served import served_app
from test_api import make_client, upload

# All checks, a bounded number of examples per operation. Uploaded audio and transcript plausibility
# cannot be written in JSON Schema: a schema-valid upload of random bytes is rightly refused (400
# undecodable_audio, 422 implausible_ref_text), so those operations also accept that for valid data.
CONFIG = """
workers = 1
seed = 7
# A body may ask for the quality check with retries: each attempt is synthesized and heard by Whisper
# in this process, beside the jobs the fuzzer started, on two cores; any route may wait for a core.
request-timeout = 60

[checks]
enabled = true

[generation]
max-examples = 20

# 413 (input text over its limit) is a rejection too.
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]

[[operations]]
include-path = "/v1/voices"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404", "409", "412", "413", "422", "5xx"]

# A write sent with `If-Match` is made only to the voice's current version (its ETag), which a fuzzed
# header does not name: 412 (so is an overwrite above). A corrected transcript is held to the voice's
# clip as an upload's is: a blank one, or one far longer than the clip says, is 422.
[[operations]]
include-path = "/v1/voices/{name}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "412", "422", "429",
                                                     "5xx"]

# Spoken consent is the same: a schema-valid recording of random bytes, or one that does not say the
# challenge phrase, is rightly refused; so is a challenge id that was never issued (404).
[[operations]]
include-path = "/v1/voices/{name}/consent"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404", "409", "413", "422", "5xx"]

# A schema-valid lexicon may still hold a rule the model cannot read (pinyin for other characters than
# the grapheme's, an alias and pinyin both), a fuzzed file is no PLS document, the name may be taken
# (409) or absent (404), and a fuzzed If-Match names no version of it (412).
[[operations]]
include-path-regex = "^/v1/lexicons"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404", "409", "412", "413", "5xx"]

# DELETE of a queued or running job cancels it (200 with the job), and the cancelled record stays
# readable until it expires, as documented; only a finished job is removed (204).
[[operations]]
include-path-regex = "^/v1/jobs/"
include-method = "DELETE"
checks.use_after_free.enabled = false
"""


def contract_failures(base_url: str) -> tuple[list[str], Counter]:
    """Run schemathesis on the app served at `base_url`; return its failures (one line each) and how
    often each operation answered each status."""
    import schemathesis  # here: collection imports every module, of the tiers that skip this one too
    from schemathesis.config import SchemathesisConfig
    from schemathesis.engine import Status, events, from_schema

    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=SchemathesisConfig.from_str(CONFIG))
    failures, answers = [], Counter()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for interaction in event.recorder.interactions.values():
                answers[event.label, interaction.response.status_code if interaction.response else None] += 1
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.status == Status.FAILURE:
                        case = event.recorder.cases[case_id].value
                        failures.append(f"{event.label}: {check.name}: {check.failure_info.failure.title} "
                                        f"[{case.method} {case.formatted_path} {case.query} {case.body!r:.2000}]")
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            failures.append(f"error: {event.info if hasattr(event, 'info') else event.exception}")
    return sorted(set(failures)), answers


@pytest.mark.slow  # every operation fuzzed, speech made for each valid body
def test_every_route_keeps_its_documented_contract(tmp_path, engine, synth_settings, whisper_settings, short_wav):
    # Served on one event loop, as a replica is: jobs the fuzzer creates run on to completion in the
    # background (an un-entered TestClient would close each request's loop under them). Backends of
    # its own, so the batcher it binds to that loop is not the module's.
    # Greedy decoding: the fuzzer's bodies with timestamps or the check each have every segment heard.
    from speech_service.transcription.whisper import WhisperBackend

    greedy = whisper_settings.model_copy(update={"beam_size": 1})
    # Two sampling steps unless a body asks for more: the contract is in the answers, not the audio.
    fewer_steps = synth_settings.model_validate({**synth_settings.model_dump(), "defaults": {"nfe_step": 2}})
    backends = InProcessBackends(engine, WhisperBackend(greedy), fewer_steps, greedy)
    # Each retry of the quality check is a synthesis and a Whisper pass: the cap (documented in the
    # schema, so the fuzzer keeps to it) keeps the fuzzing to one pass per segment.
    # A fuzzed sidecar id was never made: its 404 comes after `landing_wait_s`, kept short here.
    # The input limit (in the schema as `maxLength`) is an operator's, lowered: the fuzzer's longest
    # valid inputs are spoken, and the limit's own 413 is still sent. The jobs it submits (about 90)
    # run two at a time beside the requests; the rest wait queued, as over any operator's cap.
    with served_app(tmp_path / "store", backends, quality={"retries": 0, "max_retries": 0},
                    provenance={"landing_wait_s": 0.2}, limits={"max_input_chars": 300},
                    jobs={"max_running": 2}) as base_url:
        with httpx.Client(base_url=base_url, timeout=60) as http:
            add_voice(http, "alice", short_wav, SHORT_TEXT)  # a voice to speak in
        failures, answers = contract_failures(base_url)
    assert sum(answers.values()) > 200
    assert answers["POST /v1/audio/speech", 200] > 0  # the documented example speaks
    assert not failures, "\n".join(failures)


@pytest.fixture
def client(tmp_path, backends, short_wav):  # noqa: F811
    client = make_client(tmp_path, backends)
    upload(client, "alice", short_wav, ref_text=SHORT_TEXT)
    return client


def test_errors_name_their_type_and_field(client, tmp_path, backends):  # noqa: F811
    r = client.post("/v1/audio/speech", json={"voice": "alice", "input": "Hi.", "speed": 10})
    assert r.status_code == 422
    assert r.json()["error"] | {"message": None} == {
        "message": None, "type": "invalid_request_error", "param": "speed", "code": "invalid_request"}
    assert client.get("/v1/voices/nobody").json()["error"]["type"] == "invalid_request_error"
    model = client.post("/v1/audio/speech", json={"voice": "alice", "input": "Hi.", "model": "whisper-1"})
    assert model.status_code == 400 and model.json()["error"]["param"] == "model"
    empty = client.post("/v1/voices", data={"name": "bob"}, files={"file": ("a.wav", b"")})
    assert empty.json()["error"]["code"] == "empty_audio" and empty.json()["error"]["param"] == "file"
    secured = make_client(tmp_path / "secured", backends, api_keys=["sk-one"])
    assert secured.get("/v1/voices").json()["error"]["type"] == "authentication_error"


def test_unsupported_methods_answer_405_with_allow(client):
    r = client.put("/v1/voices")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert set(r.headers["allow"].split(", ")) >= {"GET", "POST"}
    r = client.post("/v1/voices/alice")
    assert set(r.headers["allow"].split(", ")) >= {"GET", "PATCH", "DELETE"} and "POST" not in r.headers["allow"]


def test_every_response_carries_a_request_id(client):
    made = {client.get(path).headers["x-request-id"] for path in ("/healthz", "/v1/voices", "/v1/voices/x y")}
    assert len(made) == 3 and all(valid_request_id(i) for i in made)  # one of ours for each
    mine = {"X-Request-ID": "caller-id-42"}
    speech = {"voice": "alice", "input": "Hello there.", "nfe_step": 2, "response_format": "pcm"}
    assert client.post("/v1/audio/speech", json=speech, headers=mine).headers["x-request-id"] == "caller-id-42"
    with client.stream("POST", "/v1/audio/speech", json={**speech, "stream": True}, headers=mine) as r:
        assert r.status_code == 200 and r.headers["x-request-id"] == "caller-id-42"
    error = client.post("/v1/audio/speech", json={**speech, "voice": "nobody"}, headers=mine)
    assert error.headers["x-request-id"] == "caller-id-42"
    assert error.json()["error"]["message"].endswith("(request id: caller-id-42)")
    assert client.put("/v1/voices", headers=mine).headers["x-request-id"] == "caller-id-42"


def test_a_malformed_request_id_is_refused(client):
    r = client.get("/v1/voices", headers={"X-Request-ID": "x" * 129})
    assert r.status_code == 400 and r.json()["error"]["param"] == "X-Request-ID"
    assert valid_request_id(r.headers["x-request-id"])  # one of ours, not the caller's


def test_log_lines_carry_the_request_id(client):
    lines = io.StringIO()
    configure_logging(stream=lines)
    try:
        client.get("/v1/voices/nobody", headers={"X-Request-ID": "find-me-7"})
    finally:
        for name in OUR_LOGGERS:
            logging.getLogger(name).handlers.clear()
            logging.getLogger(name).propagate = True
    assert "[find-me-7] GET /v1/voices/nobody -> 404 voice_not_found" in lines.getvalue()


def test_errors_keep_code_and_field_across_processes():
    # Ray pickles an exception raised in a replica to re-raise it in the ingress.
    error = pickle.loads(pickle.dumps(Unprocessable("too long", code="text_too_long", param="input")))
    assert (error.status_code, error.type, error.code, error.param) == (422, "invalid_request_error",
                                                                         "text_too_long", "input")


def test_a_replica_answers_with_a_refusal_and_raises_its_own_failure():
    missing = ReferenceMissing("send the clip")
    assert refusal(missing) is missing  # routine: returned, so Serve does not log it as a failure
    too_long = Unprocessable("too long", code="text_too_long")
    assert refusal(too_long) is too_long
    with pytest.raises(ModelUnavailable):
        refusal(ModelUnavailable("no weights"))


def probe(path) -> tuple[float, float]:
    """(duration, start time) in seconds as ffprobe reads them from the file's headers."""
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration,start_time", "-of", "json",
                          str(path)], capture_output=True, text=True, check=True).stdout
    fields = json.loads(out)["format"]
    assert fields.get("duration") not in (None, "N/A"), f"{path.name} does not say how long it is"
    return float(fields["duration"]), float(fields.get("start_time", 0))


@pytest.mark.parametrize("fmt, frame_samples", [("flac", 4608), ("mp3", 576)])
def test_whole_files_state_their_length(client, tmp_path, fmt, frame_samples):
    body = {"voice": "alice", "input": "Hello there, how are you?", "nfe_step": 2, "seed": 4}
    samples = len(client.post("/v1/audio/speech", json={**body, "response_format": "pcm"}).content) // 2
    r = client.post("/v1/audio/speech", json={**body, "response_format": fmt})
    path = tmp_path / f"speech.{fmt}"
    path.write_bytes(r.content)
    duration, start = probe(path)  # an MP3 starts after the encoder's delay, which its LAME header names
    assert abs(duration - start - samples / 24000) <= frame_samples / 24000
