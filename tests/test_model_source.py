"""Model sources: local paths, and mirrors in a real S3 server (SeaweedFS) made by the mirror command,
pulled once per node, verified against the manifest, under a file lock."""

import fcntl
import hashlib
import json
import subprocess
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import boto3
import pytest

from speech_service.synthesis.engine import SynthesisEngine
from speech_service.weights.mirror import mirror
from speech_service.weights.source import VOCODER_FILES, SourceUnavailable, fetch_dir, fetch_file, pulled_record


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def bucket(s3_env) -> str:
    name = f"weights-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def manifest(bucket: str, prefix: str) -> dict:
    body = boto3.client("s3").get_object(Bucket=bucket, Key=f"{prefix}/manifest.json")["Body"].read()
    return json.loads(body)


def test_local_paths_and_missing_files(offline_models, tmp_path):
    assert fetch_file(str(offline_models["checkpoint"]), str(tmp_path)) == offline_models["checkpoint"]
    assert fetch_dir(str(offline_models["vocoder"]), str(tmp_path), ["config.yaml"]) == offline_models["vocoder"]
    with pytest.raises(SourceUnavailable):
        fetch_file(str(tmp_path / "nothing.safetensors"), str(tmp_path))
    with pytest.raises(SourceUnavailable):
        fetch_dir(str(tmp_path), str(tmp_path), ["config.yaml"])


def test_mirror_command_copies_a_directory_with_a_sha256_manifest(bucket, offline_models, tmp_path):
    source = tmp_path / "vocos"
    source.mkdir()
    for name in VOCODER_FILES:
        (source / name).write_bytes((offline_models["vocoder"] / name).read_bytes())
    (source / "extra").mkdir()
    (source / "extra" / "notes.txt").write_text("nested files keep their relative path")

    run = subprocess.run([sys.executable, "-m", "speech_service.weights.mirror", "mirror", str(source),
                          f"s3://{bucket}/mirrors/vocos/"], check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"s3://{bucket}/mirrors/vocos/manifest.json: 3 files" in run.stdout

    written = manifest(bucket, "mirrors/vocos")
    assert written["source"] == str(source)
    expected = {name: {"size": path.stat().st_size, "sha256": sha256(path)}
                for name, path in [(n, source / n) for n in [*VOCODER_FILES, "extra/notes.txt"]]}
    assert written["files"] == expected
    s3 = boto3.client("s3")
    for name, entry in expected.items():
        body = s3.get_object(Bucket=bucket, Key=f"mirrors/vocos/{name}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"]


def test_mirror_into_a_missing_bucket_fails_clearly(s3_env, offline_models):
    run = subprocess.run([sys.executable, "-m", "speech_service.weights.mirror", "mirror",
                          str(offline_models["checkpoint"]),
                          "s3://no-such-bucket-here/f5"], check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "bucket no-such-bucket-here" in run.stderr


def test_engine_loads_the_mirrored_tiny_checkpoint_downloading_once(bucket, offline_models, synth_settings, tmp_path):
    mirror(str(offline_models["checkpoint"]), f"s3://{bucket}/f5")
    mirror(str(offline_models["vocoder"]), f"s3://{bucket}/vocos")
    assert manifest(bucket, "f5")["files"] == {offline_models["checkpoint"].name: {
        "size": offline_models["checkpoint"].stat().st_size, "sha256": sha256(offline_models["checkpoint"])}}

    checkpoint = f"s3://{bucket}/f5/{offline_models['checkpoint'].name}"
    cache = tmp_path / "cache"
    settings = synth_settings.model_copy(update={"checkpoint": checkpoint, "vocoder": f"s3://{bucket}/vocos",
                                                 "cache_dir": str(cache)})
    engine = SynthesisEngine.load(settings)
    local = SynthesisEngine.load(synth_settings)
    for (name, a), (_, b) in zip(engine.model.state_dict().items(), local.model.state_dict().items()):
        assert (a == b).all(), name

    SynthesisEngine.load(settings)  # a second replica on this node: served from the verified cache
    assert len(pulled_record(str(cache), checkpoint)["downloads"]) == 1
    assert len(pulled_record(str(cache), f"s3://{bucket}/vocos")["downloads"]) == 1


def test_a_corrupted_cached_file_is_fetched_again(bucket, offline_models, tmp_path):
    mirror(str(offline_models["checkpoint"]), f"s3://{bucket}/f5")
    source = f"s3://{bucket}/f5/{offline_models['checkpoint'].name}"
    path = fetch_file(source, str(tmp_path))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    again = fetch_file(source, str(tmp_path))
    assert sha256(again) == sha256(offline_models["checkpoint"])
    assert len(pulled_record(str(tmp_path), source)["downloads"]) == 2

    path.write_bytes(bytes(data[:1000]))  # a truncated file
    assert sha256(fetch_file(source, str(tmp_path))) == sha256(offline_models["checkpoint"])
    assert len(pulled_record(str(tmp_path), source)["downloads"]) == 3


def test_an_object_that_does_not_match_its_manifest_is_refused_and_never_used(bucket, offline_models, tmp_path):
    mirror(str(offline_models["checkpoint"]), f"s3://{bucket}/f5")
    name = offline_models["checkpoint"].name
    good = offline_models["checkpoint"].read_bytes()
    boto3.client("s3").put_object(Bucket=bucket, Key=f"f5/{name}", Body=good[:-1] + bytes([good[-1] ^ 1]))

    with pytest.raises(SourceUnavailable, match="does not match its manifest"):
        fetch_file(f"s3://{bucket}/f5/{name}", str(tmp_path))
    entry = tmp_path / "s3" / bucket / "f5"
    assert not (entry / name).exists() and not (entry / f"{name}.part").exists()
    assert len(pulled_record(str(tmp_path), f"s3://{bucket}/f5")["downloads"]) == 0


def test_missing_bucket_manifest_or_file_is_source_unavailable(bucket, offline_models, tmp_path):
    with pytest.raises(SourceUnavailable, match="manifest.json"):
        fetch_file("s3://no-such-bucket-here/f5/model.safetensors", str(tmp_path))
    boto3.client("s3").upload_file(str(offline_models["checkpoint"]), bucket, "raw/model.safetensors")
    with pytest.raises(SourceUnavailable, match="speech_service.weights.mirror mirror"):  # uploaded without a manifest
        fetch_file(f"s3://{bucket}/raw/model.safetensors", str(tmp_path))
    mirror(str(offline_models["vocoder"]), f"s3://{bucket}/vocos")
    with pytest.raises(SourceUnavailable, match="no missing.bin in its manifest"):
        fetch_dir(f"s3://{bucket}/vocos", str(tmp_path), ["config.yaml", "missing.bin"])


def test_two_processes_on_one_node_download_once(bucket, offline_models, tmp_path):
    """Both start while the entry's lock is held (as by a replica mid-download); once it is released,
    one downloads and the other finds the verified files."""
    mirror(str(offline_models["vocoder"]), f"s3://{bucket}/vocos")
    source = f"s3://{bucket}/vocos"
    entry = tmp_path / "s3" / bucket / "vocos"
    entry.mkdir(parents=True)
    with open(entry / ".lock", "a+") as lock, ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pulls = [pool.submit(fetch_dir, source, str(tmp_path), VOCODER_FILES) for _ in range(2)]
        time.sleep(8)  # both processes start (spawn + imports) and wait on the lock
        assert not any(p.done() for p in pulls) and not (entry / "config.yaml").exists()
        fcntl.flock(lock, fcntl.LOCK_UN)
        paths = [p.result(timeout=120) for p in pulls]
    assert paths == [entry, entry]
    assert len(pulled_record(str(tmp_path), source)["downloads"]) == 1
    for name in VOCODER_FILES:
        assert sha256(entry / name) == sha256(offline_models["vocoder"] / name)
