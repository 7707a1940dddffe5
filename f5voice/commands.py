"""The commands of `f5voice`: voices, say, jobs."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from f5voice.captions import audio_of_events, check_captions_path, write_captions
from f5voice.client import EXIT_JOB_FAILED, EXIT_UNVERIFIED, EXIT_USAGE, JOB_POLL_S, Api, CliError
from f5voice.output import (
    ProgressBar,
    output_format,
    say,
    show_verification,
    show_voice,
    show_voice_table,
    write_stream,
)

# ---- commands ----

def voices_add(api: Api, args: argparse.Namespace) -> None:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"no such file: {path}", EXIT_USAGE)
    fields = {"name": args.name, "overwrite": "true" if args.overwrite else "false"}
    if args.ref_text:
        fields["ref_text"] = args.ref_text
    if args.language:
        fields["language"] = args.language
    with path.open("rb") as f:
        voice = api.json("POST", "/v1/voices", data=fields, files={"file": (path.name, f)})
    show_voice(voice, args.json)


def voices_list(api: Api, args: argparse.Namespace) -> None:
    voices = api.json("GET", "/v1/voices")["voices"]
    if args.json:
        print(json.dumps(voices, indent=2))
    else:
        show_voice_table(voices)


def voices_show(api: Api, args: argparse.Namespace) -> None:
    show_voice(api.json("GET", f"/v1/voices/{args.name}"), args.json)


def voice_version(api: Api, name: str) -> dict[str, str]:
    """The `If-Match` of the voice as it is now: a change made after this read fails the write
    (exit 3, the API's 412) instead of landing on a clip it was not meant for."""
    etag = api.call("GET", f"/v1/voices/{name}").headers.get("ETag")
    return {"If-Match": etag} if etag else {}


def voices_set_text(api: Api, args: argparse.Namespace) -> None:
    version = voice_version(api, args.name)
    show_voice(api.json("PATCH", f"/v1/voices/{args.name}", json={"ref_text": args.text}, headers=version), args.json)


def voices_rm(api: Api, args: argparse.Namespace) -> None:
    for name in args.names:
        api.call("DELETE", f"/v1/voices/{name}", headers=voice_version(api, name))
        say(f"deleted {name}")


def speech_body(args: argparse.Namespace, fmt: str) -> dict[str, Any]:
    text = sys.stdin.read() if args.text == "-" else args.text
    if args.ssml and not text.lstrip().startswith(("<speak", "<?xml")):
        text = f"<speak>{text}</speak>"  # markup without its root element: "Hi <break time='1s'/> there"
    body: dict[str, Any] = {"voice": args.voice, "input": text, "response_format": fmt, "speed": args.speed}
    for field in ("seed", "nfe_step", "style", "instructions"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    if args.lexicon:
        body["lexicons"] = args.lexicon
    return body


def show_dry_run(api: Api, body: dict[str, Any]) -> None:
    """What the model would read, segment by segment, and nothing synthesized."""
    plan = api.json("POST", "/v1/audio/speech/dry-run", json=body)
    for segment in plan["segments"]:
        style = f" ({segment['style']})" if segment["style"] else ""
        pause = f", then {segment['pause_after_s']:g} s of silence" if segment["pause_after_s"] else ""
        print(f"[{segment['index']}] {segment['voice']}{style} at {segment['speed']:g}x{pause}: {segment['text']}")


def say_command(api: Api, args: argparse.Namespace) -> None:
    if args.dry_run:
        return show_dry_run(api, speech_body(args, args.format or "wav"))
    if not args.output:
        raise CliError("say: --output is required (or --dry-run)", EXIT_USAGE)
    fmt = output_format(args)
    body = {**speech_body(args, fmt), "stream": True}
    listened = bool(args.captions or args.check)
    if args.captions:
        check_captions_path(args.captions)
        body["timestamps"] = "word"
    if args.check:
        body["quality"] = True
    if listened:  # the words and the check come as events beside the audio
        body["stream_format"] = "sse"
    words: list[dict] = []
    started = time.monotonic()  # the request's, not its response's: the service answers with the first audio
    with api.stream("POST", "/v1/audio/speech", json=body) as chunks:
        size, first_at = write_stream(audio_of_events(chunks, words) if listened else chunks, args.output, api)
    if args.captions:
        write_captions(args.captions, words)
        say(f"wrote {args.captions} ({len(words)} words)")
    sidecar = api.stream_headers.get("X-Content-Credentials")
    if sidecar and args.output != "-":  # signed over every byte: ready once the stream has ended
        Path(f"{args.output}.c2pa").write_bytes(api.call("GET", sidecar).content)
    if args.output != "-":
        first_note = f"first audio after {first_at - started:.2f} s, " if first_at is not None else ""
        say(f"wrote {args.output} ({size / 1024:.0f} KiB {fmt}; {first_note}"
            f"done in {time.monotonic() - started:.2f} s)")


def verify_command(api: Api, args: argparse.Namespace) -> None:
    """Exit 0 when the file's Content Credentials are Trusted (or Valid, with --allow-untrusted)."""
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"no such file: {path}", EXIT_USAGE)
    sidecar = Path(args.manifest) if args.manifest else Path(f"{path}.c2pa")
    files = {"file": (path.name, path.read_bytes())}
    if args.manifest or sidecar.is_file():
        files["manifest"] = (sidecar.name, sidecar.read_bytes())
    report = api.json("POST", "/v1/provenance/verify", files=files)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        show_verification(path.name, report)
    accepted = ("Trusted", "Valid") if args.allow_untrusted else ("Trusted",)
    if report["validation_state"] not in accepted:
        raise CliError(f"{path.name}: " + ("no Content Credentials" if not report["found"]
                                           else f"Content Credentials {report['validation_state']}"), EXIT_UNVERIFIED)


def job_fraction(job: dict) -> float:
    progress = job.get("progress") or {}
    if job["status"] == "succeeded":
        return 1.0
    total = progress.get("segments_total") or 0
    return progress.get("segments_done", 0) / total if total else 0.0


def job_label(job: dict) -> str:
    progress = job.get("progress") or {}
    label = f"{job['id']} {job['status']}"
    if progress.get("segments_total"):
        label += f", {progress['segments_done']}/{progress['segments_total']} segments"
    if progress.get("audio_seconds"):
        label += f", {progress['audio_seconds']:.1f} s of audio"
    return label


def finished_job(job: dict) -> dict:
    """`job` if it succeeded; its error (in the API's words) as a CliError if it failed or was cancelled."""
    if job["status"] == "succeeded":
        return job
    error = job.get("error") or {}
    message = error.get("message") or f"the job was {job['status']}"
    raise CliError(f"job {job['id']} {job['status']}: {message} [{error.get('code') or job['status']}]",
                   EXIT_JOB_FAILED)


def wait_for_job(api: Api, job: dict) -> dict:
    """Poll until the job ends, drawing its progress on stderr."""
    bar = ProgressBar()
    try:
        while True:
            bar.update(job_fraction(job), job_label(job))
            if job["status"] not in ("queued", "running"):
                return finished_job(job)
            time.sleep(JOB_POLL_S)
            job = api.json("GET", f"/v1/jobs/{job['id']}")
    finally:
        bar.close()


def fetch_job_audio(api: Api, job_id: str, output: str) -> None:
    with api.stream("GET", f"/v1/jobs/{job_id}/audio") as chunks:
        size, _ = write_stream(chunks, output, api)
    if output != "-":
        say(f"wrote {output} ({size / 1024:.0f} KiB)")


def jobs_submit(api: Api, args: argparse.Namespace) -> None:
    fmt = output_format(args) if args.output else (args.format or "mp3")
    job = api.json("POST", "/v1/jobs", json=speech_body(args, fmt))
    print(job["id"], flush=True)
    if args.output or args.wait:
        job = wait_for_job(api, job)
    if args.output:
        fetch_job_audio(api, job["id"], args.output)


def jobs_status(api: Api, args: argparse.Namespace) -> None:
    job = api.json("GET", f"/v1/jobs/{args.id}")
    if args.wait:
        job = wait_for_job(api, job)
    if args.json:
        print(json.dumps(job, indent=2))
        return
    print(job_label(job))
    if job.get("error"):
        print(f"error: {job['error']['message']} [{job['error']['code']}]")
    if job["status"] in ("failed", "cancelled"):
        finished_job(job)


def jobs_fetch(api: Api, args: argparse.Namespace) -> None:
    if args.wait:
        wait_for_job(api, api.json("GET", f"/v1/jobs/{args.id}"))
    fetch_job_audio(api, args.id, args.output)


def jobs_list(api: Api, args: argparse.Namespace) -> None:
    jobs = api.json("GET", "/v1/jobs", params={"limit": args.limit})["data"]
    if args.json:
        print(json.dumps(jobs, indent=2))
        return
    for job in jobs:
        print(f"{job_label(job)}  voice={job['voice']}  {job['response_format']}  {job['created_at']}")
    if not jobs:
        say("no jobs")


def jobs_rm(api: Api, args: argparse.Namespace) -> None:
    for job_id in args.ids:
        response = api.call("DELETE", f"/v1/jobs/{job_id}")
        say(f"removed {job_id}" if response.status_code == 204 else f"cancelled {job_id}")
