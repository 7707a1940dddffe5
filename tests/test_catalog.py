"""The lists clients read to fill their menus: OpenAI's `models.list()` through the openai SDK, and
the voices and models Open WebUI reads from an OpenAI-compatible TTS server.

Open WebUI's shapes are read from its `backend/open_webui/routers/audio.py`: `get_available_voices`
GETs `{TTS_OPENAI_API_BASE_URL}/audio/voices` and keeps `{voice["id"]: voice["name"] for voice in
data.get("voices", [])}`; `get_available_models` GETs `{base}/audio/models` and keeps
`data.get("models", [])`, a list of `{"id": ...}`. It sends no Authorization header for either.
"""

import httpx
import pytest
from fastapi.testclient import TestClient

from speech_service.config import ServiceSettings
from speech_service.http.app import create_app
from speech_service.storage.objects import LocalObjectStore
from speech_service.storage.voices import VoiceRecord, VoiceStore, now, sha256

from conftest import SHORT_TEXT, PassThroughStore, add_voice
from served import served_app

KEYS = [{"name": "app", "key": "sk-app", "scopes": ["speak"]}]
SERVED = pytest.mark.slow  # served over a loopback port, as clients reach it


def open_webui_voices(base_url: str) -> dict[str, str]:
    """What Open WebUI's `get_available_voices` makes of our answer (its own expression)."""
    response = httpx.get(f"{base_url}/audio/voices")
    response.raise_for_status()
    return {voice["id"]: voice["name"] for voice in response.json().get("voices", [])}


def open_webui_models(base_url: str) -> list[dict]:
    response = httpx.get(f"{base_url}/audio/models")
    response.raise_for_status()
    return response.json().get("models", [])


@SERVED
def test_the_openai_sdk_lists_the_models(tmp_path, backends):
    import openai  # here: collection imports every module, of the tiers that skip this one too

    with served_app(tmp_path / "store", backends, api_keys=KEYS) as url:
        models = list(openai.OpenAI(base_url=f"{url}/v1", api_key="sk-app").models.list())
        assert [m.id for m in models] == ["F5TTS_v1_Base", "f5-tts", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"]
        assert {m.object for m in models} == {"model"} and all(m.owned_by for m in models)
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-app", max_retries=0)
        assert sdk.models.retrieve("tts-1").id == "tts-1"  # client.models.retrieve: one card
        assert sdk.models.retrieve("F5TTS_v1_Base").model_dump()["languages"] == ["en", "zh"]
        try:
            sdk.models.retrieve("whisper-1")
            raise AssertionError("retrieved a model the service does not have")
        except openai.NotFoundError as exc:
            assert exc.code == "model_not_found" and "whisper-1" in exc.message
        try:
            openai.OpenAI(base_url=f"{url}/v1", api_key="guess", max_retries=0).models.list()
            raise AssertionError("listed without a valid key")
        except openai.AuthenticationError as exc:
            assert exc.status_code == 401
        with httpx.Client(base_url=url, headers={"Authorization": "Bearer sk-app"}) as http:
            assert [m["id"] for m in http.get("/v1/audio/models").json()["models"]] == [m.id for m in models]


@SERVED
def test_voices_are_listed_in_open_webuis_shape_and_kept_behind_a_key_unless_public(tmp_path, backends, short_wav):
    with served_app(tmp_path / "open", backends) as url:
        with httpx.Client(base_url=url, timeout=60) as http:
            for name in ("alice", "bob-2"):
                add_voice(http, name, short_wav, SHORT_TEXT)
        assert open_webui_voices(f"{url}/v1") == {"alice": "alice", "bob-2": "bob-2"}
    with served_app(tmp_path / "open", backends, api_keys=KEYS) as url:  # the same store, keys now
        assert httpx.get(f"{url}/v1/audio/voices").status_code == 401
        assert httpx.get(f"{url}/v1/audio/models").status_code == 401
        shown = httpx.get(f"{url}/v1/audio/voices", headers={"Authorization": "Bearer sk-app"}).json()
        assert shown == {"voices": [{"id": "alice", "name": "alice"}, {"id": "bob-2", "name": "bob-2"}]}
    with served_app(tmp_path / "open", backends, api_keys=KEYS, public_catalog=True) as url:
        assert open_webui_voices(f"{url}/v1") == {"alice": "alice", "bob-2": "bob-2"}
        assert httpx.get(f"{url}/v1/models").status_code == 401  # OpenAI's list keeps its key
        assert httpx.get(f"{url}/v1/voices").status_code == 401  # and the records theirs


class CountingReads(PassThroughStore):
    """`inner`, counting the objects read (`get`)."""

    reads = 0

    def get(self, key):
        self.reads += 1
        return self.inner.get(key)


def test_the_public_voice_list_reads_no_voice_record(tmp_path):
    """Anyone may ask for `/v1/audio/voices` with `public_catalog`: it lists names from the store's
    keys, so asking costs the same whatever the voices' records hold and however many there are."""
    objects = CountingReads(LocalObjectStore(tmp_path / "store"))
    store = VoiceStore(objects)
    names = [f"voice-{i:02}" for i in range(50)]
    for name in names:
        store.put(VoiceRecord(name=name, ref_text="Hello there.", ref_text_source="user", duration_s=1.0,
                              original_duration_s=1.0, clipped=False, sha256=sha256(b"RIFF"), created_at=now()),
                  b"RIFF", overwrite=False)
    settings = ServiceSettings.model_validate({"store": {"path": str(tmp_path / "store")}, "api_keys": KEYS,
                                               "public_catalog": True})
    client = TestClient(create_app(settings, backends=None, store=store))  # no model is called
    objects.reads = 0
    listed = client.get("/v1/audio/voices")
    assert listed.status_code == 200 and [v["id"] for v in listed.json()["voices"]] == names
    assert objects.reads == 0
