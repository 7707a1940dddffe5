"""The ObjectStore contract, the same on a local directory and on a real S3 server (SeaweedFS)."""

import errno
import threading

import pytest

from speech_service.config import StoreSettings
from speech_service.errors import StoreUnavailable
from speech_service.storage import objects
from speech_service.storage.objects import LocalObjectStore, PreconditionFailed, S3ObjectStore, open_object_store


@pytest.fixture
def store(object_store):
    return object_store


def test_put_get_list_delete(store):
    etag = store.put("voices/alice/voice.json", b"{}")
    store.put("voices/alice/reference-1.wav", b"RIFF")
    store.put("jobs/j1.json", b"job")
    got = store.get("voices/alice/voice.json")
    assert (got.data, got.etag) == (b"{}", etag)
    assert store.list("voices/") == ["voices/alice/reference-1.wav", "voices/alice/voice.json"]
    assert store.list("voices/al") == store.list("voices/")
    assert store.list("") == ["jobs/j1.json", *store.list("voices/")]
    assert store.list("nothing/") == []
    store.delete("voices/alice/voice.json")
    store.delete("voices/alice/voice.json")  # a missing key is not an error
    with pytest.raises(KeyError):
        store.get("voices/alice/voice.json")
    assert store.list("voices/") == ["voices/alice/reference-1.wav"]


def test_etag_is_the_md5_on_both_stores(store):
    assert store.put("k", b"hello") == "5d41402abc4b2a76b9719d911017c592"


def test_conditional_create(store):
    store.put("rec", b"one", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put("rec", b"two", if_none_match=True)
    assert store.get("rec").data == b"one"


def test_conditional_replace(store):
    first = store.put("rec", b"one")
    second = store.put("rec", b"two", if_match=first)
    with pytest.raises(PreconditionFailed):
        store.put("rec", b"three", if_match=first)  # stale etag
    assert store.get("rec") == objects.StoredObject(b"two", second)
    with pytest.raises(PreconditionFailed):
        store.put("absent", b"x", if_match=first)  # nothing to replace


def _race(store, key, writers):
    """`writers` threads create `key` at once; return (winners, losers)."""
    barrier, wins, losses = threading.Barrier(writers), [], []

    def write(i):
        barrier.wait()
        try:
            store.put(key, f"writer {i}".encode(), if_none_match=True)
            wins.append(i)
        except PreconditionFailed:
            losses.append(i)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return wins, losses


def test_concurrent_conditional_creates_have_one_winner(store):
    for round_ in range(5):
        wins, losses = _race(store, f"race/{round_}", 6)
        assert len(wins) == 1 and len(losses) == 5
        assert store.get(f"race/{round_}").data == f"writer {wins[0]}".encode()


def test_s3_keys_live_under_the_prefix(s3_server, s3_env):
    import boto3

    bucket = s3_server.create_bucket()
    store = open_object_store(StoreSettings(kind="s3", bucket=bucket, prefix="/team/tts/"))
    store.put("voices/a/voice.json", b"{}")
    listed = boto3.client("s3", **s3_server.client_kwargs()).list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in listed["Contents"]] == ["team/tts/voices/a/voice.json"]
    assert store.list("voices/") == ["voices/a/voice.json"]


def test_s3_list_pages_through_more_than_1000_keys(s3_server, s3_env):
    store = S3ObjectStore(s3_server.create_bucket())
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: store.put(f"many/{i:04d}", b""), range(1005)))
    keys = store.list("many/")
    assert len(keys) == 1005 and keys[0] == "many/0000" and keys[-1] == "many/1004"


def test_missing_bucket_is_store_unavailable_named_in_the_log_only(s3_server, s3_env, caplog):
    store = S3ObjectStore("no-such-bucket", endpoint_url=s3_server.endpoint)
    with pytest.raises(StoreUnavailable) as raised:
        store.get("k")
    # The operator reads the bucket and endpoint in the log; a caller is told nothing of them.
    assert "no-such-bucket" in caplog.text and s3_server.endpoint in caplog.text
    assert "no-such-bucket" not in raised.value.message and "127.0.0.1" not in raised.value.message


def test_unreachable_s3_answers_store_unavailable_within_seconds(monkeypatch):
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    credentials = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}
    for key, value in credentials.items():
        monkeypatch.setenv(key, value)
    store = S3ObjectStore("bucket", endpoint_url=endpoint)
    for call in (lambda: store.get("k"), lambda: store.put("k", b"x", if_none_match=True), lambda: store.list("")):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="cannot be reached") as raised:
            call()
        assert endpoint not in raised.value.message
        assert time.monotonic() - started < 5


def test_settings_validate_the_store():
    assert StoreSettings().kind == "local"
    with pytest.raises(ValueError, match="bucket"):
        StoreSettings(kind="s3")
    with pytest.raises(ValueError):
        StoreSettings(kind="s3", bucket="b", aws_secret_access_key="never here")


def test_local_disk_errors_are_store_unavailable(tmp_path, monkeypatch):
    store = LocalObjectStore(tmp_path)
    store.put("voices/a/voice.json", b"old")

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(objects, "_write_atomic", disk_full)
    with pytest.raises(StoreUnavailable, match="No space left"):
        store.put("voices/a/voice.json", b"new", if_match=store.get("voices/a/voice.json").etag)
    assert store.get("voices/a/voice.json").data == b"old"


def test_the_s3_demo_profile_is_the_offline_profile_with_an_s3_store():
    from deployments.profiles import load_profile

    offline, s3 = load_profile("offline"), load_profile("offline-s3")
    store = s3["applications"][0]["args"].pop("store")
    offline["applications"][0]["args"].pop("store")
    assert s3 == offline
    assert StoreSettings.model_validate(store).kind == "s3" and store["endpoint_url"] == "http://127.0.0.1:8333"
