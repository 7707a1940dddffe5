"""Speech in the response formats: whole files and streams (pcm and wav by numpy, mp3 and flac by
libsndfile, the rest and every compressed stream by ffmpeg)."""

from __future__ import annotations

import asyncio
import io
import struct
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import soundfile as sf

from speech_service.audio import SAMPLE_RATE


def to_wav_bytes(audio: np.ndarray) -> bytes:
    """16-bit mono WAV, the same samples as `to_pcm16`."""
    data = to_pcm16(audio)
    return _wav_header(len(data)) + data


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
# Whole responses that libsndfile (bundled with the soundfile wheel) encodes in this process: a new
# ffmpeg per response costs more than encoding (docs/BENCHMARKS.md). MP3 is constant 128 kbps, as
# ffmpeg's (`compression_level` spans 160 to 8 kbps at 24 kHz). Opus (no faster in-process), AAC
# (not in libsndfile) and every stream go through ffmpeg.
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
