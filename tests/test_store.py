"""The voice store, the same on a local directory and on a real S3 server (SeaweedFS)."""

import errno
import json
import threading

import pytest

from speech_service.errors import BadRequest, Conflict, NotFound, StoreUnavailable, VersionMismatch
from speech_service.storage import objects
from speech_service.storage.objects import LocalObjectStore, ObjectStore
from speech_service.storage.voices import (
    ANY_VERSION,
    VoiceConsent,
    VoiceRecord,
    VoiceStore,
    now,
    record_key,
    sha256,
    version,
)

from conftest import PassThroughStore


def record(name="alice", wav=b"RIFF-one", text="Hello there."):
    return VoiceRecord(name=name, ref_text=text, ref_text_source="user", duration_s=1.0,
                       original_duration_s=1.0, clipped=False, sha256=sha256(wav), created_at=now())


@pytest.fixture
def objs(object_store):
    return object_store


@pytest.fixture
def store(objs):
    return VoiceStore(objs)


def clip_of(objs, name="alice"):
    return json.loads(objs.get(record_key(name)).data)["clip"]


def test_put_get_list_delete(store, objs):
    store.put(record(), b"RIFF-one", overwrite=False)
    assert store.get("alice").ref_text == "Hello there."
    assert store.reference("alice")[1] == b"RIFF-one"
    assert [r.name for r in store.list()] == ["alice"]
    clip = clip_of(objs)
    assert clip.startswith(f"voices/alice/reference-{sha256(b'RIFF-one')[:16]}-") and clip.endswith(".wav")
    assert objs.list("voices/") == sorted([clip, "voices/alice/voice.json"])
    store.delete("alice")
    assert store.list() == [] and objs.list("") == []
    with pytest.raises(NotFound):
        store.delete("alice")
    with pytest.raises(NotFound):
        store.reference("alice")


def test_local_delete_leaves_no_directory(tmp_path):
    store = VoiceStore(LocalObjectStore(tmp_path))
    store.put(record(), b"RIFF-one", overwrite=False)
    store.delete("alice")
    assert not (tmp_path / "voices/alice").exists()


def test_existing_voice_needs_overwrite(store, objs):
    store.put(record(), b"RIFF-one", overwrite=False)
    with pytest.raises(Conflict) as lost:
        store.put(record(wav=b"RIFF-two"), b"RIFF-two", overwrite=False)
    assert lost.value.code == "voice_exists"
    assert store.reference("alice")[1] == b"RIFF-one"
    assert len(objs.list("voices/alice/")) == 2  # the refused clip did not stay behind
    store.put(record(wav=b"RIFF-two", text="Second."), b"RIFF-two", overwrite=True)
    rec, wav = store.reference("alice")
    assert (rec.ref_text, wav) == ("Second.", b"RIFF-two")
    assert objs.list("voices/alice/") == sorted([clip_of(objs), "voices/alice/voice.json"])  # old clip gone


def test_replacing_with_the_same_audio_keeps_a_clip(store, objs):
    for text in ("One.", "Two.", "Three."):
        store.put(record(text=text), b"RIFF-one", overwrite=True)
    assert store.reference("alice")[0].ref_text == "Three."
    assert objs.list("voices/alice/") == sorted([clip_of(objs), "voices/alice/voice.json"])


def test_update_keeps_the_clip_and_applies_to_the_newest_record(store, objs):
    store.put(record(), b"RIFF-one", overwrite=False)
    clip = clip_of(objs)
    updated = store.update("alice", lambda r: r.model_copy(update={"ref_text": "Fixed."}))
    assert updated.ref_text == "Fixed." and store.reference("alice") == (updated, b"RIFF-one")
    assert clip_of(objs) == clip
    with pytest.raises(NotFound):
        store.update("bob", lambda r: r)


@pytest.mark.parametrize("name", ["../x", "a/b", "", "x" * 65, "with space", "dot.name"])
def test_rejects_unsafe_names(store, objs, name):
    with pytest.raises(BadRequest):
        store.get(name)
    with pytest.raises(BadRequest):
        store.put(record(name=name), b"RIFF", overwrite=True)
    assert objs.list("") == []


def test_a_clip_without_its_record_is_no_voice(store, objs):
    objs.put("voices/ghost/reference-0123456789abcdef-00000000.wav", b"orphan")
    assert store.list() == []
    with pytest.raises(NotFound):
        store.get("ghost")


def test_a_record_from_before_content_addressed_clips_still_reads(tmp_path):
    objs = LocalObjectStore(tmp_path)
    objs.put("voices/alice/reference.wav", b"RIFF-one")
    objs.put("voices/alice/voice.json", record().model_dump_json().encode())
    store = VoiceStore(objs)
    assert store.reference("alice")[1] == b"RIFF-one"
    store.put(record(wav=b"RIFF-two"), b"RIFF-two", overwrite=True)
    assert store.reference("alice")[1] == b"RIFF-two" and "voices/alice/reference.wav" not in objs.list("")


def test_record_and_clip_that_disagree_are_never_paired(store, objs):
    store.put(record(), b"RIFF-one", overwrite=False)
    objs.put(clip_of(objs), b"RIFF-other")  # e.g. edited by hand
    with pytest.raises(Conflict) as refused:
        store.reference("alice")
    assert refused.value.code == "voice_changing"


def test_failed_record_write_leaves_the_old_voice_whole(tmp_path, monkeypatch):
    objs = LocalObjectStore(tmp_path)
    store = VoiceStore(objs)
    store.put(record(), b"RIFF-one", overwrite=False)
    real = objects._write_atomic

    def disk_full_for_records(path, data):
        if path.name == "voice.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(objects, "_write_atomic", disk_full_for_records)
    with pytest.raises(StoreUnavailable):
        store.put(record(wav=b"RIFF-two", text="New."), b"RIFF-two", overwrite=True)
    rec, wav = store.reference("alice")
    assert (rec.ref_text, wav) == ("Hello there.", b"RIFF-one")
    assert not [p for p in (tmp_path / "voices/alice").iterdir() if p.name.startswith(".") and p.name != ".lock"]


def test_racing_creates_have_one_winner_and_leave_one_clip(store, objs):
    for round_ in range(5):
        name = f"v{round_}"
        barrier, outcomes = threading.Barrier(3), []

        def create(i, name=name, barrier=barrier, outcomes=outcomes):
            wav = f"RIFF-{i}".encode()
            barrier.wait()
            try:
                store.put(record(name=name, wav=wav, text=f"Text {i}."), wav, overwrite=False)
                outcomes.append(("won", i))
            except Conflict as exc:
                outcomes.append((exc.code, i))

        threads = [threading.Thread(target=create, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(o for o, _ in outcomes) == ["voice_exists", "voice_exists", "won"]
        winner = next(i for o, i in outcomes if o == "won")
        rec, wav = store.reference(name)
        assert (rec.ref_text, wav) == (f"Text {winner}.", f"RIFF-{winner}".encode())
        assert objs.list(f"voices/{name}/") == sorted([clip_of(objs, name), f"voices/{name}/voice.json"])


@pytest.mark.slow  # racing writers
def test_racing_replaces_never_tear(store, objs):
    """Two writers replace one voice at once, with readers beside them: every read pairs a record
    with its own clip, and once quiet one clip is left, the one the record names."""
    store.put(record(wav=b"RIFF-0", text="Text 0."), b"RIFF-0", overwrite=False)
    clips = {i: f"RIFF-{i}".encode() for i in range(2)}
    stop, problems = threading.Event(), []

    def read():
        while not stop.is_set():
            try:
                rec, wav = store.reference("alice")
                if rec.sha256 != sha256(wav) or rec.ref_text != f"Text {wav.decode()[-1]}.":
                    problems.append("torn")
            except Conflict as exc:
                problems.append(exc.code)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    for _ in range(20):
        barrier = threading.Barrier(2)

        def write(i, barrier=barrier):
            barrier.wait()
            store.put(record(wav=clips[i], text=f"Text {i}."), clips[i], overwrite=True)

        writers = [threading.Thread(target=write, args=(i,)) for i in range(2)]
        for t in writers:
            t.start()
        for t in writers:
            t.join()
        rec, wav = store.reference("alice")
        assert rec.sha256 == sha256(wav) and rec.ref_text == f"Text {wav.decode()[-1]}."
        assert objs.list("voices/alice/") == sorted([clip_of(objs), "voices/alice/voice.json"])
    stop.set()
    for t in readers:
        t.join()
    assert problems == []


def test_a_voices_version_follows_its_clip_transcript_and_model():
    first = record()
    assert version(first).startswith('"') and version(first).endswith('"')
    for changed in (record(wav=b"RIFF-two"), record(text="Other words."), first.model_copy(update={"model": "m"})):
        assert version(changed) != version(first)
    consented = first.model_copy(update={"updated_at": now(), "consent": VoiceConsent(
        id="cns_1", method="attested", given_at=now())})
    assert version(consented) == version(first)  # what a transcript fix is written for did not change


class ReplacedBeforeRecordWrite(PassThroughStore):
    """`inner`, where the voice is replaced (by another store on the same objects) just before
    the first conditional write of a record: between a writer's read and its write."""

    def __init__(self, inner: ObjectStore, replace):
        super().__init__(inner)
        self.replace = replace

    def put(self, key, data, *, if_none_match=False, if_match=None):
        if if_match is not None and key.endswith("/voice.json") and self.replace is not None:
            replace, self.replace = self.replace, None
            replace()
        return self.inner.put(key, data, if_none_match=if_none_match, if_match=if_match)


@pytest.mark.parametrize("write", ["patch", "replace"])
def test_a_stale_version_fails_when_the_clip_is_replaced_between_the_read_and_the_write(objs, write):
    """The version is compared with each record the write re-reads after losing its conditional
    write, not only with the first: the fix stays off the clip that replaced the one it was for."""
    VoiceStore(objs).put(record(), b"RIFF-one", overwrite=False)
    read = version(VoiceStore(objs).get("alice"))
    second = record(wav=b"RIFF-two", text="Second clip.")
    store = VoiceStore(ReplacedBeforeRecordWrite(
        objs, lambda: VoiceStore(objs).put(second, b"RIFF-two", overwrite=True)))
    with pytest.raises(VersionMismatch) as refused:
        if write == "patch":
            store.update("alice", lambda r: r.model_copy(update={"ref_text": "Fixed for clip one."}), if_match={read})
        else:
            store.put(record(wav=b"RIFF-three", text="Third."), b"RIFF-three", overwrite=True, if_match={read})
    assert refused.value.status_code == 412 and version(second) in refused.value.message
    rec, wav = store.reference("alice")
    assert (rec.ref_text, wav) == ("Second clip.", b"RIFF-two")
    assert objs.list("voices/alice/") == sorted([clip_of(objs), "voices/alice/voice.json"])  # no clip left over


def test_writes_with_a_version_happen_only_to_that_version(store, objs):
    with pytest.raises(VersionMismatch):  # nothing to replace: no version matches, not even any
        store.put(record(), b"RIFF-one", overwrite=True, if_match={ANY_VERSION})
    assert store.names() == []
    store.put(record(), b"RIFF-one", overwrite=False)
    first = version(store.get("alice"))
    fixed = store.update("alice", lambda r: r.model_copy(update={"ref_text": "Fixed."}), if_match={first})
    with pytest.raises(VersionMismatch):
        store.delete("alice", if_match={first})
    store.put(record(wav=b"RIFF-two"), b"RIFF-two", overwrite=True, if_match={'"other"', version(fixed)})
    store.delete("alice", if_match={ANY_VERSION})
    assert store.names() == []
    with pytest.raises(NotFound):  # a voice that is gone is 404 whatever the condition
        store.delete("alice", if_match={first})
