"""Styles: a voice's further takes, each a clip with the transcript of exactly that clip, made once
at upload (the in-process app over the real Whisper), and the store's writes around them."""

import asyncio
import hashlib
import io
import json
import threading

import pytest
import soundfile as sf

from speech_service.errors import BadRequest, Conflict, NotFound, StoreUnavailable
from speech_service.storage.objects import ObjectStore
from speech_service.storage.voice_record import Take, style_named_in
from speech_service.storage.voices import VoiceConsent, VoiceRecord, VoiceStore, now, record_key, sha256, version

from conftest import SHORT_TEXT, PassThroughStore, espeak
from test_api import assert_error, make_client, upload

WHISPER_TEXT = "Please keep your voice down, the baby is asleep."


@pytest.fixture(scope="module")
def whisper_wav(speech_dir):
    return espeak(WHISPER_TEXT, speech_dir / "whispered.wav", "-v", "en+whisper")


@pytest.fixture
def client(tmp_path, backends, short_wav):
    with make_client(tmp_path, backends) as client:
        assert upload(client, "alice", short_wav, ref_text=SHORT_TEXT).status_code == 201
        yield client


def add_style(client, style, path, voice="alice", headers=None, **fields):
    with open(path, "rb") as f:
        return client.post(f"/v1/voices/{voice}/styles", data={"style": style, **fields},
                           files={"file": (path.name, f)}, headers=headers)


def clip_keys(objects, voice="alice"):
    return sorted(key for key in objects.list(f"voices/{voice}/") if key.endswith(".wav"))


def test_a_take_is_its_own_clip_with_its_own_transcript(client, backends, whisper_wav):
    before = backends.transcriptions
    r = add_style(client, "whisper", whisper_wav, ref_text=WHISPER_TEXT)
    assert r.status_code == 201, r.text
    take = r.json()["styles"]["whisper"]
    assert take["ref_text"] == WHISPER_TEXT and take["ref_text_source"] == "user" and not take["clipped"]
    assert backends.transcriptions == before  # a usable transcript came with it
    assert r.headers["ETag"] == client.get("/v1/voices/alice").headers["ETag"]

    audio = client.get("/v1/voices/alice/styles/whisper/audio")
    assert audio.headers["content-type"] == "audio/wav" and sha256(audio.content) == take["sha256"]
    data, rate = sf.read(io.BytesIO(audio.content))
    assert rate == 24000 and len(data) / rate == pytest.approx(take["duration_s"], abs=0.01)
    own = client.get("/v1/voices/alice/styles/default/audio").content
    assert own == client.get("/v1/voices/alice/audio").content != audio.content

    # The voice's own clip and transcript are unchanged beside it.
    voice = client.get("/v1/voices/alice").json()
    assert voice["ref_text"] == SHORT_TEXT and voice["styles"] == {"whisper": take}
    assert client.get("/v1/voices").json()["voices"][0]["styles"] == {"whisper": take}


@pytest.mark.slow  # Whisper transcribes a long clip
def test_a_long_take_is_clipped_and_its_clip_transcribed_once_instead_of_the_text_sent(tmp_path, backends,
                                                                                       short_wav, whisper_wav):
    with make_client(tmp_path, backends, limits={"max_clip_seconds": 1.5}) as client:
        assert upload(client, "alice", short_wav, ref_text="The quick brown fox.").status_code == 201
        before = backends.transcriptions
        r = add_style(client, "whisper", whisper_wav, ref_text=WHISPER_TEXT)
        assert r.status_code == 201, r.text
        take = r.json()["styles"]["whisper"]
        assert take["clipped"] and take["duration_s"] <= 1.55 < take["original_duration_s"]
        assert take["ref_text_source"] == "asr" and 0 < len(take["ref_text"]) < len(WHISPER_TEXT)
        assert take["ref_text"] != WHISPER_TEXT and "replaced" in r.json()["warnings"][0]
        assert backends.transcriptions == before + 1
        VoiceStore(client.objects).reference("alice", "whisper")
        assert client.get("/v1/voices/alice/styles/whisper/audio").status_code == 200
        assert client.get("/v1/voices/alice").json()["styles"]["whisper"] == take
        assert backends.transcriptions == before + 1  # transcribed at upload, never again


def test_an_unknown_style_is_a_400_naming_the_voices_styles(client, whisper_wav):
    add_style(client, "whisper", whisper_wav, ref_text=WHISPER_TEXT)
    store = VoiceStore(client.objects)
    with pytest.raises(BadRequest) as refused:
        store.reference("alice", "shout")
    assert refused.value.code == "unknown_style" and "default, whisper" in refused.value.message
    assert refused.value.param == "style" and refused.value.status_code == 400
    with pytest.raises(BadRequest):
        store.get("alice").take("shout")
    r = client.get("/v1/voices/alice/styles/shout/audio")  # a path that names no take
    assert_error(r, 404, "style_not_found")
    assert "default, whisper" in r.json()["error"]["message"]


def test_the_lookup_pairs_each_take_with_its_own_clip(client, whisper_wav):
    """What a speech request is spoken with: a take's sha256, transcript and language from the
    record, and its clip's bytes; None or 'default' is the voice's own."""
    add_style(client, "whisper", whisper_wav, ref_text=WHISPER_TEXT, language="en")
    store = VoiceStore(client.objects)
    for style in (None, "default", "whisper"):
        record, wav = store.reference("alice", style)
        take = record.take(style)
        assert sha256(wav) == take.sha256
        assert take.ref_text == (WHISPER_TEXT if style == "whisper" else SHORT_TEXT)
    assert store.get("alice").take("whisper").language == "en"


def test_refused_takes_are_refused_before_they_are_transcribed(tmp_path, backends, short_wav, whisper_wav):
    with make_client(tmp_path, backends, limits={"max_styles_per_voice": 1}) as client:
        upload(client, "alice", short_wav, ref_text=SHORT_TEXT)
        assert add_style(client, "whisper", whisper_wav, ref_text=WHISPER_TEXT).status_code == 201
        first, before = clip_keys(client.objects), backends.transcriptions
        assert_error(add_style(client, "whisper", whisper_wav), 409, "style_exists")
        assert_error(add_style(client, "shout", whisper_wav), 409, "too_many_styles")
        assert_error(add_style(client, "default", whisper_wav), 400, "reserved_style_name")
        assert_error(add_style(client, "whisper", whisper_wav, voice="bob"), 404, "voice_not_found")
        assert_error(add_style(client, "no spaces", whisper_wav), 400, "invalid_style_name")
        assert_error(add_style(client, "whisper", whisper_wav, headers={"If-Match": '"stale"'}, overwrite="true"),
                     412, "precondition_failed")
        assert backends.transcriptions == before and clip_keys(client.objects) == first

        replaced = add_style(client, "whisper", short_wav, ref_text=SHORT_TEXT, overwrite="true")
        assert replaced.status_code == 201 and replaced.json()["styles"]["whisper"]["ref_text"] == SHORT_TEXT
        assert len(clip_keys(client.objects)) == 2  # the voice's and the new take's: the old take's is gone


def test_an_upload_to_a_take_has_the_upload_limit_not_the_json_one(client):
    r = client.post("/v1/voices/alice/styles", data={"style": "big"},
                    files={"file": ("big.wav", b"\0" * (1024 * 1024 + 1))})  # over limits.max_json_bytes
    assert_error(r, 400, "unsupported_audio")


def test_deleting_a_take_removes_its_clip_after_the_record_switched(client, whisper_wav):
    add_style(client, "whisper", whisper_wav, ref_text=WHISPER_TEXT)
    objects = Recording(client.objects)
    store = VoiceStore(objects)
    take_clip = next(key for key in clip_keys(client.objects) if "/take-whisper-" in key)
    store.delete_take("alice", "whisper")
    writes = [(op, key) for op, key in objects.calls if op != "get"]
    assert writes == [("put", record_key("alice")), ("delete", take_clip)]
    assert store.get("alice").styles == {} and take_clip not in client.objects.list("")
    assert_error(client.delete("/v1/voices/alice/styles/whisper"), 404, "style_not_found")
    assert_error(client.delete("/v1/voices/alice/styles/default"), 400, "reserved_style_name")

    add_style(client, "whisper", whisper_wav, ref_text=WHISPER_TEXT)
    failing = VoiceStore(FailingRecordWrites(client.objects))
    with pytest.raises(StoreUnavailable):
        failing.delete_take("alice", "whisper")
    record, wav = store.reference("alice", "whisper")  # a failed switch leaves the take whole
    assert record.take("whisper").sha256 == sha256(wav)
    assert client.delete("/v1/voices/alice/styles/whisper").status_code == 204
    assert client.delete("/v1/voices/alice").status_code == 204 and client.objects.list("") == []


def test_the_etag_follows_takes_and_lexicons(client, whisper_wav):
    first = client.get("/v1/voices/alice").headers["ETag"]
    assert_error(add_style(client, "whisper", whisper_wav, headers={"If-Match": '"other"'}), 412,
                 "precondition_failed")
    added = add_style(client, "whisper", whisper_wav, ref_text=WHISPER_TEXT, headers={"If-Match": first})
    assert added.status_code == 201 and added.headers["ETag"] != first
    patched = client.patch("/v1/voices/alice", json={"lexicons": ["names", "brands"]},
                           headers={"If-Match": added.headers["ETag"]})
    assert patched.status_code == 200 and patched.json()["lexicons"] == ["names", "brands"]
    assert patched.headers["ETag"] not in (first, added.headers["ETag"])
    assert patched.json()["styles"] == added.json()["styles"]  # a PATCH keeps the takes
    assert_error(client.delete("/v1/voices/alice/styles/whisper", headers={"If-Match": added.headers["ETag"]}),
                 412, "precondition_failed")
    assert client.patch("/v1/voices/alice", json={"lexicons": None}).json()["lexicons"] == []
    assert client.delete("/v1/voices/alice/styles/whisper", headers={"If-Match": "*"}).status_code == 204
    assert client.get("/v1/voices/alice").headers["ETag"] == first  # the same takes and lexicons: the same version


@pytest.mark.parametrize("lexicons", [["no spaces"], [f"l{i}" for i in range(17)]])
def test_a_patch_refuses_lexicon_names_that_are_not_names(client, lexicons):
    assert_error(client.patch("/v1/voices/alice", json={"lexicons": lexicons}), 422, "invalid_request")
    assert client.get("/v1/voices/alice").json()["lexicons"] == []


def test_a_lexicon_named_twice_is_kept_once_where_it_first_stands(client):
    assert client.patch("/v1/voices/alice", json={"lexicons": ["b", "a", "b"]}).json()["lexicons"] == ["b", "a"]


def test_a_take_drops_the_consent_given_for_the_other_clips_and_a_deleted_one_keeps_it(client, whisper_wav):
    given = client.post("/v1/voices/alice/consent", data={"method": "attested", "given_by": "Ada"})
    assert given.status_code == 201 and client.get("/v1/voices/alice").json()["consent"]
    assert add_style(client, "whisper", whisper_wav, ref_text=WHISPER_TEXT).json()["consent"] is None
    client.post("/v1/voices/alice/consent", data={"method": "attested", "given_by": "Ada"})
    assert client.delete("/v1/voices/alice/styles/whisper").status_code == 204
    assert client.get("/v1/voices/alice").json()["consent"]["method"] == "attested"


def test_consent_given_while_a_take_is_added_is_refused_and_stored_nowhere(client, whisper_wav):
    """The take lands between the consent's read of the voice and its naming: the consent was not
    given for that take's clip."""
    from speech_service.config import ConsentSettings, LimitSettings
    from speech_service.service.consent import ConsentDesk
    from speech_service.storage.consent import ConsentStore

    take = Take(**VoiceStore(client.objects).get("alice").take(None).model_dump())
    voices = VoiceStore(TakeAddedBeforeRecordWrite(
        client.objects, lambda: VoiceStore(client.objects).put_take("alice", "late", take, b"RIFF-late",
                                                                    overwrite=False, max_styles=16)))
    desk = ConsentDesk(voices, ConsentStore(client.objects), ConsentSettings(), LimitSettings())
    with pytest.raises(Conflict) as refused:
        asyncio.run(desk.give("alice", None, method="attested", given_by="Ada", statement=None, challenge_id=None,
                              recording=None, key=None))
    assert refused.value.code == "voice_changing"
    assert VoiceStore(client.objects).get("alice").consent is None
    assert client.get("/v1/voices/alice/consent").json()["records"] == []


# -- the store ---------------------------------------------------------------------------------------


def record(name="alice", wav=b"RIFF-own", text="Hello there."):
    return VoiceRecord(name=name, ref_text=text, ref_text_source="user", duration_s=1.0,
                       original_duration_s=1.0, clipped=False, sha256=sha256(wav), created_at=now())


def take_of(wav: bytes, text: str) -> Take:
    return Take(sha256=sha256(wav), ref_text=text, ref_text_source="user", duration_s=1.0, original_duration_s=1.0,
                clipped=False, created_at=now())


@pytest.fixture
def objs(object_store):
    return object_store


def test_racing_take_writes_leave_a_consistent_record(objs):
    """Writers replace one take and add others at once, readers beside them: every read pairs a
    take's transcript with its own clip, every take written lands, and once quiet only the clips
    the record names are left."""
    store = VoiceStore(objs)
    store.put(record(), b"RIFF-own", overwrite=False)
    stop, problems = threading.Event(), []

    def read():
        while not stop.is_set():
            try:
                rec, wav = store.reference("alice", "soft")
                if rec.take("soft").sha256 != sha256(wav) or rec.take("soft").ref_text != f"Soft {wav.decode()[-1]}.":
                    problems.append("torn")
            except BadRequest:  # not written yet
                continue
            except Conflict as exc:
                problems.append(exc.code)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    for round_ in range(8):
        barrier = threading.Barrier(3)

        def write(i, barrier=barrier, round_=round_):
            barrier.wait()
            if i < 2:
                wav = f"RIFF-{i}".encode()
                store.put_take("alice", "soft", take_of(wav, f"Soft {i}."), wav, overwrite=True, max_styles=16)
            else:
                wav = f"RIFF-other-{round_}".encode()
                store.put_take("alice", f"other{round_}", take_of(wav, "Other."), wav, overwrite=False, max_styles=16)

        writers = [threading.Thread(target=write, args=(i,)) for i in range(3)]
        for t in writers:
            t.start()
        for t in writers:
            t.join()
        rec = store.get("alice")
        assert set(rec.styles) == {"soft", *(f"other{r}" for r in range(round_ + 1))}
        named = json.loads(objs.get(record_key("alice")).data)
        assert clip_keys(objs) == sorted([named["clip"], *named["take_clips"].values()])
    stop.set()
    for t in readers:
        t.join()
    assert problems == []
    store.delete("alice")
    assert objs.list("voices/") == []


def test_overwriting_a_voice_drops_its_takes_and_their_clips(objs):
    store = VoiceStore(objs)
    store.put(record(), b"RIFF-own", overwrite=False)
    store.put_take("alice", "soft", take_of(b"RIFF-soft", "Soft."), b"RIFF-soft", overwrite=False, max_styles=16)
    store.put(record(wav=b"RIFF-new"), b"RIFF-new", overwrite=True)
    assert store.get("alice").styles == {} and len(clip_keys(objs)) == 1
    with pytest.raises(BadRequest):
        store.reference("alice", "soft")
    with pytest.raises(NotFound):
        store.put_take("bob", "soft", take_of(b"RIFF-soft", "Soft."), b"RIFF-soft", overwrite=False, max_styles=16)
    assert objs.list("voices/bob/") == []


def test_a_record_from_before_styles_loads_and_keeps_its_etag(objs):
    old = record()
    document = {k: v for k, v in old.model_dump(mode="json").items() if k not in ("styles", "lexicons")}
    clip = "voices/alice/reference-0123456789abcdef-00000000.wav"
    objs.put(clip, b"RIFF-own")
    objs.put(record_key("alice"), json.dumps({**document, "clip": clip}).encode())
    store = VoiceStore(objs)
    rec, wav = store.reference("alice")
    assert (rec.styles, rec.lexicons, wav) == ({}, [], b"RIFF-own")
    etag_before_styles = hashlib.sha256(json.dumps([old.sha256, old.ref_text, old.model]).encode()).hexdigest()[:16]
    assert version(rec) == f'"{etag_before_styles}"'  # clients' ETags stay good across the upgrade
    updated = store.update("alice", lambda r: r.model_copy(update={"consent": VoiceConsent(
        id="cns_1", method="attested", given_at=now())}))
    assert "take_clips" not in json.loads(objs.get(record_key("alice")).data) and updated.styles == {}


@pytest.mark.parametrize("instructions, expected", [
    ("Speak in a whisper.", "whisper"),
    ("WHISPER it, please", "whisper"),
    ("Sound very-excited about it, not just excited", "very-excited"),
    ("Whispered, not shouted", None),
    ("", None),
    ("calm (.*) whisper", "whisper"),
])
def test_the_style_an_instruction_names(instructions, expected):
    assert style_named_in(instructions, ["whisper", "excited", "very-excited", "calm_2"]) == expected


class Recording(PassThroughStore):
    def __init__(self, inner: ObjectStore):
        super().__init__(inner)
        self.calls = []

    def get(self, key):
        self.calls.append(("get", key))
        return self.inner.get(key)

    def put(self, key, data, **conditions):
        self.calls.append(("put", key))
        return self.inner.put(key, data, **conditions)

    def delete(self, key):
        self.calls.append(("delete", key))
        self.inner.delete(key)


class FailingRecordWrites(PassThroughStore):
    def put(self, key, data, **conditions):
        if key.endswith("/voice.json"):
            raise StoreUnavailable("the store is down")
        return self.inner.put(key, data, **conditions)


class TakeAddedBeforeRecordWrite(PassThroughStore):
    """`inner`, where `add` runs (once) just before the first conditional write of a record."""

    def __init__(self, inner: ObjectStore, add):
        super().__init__(inner)
        self.add = add

    def put(self, key, data, **conditions):
        if conditions.get("if_match") is not None and key.endswith("/voice.json") and self.add is not None:
            add, self.add = self.add, None
            add()
        return self.inner.put(key, data, **conditions)
