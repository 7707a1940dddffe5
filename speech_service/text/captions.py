"""Captions as subtitle files: WebVTT and SRT, one cue per caption (a word of the caller's text,
or a span written out as several words, "$5.20"), so the cues are the JSON's words."""

from __future__ import annotations

from speech_service.schemas import Caption


def _clock(seconds: float, decimal: str) -> str:
    ms = round(max(0.0, seconds) * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def _cue_text(text: str) -> str:
    """A cue's text on one line (a blank line would end the cue)."""
    return " ".join(text.split())


def to_vtt(captions: list[Caption]) -> str:
    cues = [f"{_clock(c.start, '.')} --> {_clock(max(c.end, c.start), '.')}\n"
            f"{_cue_text(c.text).replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')}"
            for c in captions]
    return "WEBVTT\n\n" + "".join(f"{cue}\n\n" for cue in cues)


def to_srt(captions: list[Caption]) -> str:
    return "".join(f"{n}\n{_clock(c.start, ',')} --> {_clock(max(c.end, c.start), ',')}\n{_cue_text(c.text)}\n\n"
                   for n, c in enumerate(captions, 1))


FORMATS = {"vtt": ("text/vtt; charset=utf-8", to_vtt), "srt": ("application/x-subrip; charset=utf-8", to_srt)}
