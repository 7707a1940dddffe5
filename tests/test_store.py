import pytest

from speech_service.errors import BadRequest, Conflict, NotFound
from speech_service.store import LocalVoiceStore, VoiceRecord, now, sha256


def record(name="alice", wav=b"RIFF-one", text="Hello there."):
    return VoiceRecord(name=name, ref_text=text, ref_text_source="user", duration_s=1.0,
                       original_duration_s=1.0, clipped=False, sha256=sha256(wav), created_at=now())


@pytest.fixture
def store(tmp_path):
    return LocalVoiceStore(tmp_path)


def test_put_get_list_delete(store, tmp_path):
    store.put(record(), b"RIFF-one", overwrite=False)
    assert store.get("alice").ref_text == "Hello there."
    assert store.reference("alice")[1] == b"RIFF-one"
    assert [r.name for r in store.list()] == ["alice"]
    assert (tmp_path / "voices/alice/voice.json").is_file()
    assert (tmp_path / "voices/alice/reference.wav").is_file()
    store.delete("alice")
    assert store.list() == [] and not (tmp_path / "voices/alice").exists()
    with pytest.raises(NotFound):
        store.delete("alice")


def test_existing_voice_needs_overwrite(store):
    store.put(record(), b"RIFF-one", overwrite=False)
    with pytest.raises(Conflict):
        store.put(record(wav=b"RIFF-two"), b"RIFF-two", overwrite=False)
    assert store.reference("alice")[1] == b"RIFF-one"
    store.put(record(wav=b"RIFF-two", text="Second."), b"RIFF-two", overwrite=True)
    assert store.reference("alice")[0].ref_text == "Second."


@pytest.mark.parametrize("name", ["../x", "a/b", "", "x" * 65, "with space", "dot.name"])
def test_rejects_unsafe_names(store, name, tmp_path):
    with pytest.raises(BadRequest):
        store.get(name)
    with pytest.raises(BadRequest):
        store.put(record(name=name), b"RIFF", overwrite=True)
    assert not (tmp_path.parent / "x").exists()


def test_a_clip_without_its_record_is_no_voice(store, tmp_path):
    (tmp_path / "voices/ghost").mkdir(parents=True)
    (tmp_path / "voices/ghost/reference.wav").write_bytes(b"orphan")
    assert store.list() == []
    with pytest.raises(NotFound):
        store.get("ghost")


def test_record_and_clip_that_disagree_are_never_paired(store, tmp_path):
    store.put(record(), b"RIFF-one", overwrite=False)
    (tmp_path / "voices/alice/reference.wav").write_bytes(b"RIFF-other")  # e.g. a crash between writes
    with pytest.raises(Conflict):
        store.reference("alice")


def test_failed_write_leaves_the_old_voice_whole(store, tmp_path, monkeypatch):
    store.put(record(), b"RIFF-one", overwrite=False)
    import speech_service.store as store_module

    real = store_module._write_atomic
    def failing(path, data):
        if path.name == "voice.json":
            raise OSError("disk full")
        real(path, data)
    monkeypatch.setattr(store_module, "_write_atomic", failing)
    with pytest.raises(OSError):
        store.put(record(wav=b"RIFF-two", text="New."), b"RIFF-two", overwrite=True)
    # The old voice stands whole: its record and its own clip.
    rec, wav = store.reference("alice")
    assert (rec.ref_text, wav) == ("Hello there.", b"RIFF-one")
    assert not [p for p in (tmp_path / "voices/alice").iterdir() if p.name.startswith(".")]
