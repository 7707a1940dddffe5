"""`f5voice voices style add|rm`: a voice's takes (styles), each a clip with its own transcript."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from f5voice.client import EXIT_USAGE, Api, CliError
from f5voice.commands import voice_version
from f5voice.output import say, show_voice


def add_style_commands(voice_commands: Any, common: argparse.ArgumentParser) -> None:
    style = voice_commands.add_parser("style", help="a voice's takes (styles): spoken with when a request names one")
    style_commands = style.add_subparsers(dest="style_command", required=True, metavar="ACTION")
    add = style_commands.add_parser("add", parents=[common], help="add a take from an audio file")
    add.add_argument("voice")
    add.add_argument("style", help="its name, e.g. whisper: 1-32 letters, digits, '_' or '-'")
    add.add_argument("file", help="wav, aiff, flac, mp3, aac, ogg/opus, m4a/mp4 or webm/mkv")
    add.add_argument("--ref-text", help="what is said in the clip (transcribed when left out)")
    add.add_argument("--language", help="language code for transcription (default: the voice's)")
    add.add_argument("--overwrite", action="store_true", help="replace a take of that name")
    add.set_defaults(run=style_add)
    rm = style_commands.add_parser("rm", parents=[common], help="delete a take")
    rm.add_argument("voice")
    rm.add_argument("style")
    rm.set_defaults(run=style_rm)


def style_add(api: Api, args: argparse.Namespace) -> None:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"no such file: {path}", EXIT_USAGE)
    fields = {"style": args.style, "overwrite": "true" if args.overwrite else "false"}
    if args.ref_text:
        fields["ref_text"] = args.ref_text
    if args.language:
        fields["language"] = args.language
    version = voice_version(api, args.voice)  # a take meant for the voice as read, not one that replaced it
    with path.open("rb") as f:
        voice = api.json("POST", f"/v1/voices/{args.voice}/styles", data=fields, files={"file": (path.name, f)},
                         headers=version)
    show_voice(voice, args.json)


def style_rm(api: Api, args: argparse.Namespace) -> None:
    api.call("DELETE", f"/v1/voices/{args.voice}/styles/{args.style}", headers=voice_version(api, args.voice))
    say(f"deleted style {args.style} of {args.voice}")
