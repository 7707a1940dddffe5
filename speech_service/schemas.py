"""HTTP request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .store import VoiceRecord

ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]


class SpeechRequest(BaseModel):
    """OpenAI's `POST /v1/audio/speech` body plus F5-TTS's sampling knobs."""

    model_config = ConfigDict(extra="forbid")

    model: str = "f5-tts"
    input: str = Field(..., description="Text to speak")
    voice: str = Field(..., description="Name of a stored voice")
    response_format: ResponseFormat = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    # F5-TTS extensions; None = the Synthesizer's configured default.
    nfe_step: int | None = Field(None, ge=1, le=128)
    cfg_strength: float | None = Field(None, ge=0.0, le=10.0)
    sway_sampling_coef: float | None = Field(None, ge=-1.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    cross_fade_duration: float | None = Field(None, ge=0.0, le=1.0)
    stream: bool = False
    # Sent by some OpenAI clients; accepted and ignored.
    instructions: str | None = None
    stream_format: Literal["audio"] | None = None


class VoiceCreated(VoiceRecord):
    warnings: list[str] = Field(default_factory=list, description="e.g. why a supplied ref_text was replaced")


class VoiceList(BaseModel):
    voices: list[VoiceRecord]


class VoicePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ref_text: str


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
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


class JobList(BaseModel):
    """Recent jobs first; pass `last_id` as `after` for the next page."""

    object: Literal["list"] = "list"
    data: list[Job]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
