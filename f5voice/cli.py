"""`f5voice`: the voice service from a shell, over its public HTTP API only.

Exit codes: 0 done; 2 usage (bad arguments, bad --url); 3 the API refused the request (HTTP 4xx);
4 the service failed or could not be reached (HTTP 5xx, connection, timeout, broken stream);
5 a job ended failed or cancelled; 6 `verify`: no, untrusted or broken Content Credentials.
Errors go to stderr with the API's own message and code.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import httpx

from f5voice.client import DEFAULT_URL, Api, CliError
from f5voice.commands import (
    jobs_fetch,
    jobs_list,
    jobs_rm,
    jobs_status,
    jobs_submit,
    say_command,
    verify_command,
    voices_add,
    voices_list,
    voices_rm,
    voices_set_text,
    voices_show,
)
from f5voice.consent import add_consent_commands
from f5voice.lexicons import add_lexicon_commands
from f5voice.output import FORMATS, say
from f5voice.styles import add_style_commands


def add_connection_arguments(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """On the top-level parser with their defaults, and on each command without (so an option given
    after the command is not reset by it)."""

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--url", default=default(os.environ.get("F5VOICE_URL", DEFAULT_URL)),
                        help=f"service base URL (env F5VOICE_URL; default {DEFAULT_URL})")
    parser.add_argument("--api-key", default=default(os.environ.get("F5VOICE_API_KEY")),
                        help="bearer key when the service has api_keys (env F5VOICE_API_KEY)")
    parser.add_argument("--timeout", type=float, default=default(300.0),
                        help="seconds to wait for the service at each step (default 300)")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="print the API's JSON instead of a summary")


def add_jobs_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    jobs = commands.add_parser("jobs", help="long texts as asynchronous jobs, with a progress bar")
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    submit = job_commands.add_parser("submit", parents=[common],
                                     help="submit a job; prints its id (with -o: waits and fetches the audio)")
    add_speech_arguments(submit, output_required=False)
    submit.add_argument("--wait", action="store_true", help="wait for the job to end, showing its progress")
    submit.set_defaults(run=jobs_submit)
    status = job_commands.add_parser("status", parents=[common], help="a job's status and progress")
    status.add_argument("id")
    status.add_argument("--wait", action="store_true", help="wait for the job to end, showing its progress")
    status.set_defaults(run=jobs_status)
    fetch = job_commands.add_parser("fetch", parents=[common], help="write a finished job's audio")
    fetch.add_argument("id")
    fetch.add_argument("--output", "-o", required=True, help="audio file to write; '-' for stdout")
    fetch.add_argument("--wait", action="store_true", help="wait for the job to end first")
    fetch.set_defaults(run=jobs_fetch)
    listing = job_commands.add_parser("list", parents=[common], help="recent jobs, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(run=jobs_list)
    rm = job_commands.add_parser("rm", parents=[common], help="cancel a running job or remove a finished one")
    rm.add_argument("ids", nargs="+", metavar="ID")
    rm.set_defaults(run=jobs_rm)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="f5voice", description="Clone voices and speak text with an F5-TTS voice service.",
        epilog="Exit codes: 2 usage, 3 refused by the API (4xx), 4 service failed or unreachable, 5 job failed.")
    add_connection_arguments(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    add_connection_arguments(common, defaults=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    voices = commands.add_parser("voices", help="create, list, show, correct and remove voices and their styles")
    voice_commands = voices.add_subparsers(dest="voices_command", required=True, metavar="ACTION")
    add = voice_commands.add_parser("add", parents=[common], help="create a voice from an audio file")
    add.add_argument("name")
    add.add_argument("file", help="wav, aiff, flac, mp3, aac, ogg/opus, m4a/mp4 or webm/mkv")
    add.add_argument("--ref-text", help="what is said in the clip (transcribed when left out)")
    add.add_argument("--language", help="language code for transcription, e.g. en")
    add.add_argument("--overwrite", action="store_true", help="replace a voice of that name")
    add.set_defaults(run=voices_add)
    voice_commands.add_parser("list", parents=[common], help="all voices").set_defaults(run=voices_list)
    show = voice_commands.add_parser("show", parents=[common], help="one voice's record")
    show.add_argument("name")
    show.set_defaults(run=voices_show)
    set_text = voice_commands.add_parser("set-text", parents=[common], help="correct a voice's transcript")
    set_text.add_argument("name")
    set_text.add_argument("text")
    set_text.set_defaults(run=voices_set_text)
    rm = voice_commands.add_parser("rm", parents=[common], help="delete voices")
    rm.add_argument("names", nargs="+", metavar="NAME")
    rm.set_defaults(run=voices_rm)
    add_consent_commands(voice_commands, commands, common)
    add_style_commands(voice_commands, common)

    speak = commands.add_parser("say", parents=[common], help="speak text in a voice, streamed to a file or stdout")
    add_speech_arguments(speak, output_required=False)
    speak.add_argument("--captions", metavar="FILE", help="also write the words' timings: .vtt, .srt or .json")
    speak.add_argument("--check", action="store_true",
                       help="the service checks what it said and makes a failed segment again; warnings on stderr")
    speak.add_argument("--dry-run", action="store_true", dest="dry_run",
                       help="print what the model would read, per segment (speaker, pace, pauses, text), and stop")
    speak.set_defaults(run=say_command)
    verify = commands.add_parser("verify", parents=[common],
                                 help="check a file's Content Credentials (inside it, or FILE.c2pa beside it)")
    verify.add_argument("file")
    verify.add_argument("--manifest", metavar="FILE", help="its sidecar manifest (default: FILE.c2pa when present)")
    verify.add_argument("--allow-untrusted", action="store_true",
                        help="exit 0 for intact credentials of a signer this service does not trust")
    verify.set_defaults(run=verify_command)
    add_jobs_commands(commands, common)
    add_lexicon_commands(commands, common)
    return parser


def add_speech_arguments(parser: argparse.ArgumentParser, output_required: bool = True) -> None:
    parser.add_argument("text", help="the text to speak; '-' reads it from stdin")
    parser.add_argument("--voice", "-v", required=True)
    parser.add_argument("--output", "-o", required=output_required, help="audio file to write; '-' for stdout")
    parser.add_argument("--format", "-f", choices=FORMATS, help="default: from the output's suffix (mp3 for -)")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--nfe-step", type=int, dest="nfe_step", help="sampling steps (quality vs speed)")
    parser.add_argument("--ssml", action="store_true", help="the text is SSML (wrapped in <speak> if it is not)")
    parser.add_argument("--style", help="a take of the voice (voices style add)")
    parser.add_argument("--instructions", help="free text; a style of the voice it names is used")
    parser.add_argument("--lexicon", action="append", metavar="NAME", help="a pronunciation lexicon; repeatable")


def checked_url(url: str, parser: argparse.ArgumentParser) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        parser.error(f"--url must be an http:// or https:// address, not '{url}'")
    return url.rstrip("/")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        api = Api(checked_url(args.url, parser), args.api_key, args.timeout)
        args.run(api, args)
    except CliError as exc:
        say(f"f5voice: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
