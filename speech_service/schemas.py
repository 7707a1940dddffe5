"""HTTP request and response bodies."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from speech_service.config import QualityCheck, SynthesisOptions
from speech_service.storage.audit import AuditEntry
from speech_service.storage.consent import ConsentRecord
from speech_service.storage.voices import NAME_RE, VoiceRecord

VOICE_NAME_PATTERN = NAME_RE.pattern
LANGUAGE_PATTERN = r"^([a-z]{2,3})?$"  # an ISO 639 code as Whisper names languages; empty = detect

ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]


_INVISIBLE = {"Cc": " ", "Cf": ""}  # Unicode categories: control characters, format characters


class SpeechRequest(SynthesisOptions):
    """OpenAI's `POST /v1/audio/speech` body plus F5-TTS's sampling knobs (`SynthesisOptions`: `speed`,
    `nfe_step`, `cfg_strength`, `sway_sampling_coef`, `seed`, `cross_fade_duration`; unset = the
    Synthesizer's configured default)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"model": "tts-1", "input": "Hello there.", "voice": "alice", "response_format": "wav", "nfe_step": 4},
    ]})

    model: str = "f5-tts"
    input: str = Field(..., pattern=r"\S", description="Text to speak (not only whitespace)")
    voice: str = Field(..., pattern=VOICE_NAME_PATTERN, description="Name of a stored voice")
    response_format: ResponseFormat = "mp3"
    stream: bool = False
    # OpenAI's: "sse" streams events with base64 audio, "audio" (the default) the audio itself.
    stream_format: Literal["audio", "sse"] | None = None
    instructions: str | None = Field(None, description="OpenAI's; naming a style of the voice picks that take")
    style: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,32}$", description="A take of the voice "
                              "(POST /v1/voices/{name}/styles); unset: one `instructions` names, else its own clip")
    lexicons: list[Annotated[str, Field(pattern=VOICE_NAME_PATTERN)]] = Field(
        [], max_length=8, description="Pronunciation lexicons, applied before the voice's own")
    timestamps: Literal["word"] | None = Field(None, description=(
        '"word": word timings heard in the audio made, on the caller\'s own text (a whole response '
        'comes as JSON with the audio; a stream with `stream_format: "sse"` interleaves '
        '`speech.audio.timestamps` events; a job keeps them at /v1/jobs/{id}/captions)'))
    quality: QualityCheck | bool | None = Field(None, description=(
        "Check each segment made against its text, and make it again while it fails: true, false, "
        "or the check's settings; unset: the operator's default"))

    @field_validator("input", mode="before")
    @classmethod
    def _drop_invisible(cls, value: object) -> object:
        """Control characters become spaces and format characters (zero-width spaces, soft hyphens,
        byte-order marks) go: the model cannot say them, and a text of nothing else is empty."""
        if not isinstance(value, str) or value.isprintable():
            return value
        return "".join(_INVISIBLE.get(unicodedata.category(c), c) if c not in "\t\n\r" else c for c in value)

    def options(self) -> SynthesisOptions:
        """The sampling knobs alone: what travels to the Synthesizer."""
        return SynthesisOptions.model_validate(self.model_dump(include=set(SynthesisOptions.model_fields)))


class SpeechUsage(BaseModel):
    input_tokens: int = Field(..., description="Characters of `input` (F5 reads characters)")
    output_tokens: int = Field(..., description="Mel frames made (256 samples each; F5 writes frames)")
    total_tokens: int


class SpeechAudioDelta(BaseModel):
    """One event of `stream_format: "sse"`: the next piece of the encoded audio."""

    type: Literal["speech.audio.delta"] = "speech.audio.delta"
    audio: str = Field(..., description="Base64 of the next bytes of audio in `response_format`")


class SpeechAudioDone(BaseModel):
    """The last event of `stream_format: "sse"`."""

    type: Literal["speech.audio.done"] = "speech.audio.done"
    usage: SpeechUsage


class Caption(BaseModel):
    """One word of the caller's `input` and when it is spoken; a span the service wrote out as
    several words ("$5.20") is one caption."""

    text: str = Field(..., description="input[text_start:text_end]")
    start: float = Field(..., description="seconds from the start of the audio")
    end: float
    text_start: int = Field(..., description="offset in `input`, in characters")
    text_end: int
    interpolated: bool = Field(False, description="not heard in the audio: its time is estimated from its neighbours")
    speaker: str | None = Field(None, description="in a dialogue, the voice that says it")


class SegmentQuality(BaseModel):
    """How one segment did in the quality check."""

    index: int
    text: str = Field(..., description="what the model was asked to say")
    wer: float = Field(..., description="word error rate of the kept attempt")
    attempts: int
    seeds: list[int] = Field(..., description="the seed of each attempt, in order")
    passed: bool


class QualityReport(BaseModel):
    passed: bool
    max_wer: float
    segments: list[SegmentQuality]


class SpeechWithTimestamps(BaseModel):
    """A whole speech response asked for with `timestamps`."""

    object: Literal["speech.timestamps"] = "speech.timestamps"
    audio: str = Field(..., description="Base64 of the audio in `response_format`")
    response_format: ResponseFormat
    duration: float = Field(..., description="seconds of audio")
    words: list[Caption]
    quality: QualityReport | None = None
    warnings: list[str] = Field(default_factory=list)


class SpeechTimestamps(BaseModel):
    """A stream's event: the words of the segment whose audio was just sent."""

    type: Literal["speech.audio.timestamps"] = "speech.audio.timestamps"
    words: list[Caption]


class SpeechQualityEvent(BaseModel):
    """A stream's event: how the segment whose audio was just sent did in the quality check."""

    type: Literal["speech.audio.quality"] = "speech.audio.quality"
    segment: SegmentQuality
    warning: str | None = None


class VoiceCreated(VoiceRecord):
    warnings: list[str] = Field(default_factory=list, description="e.g. why a supplied ref_text was replaced")


class VoiceList(BaseModel):
    voices: list[VoiceRecord]


class VoicePatch(BaseModel):
    """A correction of the transcript, the model the voice is spoken with (null: the default) and/or
    the lexicons it is spoken with (null or []: none), in any combination."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    ref_text: str | None = None
    model: str | None = None
    lexicons: list[Annotated[str, Field(pattern=VOICE_NAME_PATTERN)]] | None = Field(
        None, max_length=16, description="Names of pronunciation lexicons, applied in this order")

    @model_validator(mode="after")
    def _changes_something(self) -> VoicePatch:
        if not self.model_fields_set:
            raise ValueError("send ref_text, model, lexicons or any of them together")
        if self.lexicons:  # a lexicon named twice is applied once, where it first stands
            self.lexicons = list(dict.fromkeys(self.lexicons))
        return self


class ErrorBody(BaseModel):
    """OpenAI's error object."""

    message: str = Field(..., description="What went wrong, ending with the request id")
    type: str = Field(..., description="invalid_request_error, authentication_error, rate_limit_error, "
                                       "server_error, service_unavailable or timeout_error")
    param: str | None = Field(None, description="The request field at fault, if one is")
    code: str = Field(..., description="Machine-readable reason, e.g. voice_not_found")


class ErrorResponse(BaseModel):
    error: ErrorBody


class SpeechStreamError(BaseModel):
    """The last event of a `stream_format: "sse"` stream that broke off after audio was sent (its
    replica went away): the audio before it is incomplete."""

    type: Literal["error"] = "error"
    error: ErrorBody


# -- jobs (`/v1/jobs`) --------------------------------------------------------------------------
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobProgress(BaseModel):
    segments_done: int = 0
    segments_total: int = 0
    audio_seconds: float = 0.0


class JobError(BaseModel):
    code: str
    message: str


class KeyInfo(BaseModel):
    """`GET /v1/me`: the calling key (name None when the service has no keys) and its scopes."""

    name: str | None
    scopes: list[str]


class Job(BaseModel):
    """A job as the API shows it (the stored record has more: the request, the runner's lease)."""

    id: str
    object: Literal["speech.job"] = "speech.job"
    status: JobStatus
    voice: str
    model: str
    response_format: ResponseFormat
    input_chars: int
    progress: JobProgress
    error: JobError | None = Field(None, description="why the job failed")
    last_error: JobError | None = Field(None, description="why the previous attempt did not finish")
    attempts: int
    max_attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = Field(None, description="when a finished job and its audio are removed")
    audio_url: str | None = Field(None, description="set once the job has succeeded")
    captions_url: str | None = Field(None, description="set once a job that asked for timestamps has succeeded: "
                                                        "its words as JSON, or ?format=vtt|srt")
    quality: QualityReport | None = Field(None, description="the quality check's report, once succeeded")


class JobCaptions(BaseModel):
    object: Literal["speech.captions"] = "speech.captions"
    job_id: str
    words: list[Caption]


class JobList(BaseModel):
    """Recent jobs first; pass `last_id` as `after` for the next page."""

    object: Literal["list"] = "list"
    data: list[Job]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class SpeechProvenance(BaseModel):
    """The service's own assertion in a manifest it signed (`org.f5voice.speech`)."""

    voice: str
    text_sha256: str = Field(description="sha256 of the input text, hex")
    request_id: str = Field(description="the request's X-Request-ID, or the job's id")
    key: str | None = Field(None, description="the API key's name; null on a service without keys")
    model: str
    consent_id: str | None = None


class ProvenanceVerification(BaseModel):
    object: Literal["provenance.verification"] = "provenance.verification"
    found: bool = Field(description="false: the file carries no Content Credentials (and none were sent)")
    validation_state: Literal["Trusted", "Valid", "Invalid"] | None = Field(
        None, description="C2PA's verdict: Trusted (signed by a chain this service trusts), Valid (intact, "
                          "signer not trusted here), Invalid (changed since signing, or a bad signature)")
    embedded: bool | None = Field(None, description="whether the manifest was inside the file")
    failures: list[str] = Field(default_factory=list, description="C2PA validation codes that failed")
    speech: SpeechProvenance | None = Field(None, description="what this service's assertion says, if present")
    manifest: dict | None = Field(None, description="the active manifest as C2PA readers show it")
    message: str | None = Field(None, description="when nothing was found: why, and what to send instead")


class ConsentList(BaseModel):
    current: str | None = Field(description="The id of the consent the voice's clip has now; None: none")
    records: list[ConsentRecord] = Field(description="Every consent recorded for this voice name, oldest first")


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    since: datetime = Field(description="The range read: from (366 days before `until` at most)")
    until: datetime = Field(description="up to, not including")
    truncated: bool = Field(description="More entries matched than `limit`: ask again from the last one's time")

