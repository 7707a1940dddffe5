"""Uploaded audio, decoded as exactly one self-contained audio file (docs/ARCHITECTURE.md,
"Untrusted uploads")."""

from __future__ import annotations

import subprocess
import tempfile

import numpy as np

from speech_service.audio import SAMPLE_RATE
from speech_service.errors import BadRequest, Unprocessable

# Containers an upload may be, each recognised by its own signature, and the ffmpeg demuxer forced
# for it. Uploads are untrusted: ffmpeg's probing would also open playlists (HLS), manifests (DASH),
# concat lists and other demuxers that read further files or URLs named inside the bytes, so the
# demuxer is never probed, only the uploaded file may be opened (`-protocol_whitelist file`), and
# anything else is refused before ffmpeg starts. docs/ARCHITECTURE.md, "Untrusted uploads".
UPLOAD_CONTAINERS = {
    "wav": "WAV (RIFF/RF64)", "aiff": "AIFF", "flac": "FLAC", "mp3": "MP3", "aac": "AAC (ADTS)",
    "ogg": "Ogg (Vorbis, Opus, FLAC)", "mov": "MP4/M4A/MOV", "matroska": "WebM/Matroska",
}
# Demuxer options beyond the defaults that keep a container to its own bytes.
_DEMUXER_OPTIONS = {"mov": ["-enable_drefs", "0"]}  # MP4 data references name external files


# Real files carry one or two ID3 tags (Content Credentials add one); more than this is no audio file.
MAX_ID3_TAGS = 16


def _after_id3(data: bytes) -> int | None:
    """Where the audio starts after any ID3v2 tags (MP3, and some FLAC and AAC files, start with
    one), or None past MAX_ID3_TAGS: a file of many empty tags costs no more than a plain one."""
    at = 0
    for _ in range(MAX_ID3_TAGS + 1):
        if len(data) - at < 10 or data[at:at + 3] != b"ID3":
            return at
        b6, b7, b8, b9 = data[at + 6:at + 10]
        size = (b6 & 0x7F) << 21 | (b7 & 0x7F) << 14 | (b8 & 0x7F) << 7 | (b9 & 0x7F)  # synchsafe: 7 bits a byte
        at += 10 + size + (10 if data[at + 5] & 0x10 else 0)
    return None


def _mpeg_audio(head: bytes) -> str | None:
    """'mp3' or 'aac' for an MPEG audio frame header (MP3 frame or ADTS), else None."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    layer = (head[1] >> 1) & 3
    if layer == 0:
        return "aac" if head[1] & 0xF6 == 0xF0 else None  # ADTS: 12-bit sync, layer 00
    version, bitrate = (head[1] >> 3) & 3, head[2] >> 4
    return "mp3" if version != 1 and bitrate != 15 and (head[2] >> 2) & 3 != 3 else None


def sniff_container(data: bytes) -> str | None:
    """The upload's container (a key of UPLOAD_CONTAINERS) from its first bytes, or None."""
    if data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"FORM" and data[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if data[4:8] == b"ftyp":
        return "mov"
    start = _after_id3(data)
    if start is None:
        return None
    head = data[start:start + 4]
    if head == b"fLaC":
        return "flac"
    # Tags, then something: mp3 (encoders pad after the tag). Nothing but tags is no audio file.
    return _mpeg_audio(head) or ("mp3" if 0 < start < len(data) else None)


def _what_it_looks_like(data: bytes) -> str:
    if data.startswith(b"ID3"):
        return f"ID3 tags with no audio after them (or more than {MAX_ID3_TAGS} tags)"
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    for mark, what in ((b"#extm3u", "an HLS/M3U playlist"), (b"ffconcat", "an ffmpeg concat list"),
                       (b"file ", "an ffmpeg concat list"), (b"<?xml", "an XML document"),
                       (b"<mpd", "a DASH manifest"), (b"[playlist]", "a PLS playlist")):
        if head.startswith(mark):
            return "a DASH manifest" if b"<mpd" in head else what
    try:
        data[:512].decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "no audio container the service reads"


def decode(data: bytes, *, max_seconds: float, timeout_s: float = 30.0) -> np.ndarray:
    """Decode an uploaded file to mono float32 at 24 kHz: exactly one self-contained audio file of
    UPLOAD_CONTAINERS, within `timeout_s` of wall-clock time."""
    if not data:
        raise BadRequest("The uploaded file is empty.", code="empty_audio", param="file")
    container = sniff_container(data)
    if container is None:
        accepted = ", ".join(UPLOAD_CONTAINERS.values())
        raise BadRequest(f"The uploaded file is {_what_it_looks_like(data)}, not an audio file the service "
                         f"reads ({accepted}).", code="unsupported_audio", param="file")
    # A temporary file, not a pipe: MP4/M4A keep their index at the end and need seeking.
    with tempfile.NamedTemporaryFile(suffix=".upload") as f:
        f.write(data)
        f.flush()
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-protocol_whitelist", "file", "-f", container,
               *_DEMUXER_OPTIONS.get(container, []), "-i", f"file:{f.name}", "-map", "0:a:0",
               "-t", str(max_seconds + 1), "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "pipe:1"]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:  # run() has killed ffmpeg
            raise Unprocessable(f"Decoding the uploaded file took longer than {timeout_s:g} s; send a "
                                "shorter or plainer file.", code="decode_timeout", param="file") from None
    samples = np.frombuffer(proc.stdout, dtype=np.float32)
    if proc.returncode != 0 or samples.size == 0:
        raise BadRequest(f"The uploaded file looks like {UPLOAD_CONTAINERS[container]} but holds no audio "
                         "that could be decoded.", code="undecodable_audio", param="file")
    if samples.size > max_seconds * SAMPLE_RATE:
        raise Unprocessable(
            f"The reference audio is longer than the {max_seconds:g} s limit.", code="audio_too_long", param="file"
        )
    return samples.copy()
