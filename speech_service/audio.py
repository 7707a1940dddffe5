"""Audio in and out: decode an upload with ffmpeg, prepare a reference clip, encode responses.

All audio inside the service is mono float32 at 24 kHz (F5-TTS's mel rate).
"""

from __future__ import annotations

import asyncio
import io
import struct
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import BadRequest, Unprocessable

SAMPLE_RATE = 24_000
HOP_LENGTH = 256  # samples per mel frame, F5's unit of output
FRAME_S = 0.01  # analysis frame for silence detection


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


def _skip_id3(data: bytes) -> bytes:
    """The bytes after any ID3v2 tags (MP3, and some FLAC and AAC files, start with one)."""
    while len(data) >= 10 and data[:3] == b"ID3":
        size = int.from_bytes(bytes(b & 0x7F for b in data[6:10]), "big")  # synchsafe
        data = data[10 + size + (10 if data[5] & 0x10 else 0):]
    return data


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
    body = _skip_id3(data)
    if body[:4] == b"fLaC":
        return "flac"
    return _mpeg_audio(body[:4]) or ("mp3" if body is not data else None)  # a tag, then mp3 frames


def _what_it_looks_like(data: bytes) -> str:
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


def _frame_db(audio: np.ndarray) -> np.ndarray:
    """Level of each 10 ms frame in dBFS."""
    hop = int(FRAME_S * SAMPLE_RATE)
    n = max(1, len(audio) // hop)
    frames = audio[: n * hop].reshape(n, hop) if len(audio) >= hop else audio.reshape(1, -1)
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10))


def _silent_runs(db: np.ndarray, threshold_db: float, min_frames: int) -> list[tuple[int, int]]:
    """(start, end) frame ranges of silence at least `min_frames` long."""
    quiet = np.concatenate([[False], db < threshold_db, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    runs = zip(edges[::2], edges[1::2])
    return [(int(s), int(e)) for s, e in runs if e - s >= min_frames]


def _cut_at_silence(db: np.ndarray, max_frames: int, threshold_db: float, min_silence_s: float) -> int | None:
    """Latest cut point (frame) inside a silence that keeps the clip within max_frames and over half of it."""
    best = None
    for start, end in _silent_runs(db, threshold_db, int(min_silence_s / FRAME_S)):
        cut = min((start + end) // 2, start + int(0.5 / FRAME_S))  # keep at most 0.5 s of the pause
        if max_frames // 2 <= cut <= max_frames:
            best = cut
    return best


def _trim_edges(audio: np.ndarray, threshold_db: float = -42.0) -> np.ndarray:
    db = _frame_db(audio)
    loud = np.flatnonzero(db >= threshold_db)
    if loud.size == 0:
        return audio[:0]
    hop = int(FRAME_S * SAMPLE_RATE)
    return audio[loud[0] * hop : (loud[-1] + 1) * hop]


@dataclass(frozen=True)
class Speech:
    """A request's whole waveform (mono float32, 24 kHz), and the wall time of the model calls that
    made it: what the service spent on the model, apart from queues, hops and encoding."""

    wave: np.ndarray
    model_s: float


@dataclass(frozen=True)
class PreparedReference:
    audio: np.ndarray  # mono float32, 24 kHz
    original_duration_s: float
    clipped: bool

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def prepare_reference(audio: np.ndarray, *, max_clip_s: float = 12.0, min_s: float = 0.3) -> PreparedReference:
    """Trim silent edges and clip to at most `max_clip_s`, cutting at a pause where there is one.

    Follows the rules of f5-tts's own preprocessing: prefer a long pause (1 s at -50 dBFS), then a
    short one (0.1 s at -40 dBFS), else cut hard; finish with 50 ms of silence.
    """
    original_s = len(audio) / SAMPLE_RATE
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak < 1e-3 or float(np.max(_frame_db(audio))) < -50:
        raise BadRequest("The reference audio is silent.", code="silent_audio", param="file")

    trimmed = _trim_edges(audio)
    clipped = False
    max_samples = int(max_clip_s * SAMPLE_RATE)
    if len(trimmed) > max_samples:
        clipped = True
        db = _frame_db(trimmed)
        max_frames = int(max_clip_s / FRAME_S)
        cut = _cut_at_silence(db, max_frames, -50, 1.0) or _cut_at_silence(db, max_frames, -40, 0.1)
        end = cut * int(FRAME_S * SAMPLE_RATE) if cut else max_samples
        trimmed = _trim_edges(trimmed[:end])
    if len(trimmed) < min_s * SAMPLE_RATE:
        raise BadRequest(
            f"The reference audio holds less than {min_s:g} s of sound.", code="audio_too_short", param="file"
        )
    tail = np.zeros(int(0.05 * SAMPLE_RATE), dtype=np.float32)
    return PreparedReference(np.concatenate([trimmed, tail]).astype(np.float32), original_s, clipped)


def to_wav_bytes(audio: np.ndarray) -> bytes:
    """16-bit mono WAV, the same samples as `to_pcm16`."""
    data = to_pcm16(audio)
    return _wav_header(len(data)) + data


def read_wav_bytes(data: bytes) -> np.ndarray:
    audio, sr = sf.read(io.BytesIO(data), dtype="float32")
    if sr != SAMPLE_RATE:
        raise ValueError(f"stored reference has {sr} Hz, expected {SAMPLE_RATE}")
    return audio


# response_format -> (content type, ffmpeg output arguments)
FORMATS: dict[str, tuple[str, list[str]]] = {
    "mp3": ("audio/mpeg", ["-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3"]),
    "opus": ("audio/ogg", ["-c:a", "libopus", "-b:a", "64k", "-f", "ogg"]),
    "aac": ("audio/aac", ["-c:a", "aac", "-b:a", "128k", "-f", "adts"]),
    "flac": ("audio/flac", ["-c:a", "flac", "-f", "flac"]),
    "wav": ("audio/wav", []),
    "pcm": ("audio/pcm", []),  # raw 16-bit signed little-endian, 24 kHz mono (as OpenAI's pcm)
}
# Raw PCM into ffmpeg. No probing: by default ffmpeg reads megabytes of a pipe (seconds of audio)
# before it encodes anything, which would hold a stream's first sentence back.
PCM_INPUT = ["-probesize", "32", "-analyzeduration", "0", "-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", "1"]
# Output options a stream adds for its format: Ogg pages of 0.1 s (the default second would hold
# back a short first sentence). Every stream also writes each packet at once (`-flush_packets`).
STREAM_OUTPUT = {"opus": ["-page_duration", "100000"]}
# Formats made by numpy alone, in well under a millisecond for seconds of audio.
RAW_FORMATS = ("pcm", "wav")
# Whole responses that libsndfile (bundled with the soundfile wheel) encodes in this process: no
# ffmpeg to start, which took 85-100 ms a response here (6 s of flac now 2.5 ms, of mp3 44 ms).
# MP3 is constant 128 kbps, as ffmpeg's (`compression_level` spans 160 to 8 kbps at 24 kHz). Opus
# (as slow either way), AAC (not in libsndfile) and every stream still go through ffmpeg.
IN_PROCESS = {
    "mp3": {"format": "MP3", "subtype": "MPEG_LAYER_III", "bitrate_mode": "CONSTANT", "compression_level": 0.2},
    "flac": {"format": "FLAC", "subtype": "PCM_16"},
}


def to_pcm16(audio: np.ndarray) -> bytes:
    return np.round(np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def encode(audio: np.ndarray, fmt: str) -> bytes:
    """Encode mono float32 24 kHz audio to one of FORMATS."""
    if fmt == "pcm":
        return to_pcm16(audio)
    if fmt == "wav":
        return to_wav_bytes(audio)
    if fmt in IN_PROCESS:
        buffer = io.BytesIO()
        with sf.SoundFile(buffer, "w", SAMPLE_RATE, 1, **IN_PROCESS[fmt]) as f:
            f.write(np.frombuffer(to_pcm16(audio), "<i2"))  # the samples pcm and wav carry
        return buffer.getvalue()
    _, args = FORMATS[fmt]
    # A seekable file, not a pipe: when done, the muxer goes back to the header and writes the length
    # (FLAC STREAMINFO's sample count, MP3's Xing/LAME frame count). Streams cannot; see StreamEncoder.
    with tempfile.TemporaryDirectory(prefix="encode-") as directory:
        out = Path(directory) / f"speech.{fmt}"
        cmd = ["ffmpeg", "-nostdin", "-v", "error", *PCM_INPUT, "-i", "pipe:0", *args, str(out)]
        subprocess.run(cmd, input=to_pcm16(audio), capture_output=True, check=True)
        return out.read_bytes()


def _wav_header(data_bytes: int) -> bytes:
    return (b"RIFF" + struct.pack("<I", min(36 + data_bytes, 0xFFFFFFFF)) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16)
            + b"data" + struct.pack("<I", min(data_bytes, 0xFFFFFFFF)))


def streaming_wav_header() -> bytes:
    """A WAV header whose sizes say "unknown" (0xFFFFFFFF), for audio of open length."""
    return _wav_header(0xFFFFFFFF)


class StreamEncoder:
    """Encodes one streamed response as its audio arrives. pcm and wav pass straight through; the rest
    go through one ffmpeg process, fed and drained concurrently so neither side waits for the whole
    text."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self._spawn: asyncio.Task[asyncio.subprocess.Process] | None = None

    def start(self) -> None:
        """Start ffmpeg in the background: called while the first segment is being made, its start
        (about 0.1 s) does not delay the first bytes."""
        if self.fmt not in RAW_FORMATS and self._spawn is None:
            self._spawn = asyncio.create_task(self._spawn_ffmpeg())

    async def _spawn_ffmpeg(self) -> asyncio.subprocess.Process:
        _, args = FORMATS[self.fmt]
        return await asyncio.create_subprocess_exec(
            "ffmpeg", "-nostdin", "-v", "error", *PCM_INPUT, "-i", "pipe:0",
            *args, *STREAM_OUTPUT.get(self.fmt, []), "-flush_packets", "1", "pipe:1",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)

    async def close(self) -> None:
        """Stop ffmpeg, whether it is running or still starting."""
        spawn, self._spawn = self._spawn, None
        if spawn is not None:
            proc = await asyncio.shield(spawn)  # a start under way still ends in a process to stop
            if proc.returncode is None:
                proc.kill()
            await proc.wait()

    async def encode(self, chunks: AsyncIterator[np.ndarray]) -> AsyncIterator[bytes]:
        if self.fmt in RAW_FORMATS:
            if self.fmt == "wav":
                yield streaming_wav_header()
            async for chunk in chunks:
                yield to_pcm16(chunk)
            return
        self.start()
        proc = await self._spawn

        async def feed() -> None:
            try:
                async for chunk in chunks:
                    proc.stdin.write(to_pcm16(chunk))
                    await proc.stdin.drain()
            finally:
                proc.stdin.close()

        feeder = asyncio.create_task(feed())
        try:
            while data := await proc.stdout.read(64 * 1024):
                yield data
            await feeder  # surfaces a synthesis error that ended the input early
        finally:
            feeder.cancel()
            await self.close()


def cross_fade(waves: Iterable[np.ndarray], overlap: int) -> Iterator[np.ndarray]:
    """Join waveforms, blending up to `overlap` samples linearly at each seam.

    Yields as soon as a piece is final: each wave's last `overlap` samples are held back until the
    next wave arrives to blend with.
    """
    seams = CrossFade(overlap)
    for wave in waves:
        if (piece := seams.push(wave)) is not None:
            yield piece
    if (piece := seams.finish()) is not None:
        yield piece


class CrossFade:
    """`cross_fade` one wave at a time, for callers that get their waves asynchronously."""

    def __init__(self, overlap: int):
        self.overlap = overlap
        self.held = np.zeros(0, dtype=np.float32)

    def push(self, wave: np.ndarray) -> np.ndarray | None:
        """The part of the speech so far that is final, or None if all of it waits for the seam."""
        held = self.held
        n = min(len(held), len(wave))
        if n:
            fade = np.linspace(0.0, 1.0, n, dtype=np.float32)
            seam = held[len(held) - n :] * (1 - fade) + wave[:n] * fade
            wave = np.concatenate([held[: len(held) - n], seam, wave[n:]])
        elif len(held):
            wave = np.concatenate([held, wave])
        keep = min(self.overlap, len(wave))
        self.held = wave[len(wave) - keep :]
        return wave[: len(wave) - keep].astype(np.float32) if len(wave) > keep else None

    def finish(self) -> np.ndarray | None:
        held, self.held = self.held, np.zeros(0, dtype=np.float32)
        return held.astype(np.float32) if len(held) else None


def join(waves: Iterable[np.ndarray], overlap: int) -> np.ndarray:
    """The whole of `cross_fade`."""
    return np.concatenate(list(cross_fade(waves, overlap)))
