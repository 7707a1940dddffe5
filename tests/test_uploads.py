"""Uploads are untrusted: each is decoded as exactly one self-contained audio file of the formats the
README lists, within a time bound, or refused with a 4xx; never as a playlist that opens files of
the server's."""

import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from speech_service import audio
from speech_service.audio import uploads
from speech_service.errors import BadRequest, Unprocessable

from conftest import SHORT_TEXT, convert, espeak, tiered
from test_api import assert_error, make_client

SR = audio.SAMPLE_RATE


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Speech lying on the server: beside the temporary files uploads are decoded from, and in a
    directory of its own. An upload that gets the service to read either has escaped."""
    name = f"planted-{uuid.uuid4().hex}"
    beside = Path(tempfile.gettempdir()) / f"{name}.wav"
    espeak("the secret password is swordfish", beside)
    elsewhere = convert(beside, tmp_path_factory.mktemp("secret") / f"{name}.mp3")
    yield {"beside": beside, "elsewhere": elsewhere}
    beside.unlink(missing_ok=True)


def hostile_uploads(planted) -> dict[str, bytes]:
    mp3 = planted["elsewhere"]
    hls = "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{}\n#EXT-X-ENDLIST\n"
    dash = (f'<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
            f'mediaPresentationDuration="PT3S"><Period><AdaptationSet mimeType="audio/mpeg">'
            f'<Representation id="a" bandwidth="128000"><BaseURL>file://{mp3}</BaseURL><SegmentBase/>'
            f'</Representation></AdaptationSet></Period></MPD>\n')
    return {
        "hls_path": hls.format(mp3).encode(),
        "hls_file_url": hls.format(f"file://{mp3}").encode(),
        "concat_relative": f"ffconcat version 1.0\nfile '{planted['beside'].name}'\n".encode(),
        "concat_plain": f"file '{planted['beside'].name}'\n".encode(),
        "dash_manifest": dash.encode(),
        "text": b"Hello, this is a plain text file and not audio.\n" * 10,
        "id3_then_playlist": b"ID3\x04\x00\x00\x00\x00\x00\x00" + hls.format(mp3).encode(),
    }


def test_the_attacks_work_on_a_probing_ffmpeg(planted, tmp_path):
    """The attacks are real: ffmpeg left to probe the bytes (as the service once did) decodes the
    server's file from the playlist and the concat list."""
    hostile = hostile_uploads(planted)
    for name in ("hls_path", "hls_file_url", "concat_relative"):
        path = Path(tempfile.gettempdir()) / f"{uuid.uuid4().hex}.upload"
        path.write_bytes(hostile[name])
        try:
            out = subprocess.run(["ffmpeg", "-nostdin", "-v", "quiet", "-i", str(path), "-f", "f32le", "pipe:1"],
                                 capture_output=True).stdout
        finally:
            path.unlink()
        assert len(out) > SR * 4, name  # a second of the planted speech or more


@pytest.mark.parametrize("kind", ["hls_path", "hls_file_url", "concat_relative", "concat_plain", "dash_manifest",
                                  "text", "id3_then_playlist"])
def test_hostile_bytes_are_refused(planted, kind):
    data = hostile_uploads(planted)[kind]
    with pytest.raises(BadRequest) as err:
        uploads.decode(data, max_seconds=600)
    assert err.value.code in ("unsupported_audio", "undecodable_audio") and err.value.param == "file"


def test_refusals_say_what_the_upload_is(planted):
    hostile = hostile_uploads(planted)
    for kind, words in [("hls_path", "HLS"), ("concat_relative", "concat list"), ("dash_manifest", "DASH"),
                        ("text", "text")]:
        with pytest.raises(BadRequest) as err:
            uploads.decode(hostile[kind], max_seconds=600)
        assert err.value.code == "unsupported_audio" and words in err.value.message, err.value.message
        assert "WAV" in err.value.message and "MP3" in err.value.message  # and what would be accepted


def test_hostile_uploads_create_no_voice(planted, tmp_path, backends):
    client = make_client(tmp_path, backends)
    for kind, data in hostile_uploads(planted).items():
        for filename in ("voice.m3u8", "voice.mp3", "voice.wav"):  # the name claims nothing either
            r = client.post("/v1/voices", data={"name": "stolen", "ref_text": SHORT_TEXT},
                            files={"file": (filename, data)})
            assert r.status_code == 400, (kind, filename, r.text)
            assert r.json()["error"]["code"] in ("unsupported_audio", "undecodable_audio")
    assert_error(client.post("/v1/voices", data={"name": "stolen"},
                             files={"file": ("a.m3u8", hostile_uploads(planted)["hls_path"])}),
                 400, "unsupported_audio")
    assert client.get("/v1/voices").json()["voices"] == []
    assert client.objects.list("") == []


# Every container the README promises, made by ffmpeg from espeak-ng speech: (suffix, ffmpeg options).
PROMISED = [(".wav", []), (".aiff", []), (".flac", []), (".mp3", []), (".mp3", ["-id3v2_version", "0"]),
            (".aac", ["-c:a", "aac"]), (".ogg", ["-c:a", "libvorbis"]), (".opus", ["-c:a", "libopus"]),
            (".m4a", ["-c:a", "aac"]), (".mp4", ["-c:a", "aac"]), (".webm", ["-c:a", "libopus"]),
            (".mka", ["-c:a", "flac"])]


@pytest.fixture(scope="module")
def promised(short_wav, tmp_path_factory) -> list[Path]:
    """espeak-ng speech in each promised container, made once."""
    folder = tmp_path_factory.mktemp("promised")
    return [convert(short_wav, folder / f"voice{i}{suffix}", *options) for i, (suffix, options) in enumerate(PROMISED)]


@pytest.fixture(scope="module")
def long_flac(tmp_path_factory) -> Path:
    """Ten minutes of tone at 48 kHz: more than a 50 ms bound decodes."""
    path = tmp_path_factory.mktemp("long") / "long.flac"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=220:duration=590",
                    "-ar", "48000", str(path)], check=True)
    return path


@pytest.mark.parametrize("suffix, options", tiered(PROMISED, fast={".wav", ".m4a"}),
                         ids=[f"{s}{'-' + o[-1] if o else ''}" for s, o in PROMISED])
def test_every_promised_format_decodes(short_wav, tmp_path, suffix, options):
    expected = len(uploads.decode(short_wav.read_bytes(), max_seconds=600))
    samples = uploads.decode(convert(short_wav, tmp_path / f"voice{suffix}", *options).read_bytes(), max_seconds=600)
    assert abs(len(samples) - expected) < 0.1 * SR  # codecs pad a little, never more
    assert np.max(np.abs(samples)) > 0.05  # speech, not silence


@pytest.mark.slow
def test_every_promised_format_uploads(promised, tmp_path, backends):
    client = make_client(tmp_path, backends)
    for i, src in enumerate(promised):
        r = client.post("/v1/voices", data={"name": f"v{i}", "ref_text": SHORT_TEXT},
                        files={"file": (src.name, src.read_bytes())})
        assert r.status_code == 201, (src.suffix, r.text)


@pytest.mark.slow  # ffmpeg writes a long file
def test_a_decode_past_its_bound_is_stopped(long_flac):
    started = time.monotonic()
    with pytest.raises(Unprocessable) as err:
        uploads.decode(long_flac.read_bytes(), max_seconds=600, timeout_s=0.05)
    assert err.value.code == "decode_timeout" and time.monotonic() - started < 5


@pytest.mark.slow  # ffmpeg writes a long file
def test_a_slow_decode_answers_422_and_stores_nothing(tmp_path, backends, long_flac):
    client = make_client(tmp_path, backends, limits={"decode_timeout_s": 0.05})
    r = client.post("/v1/voices", data={"name": "slow"}, files={"file": ("long.flac", long_flac.read_bytes())})
    assert_error(r, 422, "decode_timeout")
    assert client.objects.list("") == []


def test_a_real_file_with_a_misleading_name_still_uploads(short_wav, tmp_path, backends):
    """The bytes decide, not the file name the client sends."""
    client = make_client(tmp_path, backends)
    flac = convert(short_wav, tmp_path / "v.flac")
    r = client.post("/v1/voices", data={"name": "named", "ref_text": SHORT_TEXT},
                    files={"file": ("voice.m3u8", flac.read_bytes())})
    assert r.status_code == 201, r.text


def test_the_planted_file_is_speech(planted):
    """The planted file is what an escape would hand back, so its absence above means something."""
    assert len(uploads.decode(planted["beside"].read_bytes(), max_seconds=600)) > SR


@pytest.mark.parametrize("fmt", ["flac", "mp3"])
def test_speech_the_service_signed_uploads_as_a_voice(short_wav, fmt):
    """Content Credentials put a large ID3 tag before a FLAC or MP3 stream (sizes are synchsafe,
    7 bits a byte): the service's own output, its manifest inside, decodes as the audio it is."""
    from speech_service.config import ProvenanceSettings
    from speech_service.provenance.credentials import ContentCredentials, SpeechFacts

    wave = uploads.decode(short_wav.read_bytes(), max_seconds=60)
    signed = ContentCredentials(ProvenanceSettings()).embed(
        audio.encoding.encode(wave, fmt), fmt, SpeechFacts("v", "0" * 64, "r", None, "f5-tts"))
    assert signed[:3] == b"ID3" and uploads.sniff_container(signed) == fmt
    assert abs(len(uploads.decode(signed, max_seconds=60)) - len(wave)) < 0.1 * audio.SAMPLE_RATE
