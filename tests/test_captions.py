"""Captions and the quality check: the aligner on real speech with known word times, the map back
to the caller's characters, WebVTT/SRT read back by real parsers, and the check on real speech
and on the tiny model (whose output is noise)."""

import base64
import html
import io
import json
import time

import numpy as np
import pytest
import soundfile as sf
import srt
import webvtt
from fastapi.testclient import TestClient

from speech_service import audio
from speech_service.config import ServiceSettings
from speech_service.http.app import create_app
from speech_service.plans import Segment
from speech_service.service.listening import time_words
from speech_service.text import captions as subtitles
from speech_service.text.layout import layout
from speech_service.text.mapped import word_spans
from speech_service.text.segments import split_text
from speech_service.text.spoken import normalize_for_speech, speak
from speech_service.text.words import word_error_rate
from speech_service.transcription.whisper import resample_poly

from conftest import SHORT_TEXT, espeak
from test_api import assert_error, make_client, upload

SENTENCE = "Maria bought seven green apples at the market yesterday"


def spoken_words(words: list[str], gaps: list[float], tmp_path) -> tuple[np.ndarray, list[float], list[float]]:
    """espeak-ng speaks each word on its own; the words are joined with `gaps` of silence (the first
    gap before the first word). The audio at 24 kHz, and each word's true start and end."""
    pieces, starts, ends, at = [], [], [], 0
    for i, word in enumerate(words):
        wave, rate = sf.read(espeak(word, tmp_path / f"w{i}.wav"), dtype="float32")
        wave = resample_poly(wave, audio.SAMPLE_RATE, rate)
        loud = np.nonzero(np.abs(wave) > 0.01)[0]
        wave = wave[loud[0]:loud[-1] + 1]  # espeak's own lead-in and tail silence go
        silence = np.zeros(int(gaps[i] * audio.SAMPLE_RATE), np.float32)
        at += len(silence)
        starts.append(at / audio.SAMPLE_RATE)
        at += len(wave)
        ends.append(at / audio.SAMPLE_RATE)
        pieces += [silence, wave]
    pieces.append(np.zeros(int(0.3 * audio.SAMPLE_RATE), np.float32))
    return np.concatenate(pieces), starts, ends


def plan_segment(text: str) -> tuple[Segment, str]:
    """`text` through the one text pipeline as one segment with its spans; and what the model reads."""
    spoken = speak(layout(text))
    [spans] = word_spans(spoken, [spoken.text])
    return Segment(spoken.text, 0, spans), spoken.text


@pytest.mark.slow  # Whisper hears speech: seconds each
def test_the_aligner_times_real_speech_within_a_tenth_of_a_second(whisper, tmp_path):
    words = SENTENCE.split()
    gaps = [0.4, 0.15, 0.3, 0.2, 0.45, 0.1, 0.25, 0.35, 0.15]
    wave, starts, ends = spoken_words(words, gaps, tmp_path)
    segment, _ = plan_segment(SENTENCE)
    timed, wer = time_words(segment, whisper.listen(wave, "en"), len(wave) / audio.SAMPLE_RATE)

    assert wer <= 0.2
    errors = [abs(t.start - s) for t, s in zip(timed, starts)]
    assert np.median(errors) <= 0.10, (errors, timed)
    assert max(errors) <= 0.25, (errors, timed)
    assert max(abs(t.end - e) for t, e in zip(timed, ends)) <= 0.25
    assert all(t.heard for t in timed)
    assert [SENTENCE[a:b] for a, b in (t.span for t in timed)] == words


@pytest.mark.slow  # Whisper hears speech: seconds each
def test_clips_heard_in_one_window_keep_their_own_words_and_times(whisper, tmp_path):
    first, second = "the weather today is sunny".split(), "we will walk to the park".split()
    a, starts_a, _ = spoken_words(first, [0.3, 0.2, 0.3, 0.2, 0.25], tmp_path)
    b, starts_b, _ = spoken_words(second, [0.25, 0.3, 0.2, 0.35, 0.2, 0.15], tmp_path)
    heard_a, heard_b = whisper.listen_all([a, b], "en")
    for heard, words, starts, wave in ((heard_a, first, starts_a, a), (heard_b, second, starts_b, b)):
        segment, _ = plan_segment(" ".join(words))
        timed, wer = time_words(segment, heard, len(wave) / audio.SAMPLE_RATE)
        assert wer <= 0.25, (heard, words)
        assert max(abs(t.start - s) for t, s in zip(timed, starts) if t.heard) <= 0.25, (timed, starts)


def test_packing_fills_windows_and_gives_each_clip_its_words():
    from speech_service.transcription.heard import HeardWord, packed, split_heard

    rate = 100
    assert packed([1000, 1200, 300, 3500, 200], rate, window_s=28, gap_s=1) == [[0, 1, 2], [3], [4]]
    words = [HeardWord(" a", 0.5, 1.0), HeardWord(" b", 10.8, 11.4), HeardWord(" c", 12.0, 13.0)]
    assert split_heard(words, starts=[0.0, 11.0], durations=[10.0, 5.0]) == [
        [HeardWord(" a", 0.5, 1.0)], [HeardWord(" b", 0.0, 0.4), HeardWord(" c", 1.0, 2.0)]]


@pytest.mark.slow  # Whisper hears speech: seconds each
def test_normalised_spans_come_back_as_one_caption_on_the_callers_characters(whisper, tmp_path):
    text = "Dr. Smith paid $5.20 in the 1990s."
    segment, said = plan_segment(text)
    assert said == "Doctor Smith paid five dollars and twenty cents in the nineteen nineties."
    wave, _, _ = spoken_words(said.rstrip(".").split(), [0.3] + [0.12] * 11, tmp_path)
    from speech_service.service.listening import captions

    timed, wer = time_words(segment, whisper.listen(wave, "en"), len(wave) / audio.SAMPLE_RATE)
    words = captions(text, timed)
    assert [w.text for w in words] == ["Dr. Smith", "paid", "$5.20", "in", "the", "1990s"]
    assert all(text[w.text_start:w.text_end] == w.text for w in words)
    assert all(a.end <= b.start + 0.05 and a.start < a.end for a, b in zip(words, words[1:]))
    money = words[2]
    assert money.end - money.start > 1.0  # "five dollars and twenty cents": five words' time


def test_every_character_of_the_map_points_into_the_callers_text():
    text = "# Prices\n\n- milk costs $3\n2. eggs, 12 of them, at 10:30am on 2024-03-15\nCall 555-123-4567 & ask."
    spoken = speak(layout(text))
    assert spoken.text == normalize_for_speech(layout(text).text)
    segments = split_text(spoken.text, 40)
    spans = word_spans(spoken, segments)
    assert [len(s.split()) for s in segments] == [len(s) for s in spans]
    covered = [text[a:b] for per_segment in spans for a, b in per_segment]
    assert "$3" in covered and "10:30am" in covered and "2024-03-15" in covered and "555-123-4567" in covered
    assert all(0 <= a <= b <= len(text) for per_segment in spans for a, b in per_segment)
    starts = [a for per_segment in spans for a, _ in per_segment]
    assert starts == sorted(starts)  # the captions keep the caller's order


def test_word_error_rate_reads_numbers_as_words():
    assert word_error_rate("it costs five dollars and twenty cents", "It costs $5.20.") == 0
    assert word_error_rate("Doctor Smith arrived", "Dr. Smith arrived!") == 0
    assert word_error_rate("the quick brown fox", "the brown fox") == pytest.approx(0.25)
    assert word_error_rate("one two", "") == 1.0


@pytest.mark.slow  # Whisper hears speech: seconds each
@pytest.mark.parametrize("said, passes", [
    ("The weather today is sunny and warm, so we will walk to the park after lunch.", True),
    ("My brother plays the violin every evening in the kitchen.", False),  # another text
    ("The weather today is sunny and warm.", False),  # a clause dropped
])
def test_the_quality_check_on_real_speech(whisper, tmp_path, said, passes):
    expected = "The weather today is sunny and warm, so we will walk to the park after lunch."
    wave, rate = sf.read(espeak(said, tmp_path / "said.wav"), dtype="float32")
    wave = resample_poly(wave, audio.SAMPLE_RATE, rate)
    segment, _ = plan_segment(expected)
    _, wer = time_words(segment, whisper.listen(wave, "en"), len(wave) / audio.SAMPLE_RATE)
    assert (wer <= 0.35) is passes, wer


CAPTIONED = "Dr. Smith paid $5.20 in the 1990s. Then he left."


@pytest.fixture
def client(tmp_path, backends, short_wav):
    client = make_client(tmp_path, backends)
    assert upload(client, "alice", short_wav, ref_text=SHORT_TEXT).status_code == 201
    return client


def say(client, **body):
    return client.post("/v1/audio/speech", json={"voice": "alice", "input": CAPTIONED, "nfe_step": 2, "seed": 11,
                                                 "response_format": "wav", **body})


@pytest.mark.slow  # Whisper hears speech: seconds each
def test_a_whole_response_with_timestamps_is_json_with_its_audio_and_words(client):
    plain = say(client)
    r = say(client, timestamps="word")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    # No check, no retry: the same audio (the samples: each file has its own Content Credentials).
    assert np.array_equal(sf.read(io.BytesIO(base64.b64decode(body["audio"])), dtype="int16")[0],
                          sf.read(io.BytesIO(plain.content), dtype="int16")[0])
    wave, rate = sf.read(io.BytesIO(plain.content))
    assert body["duration"] == pytest.approx(len(wave) / rate, abs=0.01) and body["quality"] is None
    words = body["words"]
    assert [w["text"] for w in words] == ["Dr. Smith", "paid", "$5.20", "in", "the", "1990s", "Then", "he", "left"]
    assert all(CAPTIONED[w["text_start"]:w["text_end"]] == w["text"] for w in words)
    assert all(0 <= w["start"] <= w["end"] <= body["duration"] + 0.01 for w in words)
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    assert any(w["interpolated"] for w in words)  # the tiny model's noise: nothing is heard


@pytest.mark.slow  # Whisper hears speech: seconds each
def test_on_the_tiny_model_every_segment_fails_and_is_retried_with_new_seeds(client, backends):
    listened = backends.transcriber.listened
    started = time.monotonic()
    r = say(client, quality={"retries": 2, "max_wer": 0.3})
    assert r.status_code == 200, r.text
    quality = dict(part.split("=") for part in r.headers["x-speech-quality"].split("; "))
    assert quality["passed"] == "false" and quality["max_wer"] == "0.3"
    attempts = [int(a) for a in quality["attempts"].split(",")]
    assert attempts == [3] * len(attempts) and len(attempts) >= 1
    assert backends.transcriber.listened - listened == sum(attempts)
    assert "did not pass the quality check" in r.headers["x-speech-warning"]
    assert time.monotonic() - started < 120

    r = say(client, timestamps="word", quality={"retries": 1})
    report = r.json()["quality"]
    assert report["passed"] is False and r.json()["warnings"]
    for segment in report["segments"]:
        assert segment["attempts"] == 2 and len(set(segment["seeds"])) == 2 and segment["seeds"][0] == 11
        assert segment["wer"] > 0.3 and segment["passed"] is False


@pytest.mark.slow  # Whisper hears speech: seconds each
def test_require_fails_the_request_with_a_422_naming_the_segment(client):
    r = say(client, quality={"retries": 1, "require": True})
    assert_error(r, 422, "quality_check_failed")
    message = r.json()["error"]["message"]
    assert "Segment 0" in message and "2 attempts" in message and r.json()["error"]["param"] == "quality"


@pytest.mark.slow  # Whisper hears speech: seconds each
def test_the_operator_default_checks_every_request_unless_it_opts_out(tmp_path, backends, short_wav):
    client = make_client(tmp_path, backends, quality={"check_by_default": True, "retries": 0})
    assert upload(client, "alice", short_wav, ref_text=SHORT_TEXT).status_code == 201
    assert say(client).headers["x-speech-quality"].startswith("passed=false")
    assert "x-speech-quality" not in say(client, quality=False).headers


@pytest.mark.slow  # Whisper hears speech: seconds each
def test_a_stream_sends_each_segments_audio_then_its_timings_and_check(client):
    r = say(client, stream=True, stream_format="sse", timestamps="word", quality={"retries": 1})
    assert r.status_code == 200
    events = [json.loads(chunk.removeprefix("data: ")) for chunk in r.text.split("\n\n") if chunk]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "speech.audio.delta" and kinds[-1] == "speech.audio.done"
    timings = [e for e in events if e["type"] == "speech.audio.timestamps"]
    checks = [e for e in events if e["type"] == "speech.audio.quality"]
    assert len(timings) == len(checks) >= 2  # two sentences: a stream's first segment is one
    at = [n for n, kind in enumerate(kinds) if kind == "speech.audio.timestamps"]
    for before, timing in zip([-1, *at], at):  # each segment's timings after some of its own audio
        assert "speech.audio.delta" in kinds[before + 1:timing]
    words = [w for t in timings for w in t["words"]]
    assert [w["text"] for w in words] == ["Dr. Smith", "paid", "$5.20", "in", "the", "1990s", "Then", "he", "left"]
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    assert all(c["segment"]["attempts"] == 2 and c["warning"] for c in checks)

    raw = say(client, stream=True, timestamps="word")
    assert_error(raw, 400, "timestamps_need_events")


@pytest.mark.slow  # Whisper hears speech: seconds each
def test_a_required_check_ends_a_stream_with_an_error_event(client):
    r = say(client, stream=True, stream_format="sse", quality={"retries": 0, "require": True})
    assert r.status_code == 422  # the first segment fails before any audio: a plain error


@pytest.fixture
def job_client(tmp_path, backends, short_wav):
    settings = ServiceSettings.model_validate({"store": {"path": str(tmp_path / "store")}})
    with TestClient(create_app(settings, backends)) as client:  # `with`: the lifespan runs the jobs
        assert upload(client, "alice", short_wav, ref_text=SHORT_TEXT).status_code == 201
        yield client


def finished(client, job_id):
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(job)


def seconds(clock: str) -> float:
    """A WebVTT cue time ("00:01:02.345") in seconds (webvtt-py's own rounds to whole seconds)."""
    hours, minutes, secs = clock.split(":")
    return round(int(hours) * 3600 + int(minutes) * 60 + float(secs), 3)


@pytest.mark.slow  # Whisper hears speech: seconds each
def test_a_job_keeps_its_captions_as_json_webvtt_and_srt(job_client):
    body = {"voice": "alice", "input": CAPTIONED, "nfe_step": 2, "seed": 11, "response_format": "wav",
            "timestamps": "word", "quality": {"retries": 1}}
    job = finished(job_client, job_client.post("/v1/jobs", json=body).json()["id"])
    assert job["status"] == "succeeded", job
    assert job["captions_url"] == f"/v1/jobs/{job['id']}/captions"
    assert job["quality"]["passed"] is False and all(s["attempts"] == 2 for s in job["quality"]["segments"])

    words = job_client.get(job["captions_url"]).json()["words"]
    assert [w["text"] for w in words] == ["Dr. Smith", "paid", "$5.20", "in", "the", "1990s", "Then", "he", "left"]
    whole = say(job_client, timestamps="word", quality={"retries": 1}).json()
    assert whole["words"] == words  # the job is the whole response made durable

    vtt = job_client.get(job["captions_url"], params={"format": "vtt"})
    assert vtt.headers["content-type"].startswith("text/vtt")
    cues = webvtt.from_buffer(io.StringIO(vtt.text))
    assert [c.text for c in cues] == [w["text"] for w in words]
    assert [(seconds(c.start), seconds(c.end)) for c in cues] == [(w["start"], w["end"]) for w in words]
    subs = list(srt.parse(job_client.get(job["captions_url"], params={"format": "srt"}).text))
    assert [s.content for s in subs] == [w["text"] for w in words]
    assert [(s.start.total_seconds(), s.end.total_seconds()) for s in subs] == [(w["start"], w["end"]) for w in words]

    plain = job_client.post("/v1/jobs", json={**body, "timestamps": None, "quality": False}).json()
    plain = finished(job_client, plain["id"])
    assert plain["captions_url"] is None and plain["quality"] is None
    assert_error(job_client.get(f"/v1/jobs/{plain['id']}/captions"), 404, "captions_not_requested")
    assert job_client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert_error(job_client.get(job["captions_url"]), 404, "job_not_found")


@pytest.mark.slow  # Whisper hears speech: seconds each
def test_a_job_whose_required_check_fails_is_failed_with_its_reason(job_client):
    body = {"voice": "alice", "input": "Then he left.", "nfe_step": 2, "quality": {"retries": 0, "require": True}}
    job = finished(job_client, job_client.post("/v1/jobs", json=body).json()["id"])
    assert job["status"] == "failed" and job["error"]["code"] == "quality_check_failed" and job["attempts"] == 1


def test_a_request_may_not_ask_for_more_retries_than_the_operator_allows(tmp_path):
    client = make_client(tmp_path, None, quality={"retries": 1, "max_retries": 2})  # refused before any model
    r = say(client, quality={"retries": 3})
    assert_error(r, 422, "too_many_retries")
    assert "at most 2" in r.json()["error"]["message"]
    schema = client.get("/openapi.json").json()["components"]["schemas"]["QualityCheck"]
    assert {"type": "integer", "maximum": 2, "minimum": 0} in schema["properties"]["retries"]["anyOf"]
    with pytest.raises(ValueError, match="max_retries"):
        ServiceSettings.model_validate({"quality": {"retries": 3, "max_retries": 2}})


def test_subtitle_files_escape_and_keep_one_line_per_cue():
    from speech_service.schemas import Caption

    words = [Caption(text="a<b>&c", start=0.0, end=0.5, text_start=0, text_end=6),
             Caption(text="line\nbreak", start=3661.25, end=3662.0, text_start=7, text_end=17)]
    vtt = subtitles.to_vtt(words)
    assert "a&lt;b&gt;&amp;c" in vtt and "01:01:01.250 --> 01:01:02.000" in vtt
    # WebVTT escapes its markup characters; webvtt-py leaves the entities as they are
    assert [html.unescape(c.text) for c in webvtt.from_buffer(io.StringIO(vtt))] == ["a<b>&c", "line break"]
    assert [s.content for s in srt.parse(subtitles.to_srt(words))] == ["a<b>&c", "line break"]
