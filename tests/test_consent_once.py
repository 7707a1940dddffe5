"""Consent exactly once: a challenge is taken by one answer alone, and no order of giving consent and
deleting (or replacing) the voice leaves a consent record unredacted after its voice, nor a voice
naming a record that is not there. docs/ARCHITECTURE.md, "Consent"."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_consent import ANOTHER_PHRASE, SPEAKER, make_client

from speech_service.config import ConsentSettings, JobSettings, LimitSettings
from speech_service.errors import NotFound, ServiceError
from speech_service.service.consent import ConsentDesk
from speech_service.service.voices import delete_voice
from speech_service.storage.consent import ConsentStore
from speech_service.storage.jobs import JobStore
from speech_service.storage.objects import ObjectStore
from speech_service.storage.voices import VoiceRecord, VoiceStore, now, sha256

from conftest import SHORT_TEXT, PassThroughStore, espeak
from test_api import assert_error, upload


class ReadTogether(PassThroughStore):
    """Until `key` is first written, every read of it waits until three readers have read it: three
    answers that really overlap, each holding the version the others hold before any of them writes."""

    key = None

    def __init__(self, inner):
        super().__init__(inner)
        self.barrier, self.written = threading.Barrier(3, timeout=30), False

    def get(self, key):
        found = self.inner.get(key)
        if key == self.key and not self.written:
            self.barrier.wait()
        return found

    def put(self, key, data, **conditions):
        self.written = self.written or key == self.key
        return self.inner.put(key, data, **conditions)


class Interrupted(PassThroughStore):
    """Runs `interruption` once, just before or just after (`when`) the first write of a key that
    starts with `prefix`: a delete or a replacement landing at that moment of a consent being given."""

    def __init__(self, inner, when, prefix, interruption):
        super().__init__(inner)
        self.when, self.prefix, self.interruption = when, prefix, interruption

    def put(self, key, data, **conditions):
        due = self.prefix is not None and key.startswith(self.prefix)
        if due:
            self.prefix = None  # once
        if due and self.when == "before":
            self.interruption()
        etag = self.inner.put(key, data, **conditions)
        if due and self.when == "after":
            self.interruption()
        return etag


# The races below are about who takes a challenge, not how well Whisper base hears espeak-ng read a
# random phrase (one in a full run missed the default bound): any hearing passes.
ANY_HEARING = {"max_wer": 1.0}


def desk_over(objects: ObjectStore, **consent) -> ConsentDesk:
    return ConsentDesk(VoiceStore(objects), ConsentStore(objects), ConsentSettings(**consent), LimitSettings())


def add_voice(objects: ObjectStore, name="alice", clip=b"a clip") -> None:
    VoiceStore(objects).put(VoiceRecord(name=name, ref_text=SHORT_TEXT, ref_text_source="user", duration_s=3.0,
                                        original_duration_s=3.0, clipped=False, sha256=sha256(clip),
                                        created_at=now()), clip, overwrite=True)


# -- a challenge answers once ----------------------------------------------------------------------

@pytest.mark.slow  # a voice, three uploads and a Whisper pass; the orderings below stay in the minute loop
def test_three_answers_at_once_to_one_challenge_make_one_consent(tmp_path, backends, short_wav, store_config):
    with make_client(tmp_path, backends, store=store_config, consent=ANY_HEARING) as client:
        assert upload(client, "alice", short_wav, ref_text=SHORT_TEXT).status_code == 201
        challenge = client.post("/v1/voices/alice/consent/challenge").json()
        recording = espeak(challenge["phrase"], tmp_path / "read.wav").read_bytes()
        together = threading.Barrier(3, timeout=30)

        def answer(_):
            together.wait()
            return client.post("/v1/voices/alice/consent", files={"file": ("read.wav", recording)},
                               data={"method": "spoken", "given_by": SPEAKER, "challenge_id": challenge["id"]})

        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(answer, range(3)))
        assert sorted(a.status_code for a in answers) == [201, 409, 409], [a.text for a in answers]
        [given] = [a.json() for a in answers if a.status_code == 201]
        for lost in (a for a in answers if a.status_code == 409):
            assert_error(lost, 409, "challenge_used")
            assert "POST /v1/voices/alice/consent/challenge" in lost.json()["error"]["message"]
        history = client.get("/v1/voices/alice/consent").json()
        assert history["current"] == given["id"] and [r["id"] for r in history["records"]] == [given["id"]]


@pytest.mark.slow  # a Whisper pass: `make test` runs it
def test_three_answers_that_read_the_challenge_together_make_one_consent(object_store, backends, tmp_path):
    add_voice(object_store)
    overlapping = ReadTogether(object_store)
    desk = desk_over(overlapping, **ANY_HEARING)
    challenge = desk.challenge("alice")
    recording = espeak(challenge.phrase, tmp_path / "read.wav").read_bytes()
    overlapping.key = f"consent/challenges/{challenge.id}.json"

    async def three_answers():
        return await asyncio.gather(*(
            desk.give("alice", backends.transcribe, method="spoken", given_by=SPEAKER, statement=None,
                      challenge_id=challenge.id, recording=recording, key=None) for _ in range(3)),
            return_exceptions=True)

    answers = asyncio.run(three_answers())
    given = [a for a in answers if not isinstance(a, BaseException)]
    assert len(given) == 1, answers
    assert sorted(a.code for a in answers if isinstance(a, ServiceError)) == ["challenge_used"] * 2, answers
    consents = ConsentStore(object_store)
    assert [r.id for r in consents.of_voice("alice")] == [given[0].id]
    assert VoiceStore(object_store).get("alice").consent.id == given[0].id


@pytest.mark.slow  # a Whisper pass: `make test` runs it
def test_a_challenge_answered_with_the_wrong_words_is_used_up(tmp_path, backends, short_wav):
    with make_client(tmp_path, backends) as client:
        assert upload(client, "alice", short_wav, ref_text=SHORT_TEXT).status_code == 201
        challenge = client.post("/v1/voices/alice/consent/challenge").json()

        def answer(text):
            recording = espeak(text, tmp_path / "read.wav").read_bytes()
            return client.post("/v1/voices/alice/consent", files={"file": ("read.wav", recording)},
                               data={"method": "spoken", "given_by": SPEAKER, "challenge_id": challenge["id"]})

        wrong = answer(ANOTHER_PHRASE)
        assert_error(wrong, 422, "consent_not_spoken")
        assert "used up: ask for a new one" in wrong.json()["error"]["message"]
        assert_error(answer(challenge["phrase"]), 409, "challenge_used")
        assert client.get("/v1/voices/alice/consent").json() == {"current": None, "records": []}


# -- consent and the voice's delete or replacement, in every order ---------------------------------

MOMENTS = {
    "the record lands": "consent/records/alice/",
    "the voice names it": "voices/alice/voice.json",
}


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.parametrize("interruption", ["delete", "replace"])
def test_no_order_of_consent_and_delete_leaves_a_record_unredacted(object_store, interruption, moment, when):
    add_voice(object_store)
    voices, consents = VoiceStore(object_store), ConsentStore(object_store)
    happen = {"delete": lambda: delete_voice(voices, JobStore(object_store, JobSettings()), consents, "alice"),
              "replace": lambda: add_voice(object_store, clip=b"another clip")}[interruption]
    desk = desk_over(Interrupted(object_store, when, MOMENTS[moment], happen))

    try:
        given = asyncio.run(desk.give("alice", None, method="attested", given_by=SPEAKER, statement=None,
                                      challenge_id=None, recording=None, key=None))
    except ServiceError as refused:
        assert refused.code == ("voice_not_found" if interruption == "delete" else "voice_changing")
        given = None

    records = {r.id: r for r in consents.of_voice("alice")}
    try:
        named = voices.get("alice").consent
    except NotFound:  # deleted: only hashes are left of its consent
        assert all(r.redacted_at and r.given_by.startswith("sha256:") for r in records.values()), records
        assert all(SPEAKER.encode() not in object_store.get(k).data for k in object_store.list(""))
    else:  # a voice names only a record that is there
        assert named is None or named.id in records
    if given is None:  # a consent refused leaves nothing of itself
        assert all(r.redacted_at for r in records.values()), records
    else:
        assert given.id in records
