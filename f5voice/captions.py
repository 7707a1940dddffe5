"""`f5voice say --captions FILE`: the speech's words read from its SSE stream, written as WebVTT,
SRT or JSON (by the file's suffix), one cue per word of the text as the service sends them."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

from f5voice.client import EXIT_FAILED, EXIT_USAGE, CliError
from f5voice.output import say

CAPTION_SUFFIXES = (".vtt", ".srt", ".json")


def check_captions_path(path: str) -> None:
    if Path(path).suffix.lower() not in CAPTION_SUFFIXES:
        raise CliError(f"--captions: name the file .vtt, .srt or .json, not '{path}'", EXIT_USAGE)


def audio_of_events(chunks: Iterator[bytes], words: list[dict]) -> Iterator[bytes]:
    """The audio of a `stream_format: "sse"` response; its words are appended to `words` and the
    quality check's warnings said as they arrive. An error event (the stream broke off, or a required
    check failed) raises."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *events, pending = pending.split(b"\n\n")
        for event in events:
            if not event.startswith(b"data: "):
                continue
            data = json.loads(event[6:])
            kind = data.get("type")
            if kind == "speech.audio.delta":
                yield base64.b64decode(data["audio"])
            elif kind == "speech.audio.timestamps":
                words.extend(data["words"])
            elif kind == "speech.audio.quality" and data.get("warning"):
                say(f"warning: {data['warning']}")
            elif kind == "error":
                error = data["error"]
                raise CliError(f"{error['message']} [{error['code']}]", EXIT_FAILED)


def _clock(seconds: float, decimal: str) -> str:
    ms = round(max(0.0, seconds) * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{decimal}{ms % 1000:03d}"


def _vtt_text(word: dict) -> str:
    return " ".join(word["text"].split()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_captions(path: str, words: list[dict]) -> None:
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        text = json.dumps({"words": words}, indent=2, ensure_ascii=False) + "\n"
    elif suffix == ".srt":
        text = "".join(f"{n}\n{_clock(w['start'], ',')} --> {_clock(w['end'], ',')}\n{' '.join(w['text'].split())}\n\n"
                       for n, w in enumerate(words, 1))
    else:
        text = "WEBVTT\n\n" + "".join(f"{_clock(w['start'], '.')} --> {_clock(w['end'], '.')}\n{_vtt_text(w)}\n\n"
                                      for w in words)
    Path(path).write_text(text, encoding="utf-8")
