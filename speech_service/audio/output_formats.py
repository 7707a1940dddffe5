"""ElevenLabs' `output_format` names (`pcm_24000`, `mp3_44100_128`, `ulaw_8000`) and the bytes of each,
for the ElevenLabs-protocol routes (HTTP and WebSocket). Every piece is encoded on its own: raw PCM and
mu-law concatenate as they are, and each MP3 piece is a whole file, which the clients' decoders read
one after another."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
import soundfile as sf

from speech_service.audio import SAMPLE_RATE
from speech_service.audio.encoding import to_pcm16
from speech_service.audio.resampling import resample_poly
from speech_service.errors import BadRequest


@dataclass(frozen=True)
class OutputFormat:
    name: str
    codec: Literal["pcm", "mp3", "ulaw"]
    sample_rate: int
    bitrate_kbps: int | None
    media_type: str

    @property
    def credentials_format(self) -> str:
        """How Content Credentials and the audit name a whole response in this format: an MP3 file
        carries its manifest inside (as `/v1/audio/speech`'s mp3), raw audio gets a sidecar."""
        return "mp3" if self.codec == "mp3" else self.name


def _format(name: str) -> OutputFormat:
    codec, rate, *bitrate = name.split("_")
    media_type = {"pcm": "audio/pcm", "mp3": "audio/mpeg", "ulaw": "audio/basic"}[codec]  # audio/basic: G.711
    return OutputFormat(name, codec, int(rate), int(bitrate[0]) if bitrate else None, media_type)


SUPPORTED: dict[str, OutputFormat] = {name: _format(name) for name in (
    "pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_32000", "pcm_44100", "pcm_48000",
    "mp3_22050_32", "mp3_24000_48", "mp3_44100_32", "mp3_44100_64", "mp3_44100_96", "mp3_44100_128",
    "mp3_44100_192", "ulaw_8000")}


def parse_output_format(name: str) -> OutputFormat:
    fmt = SUPPORTED.get(name)
    if fmt is None:
        raise BadRequest(f"unsupported output_format {name!r}; supported: {', '.join(SUPPORTED)}",
                         code="unsupported_output_format", param="output_format")
    return fmt


def encode_piece(wave: np.ndarray, fmt: OutputFormat) -> bytes:
    """Mono float32 24 kHz `wave` as `fmt`'s bytes: raw little-endian 16-bit PCM, G.711 mu-law, or a
    whole constant-bitrate MP3 file."""
    if fmt.sample_rate != SAMPLE_RATE:
        wave = resample_poly(wave, fmt.sample_rate, SAMPLE_RATE)
    pcm = to_pcm16(wave)
    if fmt.codec == "pcm":
        return pcm
    if fmt.codec == "ulaw":
        return ulaw_encode(np.frombuffer(pcm, "<i2"))
    return _mp3(np.frombuffer(pcm, "<i2"), fmt)


# libsndfile picks a constant MP3 bitrate linearly from its compression level over the range of the
# MPEG version the rate implies (MPEG-1 from 32 kHz, MPEG-2 from 16 kHz, else 2.5), truncates it, and
# LAME takes the nearest valid bitrate; half a kbps above the target survives the truncation.
_MP3_KBPS_RANGE = ((32_000, 32, 320), (16_000, 8, 160), (0, 8, 64))


def _mp3(samples: np.ndarray, fmt: OutputFormat) -> bytes:
    low, high = next((lo, hi) for min_rate, lo, hi in _MP3_KBPS_RANGE if fmt.sample_rate >= min_rate)
    level = (high - (fmt.bitrate_kbps + 0.5)) / (high - low)
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", fmt.sample_rate, 1, format="MP3", subtype="MPEG_LAYER_III",
                      bitrate_mode="CONSTANT", compression_level=level) as f:
        f.write(samples)
    return buffer.getvalue()


_ULAW_BIAS, _ULAW_CLIP = 0x84, 32635


def ulaw_encode(samples: np.ndarray) -> bytes:
    """G.711 mu-law bytes of 16-bit samples (the segment/mantissa form of the ITU reference)."""
    x = samples.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), _ULAW_CLIP) + _ULAW_BIAS
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7  # magnitude >= 0x84, so 0..7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    """16-bit samples of G.711 mu-law bytes."""
    u = ~np.frombuffer(data, np.uint8).astype(np.int32) & 0xFF
    exponent, mantissa = (u >> 4) & 0x07, u & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)
