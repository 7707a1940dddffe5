"""Batching through Ray Serve: concurrent requests share model calls, and each still gets exactly
its own speech. config/serve.yaml on a local cluster, the tiny offline models."""

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from ray import serve

from conftest import SHORT_TEXT, add_voice, serve_config, start_serve, stop_serve, use_tiny_models

pytestmark = pytest.mark.ray

APP = "tts"
TEXTS = ["Good morning to you.", "A longer sentence, with a pause or two, to fill more frames.", "Yes.",
         "How are you doing today?", "The weather is fine.", "Thank you, and good night."]


@pytest.fixture(scope="module")
def base_url(offline_models, tmp_path_factory):
    config = serve_config(tmp_path_factory.mktemp("batching-store"))
    # No wait for company: requests meet because they queue while the model is busy.
    use_tiny_models(config, offline_models, cpu_threads=2, max_batch_size=8, batch_wait_timeout_s=0)
    yield start_serve(config)
    stop_serve()


@pytest.fixture(scope="module")
def http(base_url, short_wav):
    with httpx.Client(base_url=base_url, timeout=300) as client:
        add_voice(client, "bob", short_wav, SHORT_TEXT)
        yield client


def batch_sizes() -> dict[int, int]:
    return serve.get_deployment_handle("Synthesizer", APP).batch_sizes.remote().result()


def speak(http, text, seed, **knobs):
    r = http.post("/v1/audio/speech", json={"voice": "bob", "input": text, "seed": seed, "response_format": "pcm",
                                            **knobs})
    assert r.status_code == 200, r.text
    return np.frombuffer(r.content, dtype=np.int16).astype(np.int32)


def test_concurrent_requests_share_model_calls_and_each_gets_its_own_speech(http):
    alone = [speak(http, text, seed) for seed, text in enumerate(TEXTS)]  # one at a time: batches of 1
    before = batch_sizes()
    assert set(before) == {1}
    with ThreadPoolExecutor(len(TEXTS) + 1) as pool:
        # A slow one-segment request (seconds on this CPU, other knobs: always a model call of its
        # own) keeps the model busy while the others arrive, however slowly this machine sends them.
        # They queue and its next call takes them together; with no wait for company, that is the
        # only way they can meet. Arriving before it starts, they share its batch instead, in a
        # model call of their own knobs: the sizes seen are the same.
        busy = pool.submit(speak, http, "A slow sentence that keeps the model busy for a while.", 0,
                           nfe_step=128, speed=0.5)
        time.sleep(0.5)
        together = list(pool.map(lambda job: speak(http, job[1], job[0]), enumerate(TEXTS)))
        busy.result()
    seen = {size: n - before.get(size, 0) for size, n in batch_sizes().items() if n > before.get(size, 0)}
    assert max(seen) > 1, seen  # batched: some model call sampled several requests' segments
    assert sum(size * n for size, n in seen.items()) == len(TEXTS) + 1  # one single-segment request each
    for solo, batched in zip(alone, together):
        assert len(batched) == len(solo)
        assert np.abs(batched - solo).max() <= 2  # 16-bit samples: float rounding at most
        assert np.abs(solo).max() > 1000  # speech, not silence


def test_streamed_speech_arrives_in_pieces_the_same_each_time(http):
    body = {"voice": "bob", "input": "One sentence first. Then a second one. A third to end it all.",
            "response_format": "pcm", "seed": 5}
    whole = np.frombuffer(http.post("/v1/audio/speech", json=body).content, dtype=np.int16)
    streams = []
    for _ in range(2):
        with http.stream("POST", "/v1/audio/speech", json={**body, "stream": True}) as r:
            assert r.status_code == 200
            chunks = list(r.iter_raw())
        assert len(chunks) >= 2
        streams.append(np.frombuffer(b"".join(chunks), dtype=np.int16).astype(np.int32))
    assert len(streams[0]) == len(streams[1]) and np.abs(streams[0] - streams[1]).max() <= 2  # same seed
    # The whole response is one segment, the stream three (a short first one): the same text at the
    # voice's pace, less a cross-fade per extra seam (0.3 s of 3.4 s here).
    assert len(streams[0]) == pytest.approx(len(whole), rel=0.2)


def segments_sampled_once_settled() -> int:
    """Segments the replica has sampled, read once no more are being sampled."""
    last = -1
    while (now := sum(size * n for size, n in batch_sizes().items())) != last:
        last = now
        time.sleep(2)
    return now


def test_a_stream_whose_client_hangs_up_is_not_synthesized_further(http):
    ordinals = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"]
    text = " ".join(f"This is the {word} sentence of a long reading." for word in ordinals * 3)
    body = {"voice": "bob", "input": text, "response_format": "pcm", "seed": 2}
    start = segments_sampled_once_settled()
    with http.stream("POST", "/v1/audio/speech", json={**body, "stream": True}) as r:
        assert r.status_code == 200 and b"".join(r.iter_raw())
    planned = segments_sampled_once_settled() - start  # the whole stream: every segment
    with http.stream("POST", "/v1/audio/speech", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        next(r.iter_raw())  # the first sentence's audio; leaving the block hangs up
    hung_up = segments_sampled_once_settled() - start - planned
    # The segment in the model when the hang-up arrives still finishes; none after it starts.
    assert planned >= 5 and 1 <= hung_up <= 3, (planned, hung_up)
