"""`f5voice voices consent|challenge` and `f5voice audit`: a voice's consent, and who made what."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from f5voice.client import EXIT_USAGE, Api, CliError
from f5voice.output import say


def add_consent_commands(voice_commands: Any, commands: Any, common: argparse.ArgumentParser) -> None:
    challenge = voice_commands.add_parser("challenge", parents=[common],
                                          help="a phrase for the voice's speaker to read aloud (spoken consent)")
    challenge.add_argument("name")
    challenge.set_defaults(run=voices_challenge)
    consent = voice_commands.add_parser(
        "consent", parents=[common],
        help="record a voice's consent: attested, or spoken with --recording of a challenge phrase")
    consent.add_argument("name")
    consent.add_argument("--given-by", required=True, help="who consents: the person whose voice it is")
    consent.add_argument("--statement", help="what they consent to (a default statement when left out)")
    consent.add_argument("--challenge-id", help="spoken: the id `voices challenge` printed")
    consent.add_argument("--recording", metavar="FILE", help="spoken: the speaker reading the challenge phrase")
    consent.set_defaults(run=voices_consent)
    audit = commands.add_parser("audit", parents=[common], help="who made which speech with which voice (admin)")
    audit.add_argument("--voice")
    audit.add_argument("--since", help="ISO 8601 time (default: 7 days before --until)")
    audit.add_argument("--until", help="ISO 8601 time (default: now)")
    audit.add_argument("--limit", type=int, default=1000)
    audit.set_defaults(run=audit_command)


def voices_challenge(api: Api, args: argparse.Namespace) -> None:
    challenge = api.json("POST", f"/v1/voices/{args.name}/consent/challenge")
    if args.json:
        print(json.dumps(challenge, indent=2))
        return
    print(challenge["phrase"])
    say(f"challenge {challenge['id']} (until {challenge['expires_at']}): record the speaker reading the line above, "
        f"then: f5voice voices consent {args.name} --given-by NAME --challenge-id {challenge['id']} --recording FILE")


def voices_consent(api: Api, args: argparse.Namespace) -> None:
    spoken = bool(args.recording or args.challenge_id)
    if spoken and not (args.recording and args.challenge_id):
        raise CliError("spoken consent needs both --challenge-id and --recording", EXIT_USAGE)
    fields = {"method": "spoken" if spoken else "attested", "given_by": args.given_by}
    if args.statement:
        fields["statement"] = args.statement
    if spoken:
        path = Path(args.recording)
        if not path.is_file():
            raise CliError(f"no such file: {path}", EXIT_USAGE)
        with path.open("rb") as f:
            record = api.json("POST", f"/v1/voices/{args.name}/consent", files={"file": (path.name, f)},
                              data={**fields, "challenge_id": args.challenge_id})
    else:
        record = api.json("POST", f"/v1/voices/{args.name}/consent", data=fields)
    if args.json:
        print(json.dumps(record, indent=2))
        return
    heard = f", heard {record['heard']!r} (word error rate {record['wer']:g})" if record.get("heard") else ""
    say(f"{args.name}: {record['method']} consent {record['id']} given by {record['given_by']}{heard}")


def audit_command(api: Api, args: argparse.Namespace) -> None:
    params = {k: v for k, v in {"voice": args.voice, "since": args.since, "until": args.until,
                                "limit": args.limit}.items() if v is not None}
    page = api.json("GET", "/v1/audit", params=params)
    if args.json:
        print(json.dumps(page, indent=2))
        return
    for e in page["entries"]:
        print(f"{e['time']}  {e['kind']:6}  {e['voice']:20}  {e['key'] or '-':12}  {e['request_id']}  "
              f"out={e['output_sha256'][:16]}{'' if e['complete'] else '  (incomplete)'}")
    if page["truncated"]:
        say(f"more entries than --limit {args.limit}: ask again with --since {page['entries'][-1]['time']}")
