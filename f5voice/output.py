"""What `f5voice` writes: audio to files or stdout, voices as text or JSON, progress to stderr."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from f5voice.client import EXIT_USAGE, Api, CliError

SUFFIX_FORMATS = {".mp3": "mp3", ".opus": "opus", ".ogg": "opus", ".aac": "aac", ".flac": "flac",
                  ".wav": "wav", ".pcm": "pcm", ".raw": "pcm"}
FORMATS = sorted(set(SUFFIX_FORMATS.values()))


# ---- output ----

def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def show_verification(name: str, report: dict) -> None:
    if not report["found"]:
        print(f"{name}: no Content Credentials")
        return
    signer = report["manifest"].get("signature_info", {})
    print(f"{name}: {report['validation_state']} ({'embedded' if report['embedded'] else 'sidecar'}), "
          f"signed by {signer.get('common_name', '?')} of {signer.get('issuer', '?')}")
    speech = report.get("speech") or {}
    for field in ("voice", "model", "key", "request_id", "text_sha256", "consent_id"):
        print(f"  {field:<12} {speech.get(field)}")
    for failure in report["failures"]:
        print(f"  failed: {failure}")


def show_voice(voice: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(voice, indent=2))
        return
    clip = f"{voice['duration_s']:.1f} s"
    if voice.get("clipped"):
        clip += f" (clipped from {voice['original_duration_s']:.1f} s)"
    print(f"name:        {voice['name']}")
    print(f"clip:        {clip}")
    print(f"clipped:     {'yes' if voice.get('clipped') else 'no'}")
    print(f"transcript:  {voice['ref_text']}")
    print(f"from:        {voice['ref_text_source']}")
    if voice.get("language"):
        print(f"language:    {voice['language']}")
    print(f"sha256:      {voice['sha256']}")
    consent = voice.get("consent")
    print(f"consent:     {consent['method'] + ' (' + consent['id'] + ')' if consent else 'none'}")
    print(f"lexicons:    {', '.join(voice.get('lexicons') or []) or 'none'}")
    print(f"styles:      default ({voice['duration_s']:.1f} s, the clip above)")
    for style, take in sorted((voice.get("styles") or {}).items()):
        clipped = f", clipped from {take['original_duration_s']:.1f} s" if take["clipped"] else ""
        print(f"  {style}: {take['duration_s']:.1f} s{clipped}, {take['ref_text_source']}: {take['ref_text']}")
    print(f"created:     {voice['created_at']}")
    for warning in voice.get("warnings") or []:
        say(f"warning: {warning}")


def show_voice_table(voices: list[dict]) -> None:
    if not voices:
        say("no voices")
        return
    width = max(4, *(len(v["name"]) for v in voices))
    print(f"{'NAME':<{width}}  {'CLIP':>6}  CLIPPED  FROM  CONSENT   TRANSCRIPT")
    for v in voices:
        text = v["ref_text"] if len(v["ref_text"]) <= 60 else v["ref_text"][:57] + "..."
        consent = (v.get("consent") or {}).get("method", "none")
        print(f"{v['name']:<{width}}  {v['duration_s']:>5.1f}s  {'yes' if v['clipped'] else 'no':<7}  "
              f"{v['ref_text_source']:<4}  {consent:<8}  {text}")


class ProgressBar:
    """A one-line bar on a terminal's stderr; a line per change elsewhere (logs stay readable)."""

    def __init__(self, width: int = 30):
        self.width, self.last = width, None
        self.tty = sys.stderr.isatty()

    def update(self, fraction: float, label: str) -> None:
        filled = round(max(0.0, min(1.0, fraction)) * self.width)
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {fraction:4.0%} {label}"
        if line == self.last:
            return
        self.last = line
        sys.stderr.write(f"\r{line}\033[K" if self.tty else f"{line}\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty and self.last:
            sys.stderr.write("\n")


def output_format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    if args.output == "-":
        return "mp3"
    suffix = Path(args.output).suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise CliError(f"cannot tell the format from '{args.output}': name it with --format "
                       f"({', '.join(FORMATS)})", EXIT_USAGE)
    return SUFFIX_FORMATS[suffix]


@contextmanager
def opened_output(output: str) -> Iterator[BinaryIO]:
    """stdout, or a file that is removed again if writing it fails part-way."""
    if output == "-":
        yield sys.stdout.buffer
        return
    path = Path(output)
    try:
        with path.open("wb") as f:
            yield f
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def write_stream(chunks: Iterator[bytes], output: str, api: Api) -> tuple[int, float | None]:
    """Write audio as it arrives; the file is opened only once the service has said yes. Returns the
    bytes written and when (`time.monotonic()`) the first of them arrived."""
    size, first_at = 0, None
    with opened_output(output) as out, api.failures():
        for chunk in chunks:
            if first_at is None:
                first_at = time.monotonic()
            out.write(chunk)
            out.flush()
            size += len(chunk)
    return size, first_at
