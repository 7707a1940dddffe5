"""`f5voice`: the voice service from a shell, over its public HTTP API only.

Exit codes: 0 done; 2 usage (bad arguments, bad --url); 3 the API refused the request (HTTP 4xx);
4 the service failed or could not be reached (HTTP 5xx, connection, timeout, broken stream);
5 a job ended failed or cancelled.
Errors go to stderr with the API's own message and code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import httpx

EXIT_USAGE, EXIT_REFUSED, EXIT_FAILED, EXIT_JOB_FAILED = 2, 3, 4, 5
JOB_POLL_S = 0.5
DEFAULT_URL = "http://127.0.0.1:8000"
SUFFIX_FORMATS = {".mp3": "mp3", ".opus": "opus", ".ogg": "opus", ".aac": "aac", ".flac": "flac",
                  ".wav": "wav", ".pcm": "pcm", ".raw": "pcm"}
FORMATS = sorted(set(SUFFIX_FORMATS.values()))


class CliError(Exception):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def refused_or_failed(response: httpx.Response) -> CliError:
    """The API's own words for a non-2xx response, and the exit code its status class maps to."""
    code, message = f"http_{response.status_code}", response.reason_phrase
    try:
        error = response.json()["error"]
        code, message = error.get("code") or code, error.get("message") or message
    except (ValueError, KeyError, TypeError):
        pass
    detail = f"{code}, HTTP {response.status_code}"
    request_id = response.headers.get("x-request-id")
    if request_id and request_id not in message:
        detail += f", request {request_id}"
    return CliError(f"{message} [{detail}]", EXIT_REFUSED if response.status_code < 500 else EXIT_FAILED)


class Api:
    """The service's HTTP API; every failure becomes a CliError."""

    def __init__(self, url: str, api_key: str | None, timeout: float):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url
        # `timeout` bounds each wait (connect, each read), not the whole response: a long text streams.
        self.http = httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(timeout, connect=10))

    @contextmanager
    def failures(self) -> Iterator[None]:
        try:
            yield
        except httpx.TimeoutException as exc:
            raise CliError(f"{self.url} did not answer in time ({type(exc).__name__}).", EXIT_FAILED) from None
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach {self.url}: {exc or type(exc).__name__}", EXIT_FAILED) from None

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self.failures():
            response = self.http.request(method, path, **kwargs)
        if response.is_error:
            raise refused_or_failed(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.call(method, path, **kwargs).json()

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[Iterator[bytes]]:
        """The response body as it arrives; errors before the first byte keep their status code."""
        with self.failures(), self.http.stream(method, path, **kwargs) as response:
            if response.is_error:
                response.read()
                raise refused_or_failed(response)
            yield response.iter_bytes()


# ---- output ----

def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
    print(f"created:     {voice['created_at']}")
    for warning in voice.get("warnings") or []:
        say(f"warning: {warning}")


def show_voice_table(voices: list[dict]) -> None:
    if not voices:
        say("no voices")
        return
    width = max(4, *(len(v["name"]) for v in voices))
    print(f"{'NAME':<{width}}  {'CLIP':>6}  CLIPPED  FROM  TRANSCRIPT")
    for v in voices:
        text = v["ref_text"] if len(v["ref_text"]) <= 60 else v["ref_text"][:57] + "..."
        print(f"{v['name']:<{width}}  {v['duration_s']:>5.1f}s  {'yes' if v['clipped'] else 'no':<7}  "
              f"{v['ref_text_source']:<4}  {text}")


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


def voices_set_text(api: Api, args: argparse.Namespace) -> None:
    show_voice(api.json("PATCH", f"/v1/voices/{args.name}", json={"ref_text": args.text}), args.json)


def voices_rm(api: Api, args: argparse.Namespace) -> None:
    for name in args.names:
        api.call("DELETE", f"/v1/voices/{name}")
        say(f"deleted {name}")


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


def speech_body(args: argparse.Namespace, fmt: str) -> dict[str, Any]:
    text = sys.stdin.read() if args.text == "-" else args.text
    body: dict[str, Any] = {"voice": args.voice, "input": text, "response_format": fmt, "speed": args.speed}
    for field in ("seed", "nfe_step"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    return body


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


def say_command(api: Api, args: argparse.Namespace) -> None:
    fmt = output_format(args)
    body = {**speech_body(args, fmt), "stream": True}
    started = time.monotonic()  # the request's, not its response's: the service answers with the first audio
    with api.stream("POST", "/v1/audio/speech", json=body) as chunks:
        size, first_at = write_stream(chunks, args.output, api)
    if args.output != "-":
        first_note = f"first audio after {first_at - started:.2f} s, " if first_at is not None else ""
        say(f"wrote {args.output} ({size / 1024:.0f} KiB {fmt}; {first_note}"
            f"done in {time.monotonic() - started:.2f} s)")


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

    voices = commands.add_parser("voices", help="create, list, show, correct and remove voices")
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

    speak = commands.add_parser("say", parents=[common], help="speak text in a voice, streamed to a file or stdout")
    add_speech_arguments(speak)
    speak.set_defaults(run=say_command)
    add_jobs_commands(commands, common)
    return parser


def add_speech_arguments(parser: argparse.ArgumentParser, output_required: bool = True) -> None:
    parser.add_argument("text", help="the text to speak; '-' reads it from stdin")
    parser.add_argument("--voice", "-v", required=True)
    parser.add_argument("--output", "-o", required=output_required, help="audio file to write; '-' for stdout")
    parser.add_argument("--format", "-f", choices=FORMATS, help="default: from the output's suffix (mp3 for -)")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--nfe-step", type=int, dest="nfe_step", help="sampling steps (quality vs speed)")


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
