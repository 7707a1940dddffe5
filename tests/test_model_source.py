import boto3
import pytest

from speech_service.engine import SynthesisEngine
from speech_service.model_source import SourceUnavailable, fetch_dir, fetch_file


def test_local_paths_and_missing_files(offline_models, tmp_path):
    assert fetch_file(str(offline_models["checkpoint"]), str(tmp_path)) == offline_models["checkpoint"]
    assert fetch_dir(str(offline_models["vocoder"]), str(tmp_path), ["config.yaml"]) == offline_models["vocoder"]
    with pytest.raises(SourceUnavailable):
        fetch_file(str(tmp_path / "nothing.safetensors"), str(tmp_path))
    with pytest.raises(SourceUnavailable):
        fetch_dir(str(tmp_path), str(tmp_path), ["config.yaml"])


def test_engine_loads_weights_mirrored_in_s3(s3_env, offline_models, synth_settings, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="weights")
    s3.upload_file(str(offline_models["checkpoint"]), "weights", "f5/tiny.safetensors")
    for name in ("config.yaml", "pytorch_model.bin"):
        s3.upload_file(str(offline_models["vocoder"] / name), "weights", f"vocos/{name}")

    settings = synth_settings.model_copy(update={"checkpoint": "s3://weights/f5/tiny.safetensors",
                                                 "vocoder": "s3://weights/vocos", "cache_dir": str(tmp_path)})
    engine = SynthesisEngine.load(settings)
    local = SynthesisEngine.load(synth_settings)
    for (name, a), (_, b) in zip(engine.model.state_dict().items(), local.model.state_dict().items()):
        assert (a == b).all(), name
    assert (tmp_path / "s3/weights/f5/tiny.safetensors").is_file()  # cached for the next replica

    with pytest.raises(SourceUnavailable):
        fetch_file("s3://weights/f5/missing.safetensors", str(tmp_path))
