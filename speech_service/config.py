"""All configuration in one typed place. `ServiceSettings` is the `args` block of the application in
`config/serve.yaml` (read by the app builder). `SynthesizerSettings` and `TranscriberSettings` are the
`user_config` of those deployments, so operators can change them without a redeploy."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from speech_service.models import F5_BASE_CHECKPOINT, VOCOS_24KHZ, WEIGHT_FIELDS, ModelRegistry, ModelSpec
from speech_service.options import F5_DEFAULTS, Strict, SynthesisOptions


class SynthesizerSettings(Strict):
    """`user_config` of the Synthesizer deployment. Which models there are is the application's
    `models`; this is how each replica runs them."""

    model_name: str = "F5TTS_v1_Base"  # older configs: the default model's name in logs
    # Older configs: the default model's weights (see WEIGHT_FIELDS); a registry entry states its own.
    architecture: str = "F5TTS_v1_Base"
    architecture_overrides: dict = Field(default_factory=dict)
    checkpoint: str = F5_BASE_CHECKPOINT
    vocab: str = ""
    vocoder: str = VOCOS_24KHZ
    cache_dir: str = "models/cache"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    use_ema: bool = True
    defaults: SynthesisOptions = Field(default_factory=SynthesisOptions)  # over F5_DEFAULTS
    # Models one replica holds at once; loading one more unloads the least recently used (its GPU
    # memory released). Requests are routed to replicas that hold their model.
    max_models: int = Field(2, ge=1, le=64)
    # Models loaded when the replica starts (names of the registry), before it takes requests; the
    # rest load on their first request. None: the default model; []: none (a replica started for
    # another model's request loads only that one).
    preload: list[str] | None = None
    # After a model failed to load, requests for it are answered 503 at once for this long before
    # a load is tried again (a missing file is not fetched once per request).
    load_retry_s: float = Field(30.0, ge=0)
    # Span (reference + generated speech) one model call aims at; text is split to fit it, as
    # f5-tts's own inference does with 22 s. A segment estimated at over 1.5x this (or over the
    # 8192 frames of F5's text position table) is refused rather than sent to the model.
    max_segment_seconds: float = Field(22.0, gt=1.0, le=60.0)
    # torch threads; None = the CPUs Ray gave the replica, rounded up (see speech_service.devices).
    cpu_threads: int | None = Field(None, ge=1, le=256)
    # Batching (continuous): a free model starts on the segments queued for it, up to `max_batch_size`; segments
    # arriving while it runs queue for its next call, so concurrent requests (and the segments of one long request)
    # that share sampling knobs run as one model call. `batch_wait_timeout_s` is how long an idle model waits for
    # company before starting (0: it starts at once; a busy model never waits). `max_batch_frames` bounds the padded
    # frames (items x longest) of one model call, which is what GPU memory grows with (more so with the attention
    # mask batches need).
    max_batch_size: int = Field(8, ge=1, le=64)
    batch_wait_timeout_s: float = Field(0.0, ge=0.0, le=1.0)
    max_batch_frames: int = Field(16384, ge=1024)
    # Numbers, amounts, times and symbols of English text spelled out as words before the model reads
    # them (request text and the voice's transcript alike; `speech_service.text.spoken`).
    normalize_text: bool = True
    # Voices' clips a replica keeps prepared per model (a mel on its device, ~0.5 MB for 15 s), by sha256.
    reference_cache_size: int = Field(64, ge=1, le=4096)

    def weights_of(self, spec: ModelSpec, default: bool) -> ModelSpec:
        """`spec`, and for the default model the weight fields this user_config states (older configs)."""
        stated = set(WEIGHT_FIELDS) & self.model_fields_set if default else set()
        return spec.model_copy(update={field: getattr(self, field) for field in stated})


class TranscriberSettings(Strict):
    """`user_config` of the Transcriber deployment."""

    model: str = "large-v3-turbo"  # a faster-whisper model name, or a local CTranslate2 directory
    cache_dir: str = "models/cache"
    device: str = "auto"
    compute_type: str = "default"
    beam_size: int = Field(5, ge=1, le=10)
    # CTranslate2 threads; None = the CPUs Ray gave the replica, rounded up.
    cpu_threads: int | None = Field(None, ge=1, le=256)


class StoreSettings(Strict):
    """Where voices and jobs live: a local directory (default) or an S3 bucket. S3 credentials come
    from boto3's own chain (AWS_* variables, shared config, instance profile), never from here."""

    kind: Literal["local", "s3"] = "local"
    path: str = "data"  # local: the directory
    bucket: str = ""  # s3: the bucket (must exist)
    prefix: str = ""  # s3: keys go under this prefix, e.g. "tts/"
    endpoint_url: str | None = None  # s3: for MinIO, R2, SeaweedFS, ...; None = AWS (or AWS_ENDPOINT_URL)
    region: str | None = None  # s3: None = boto3's default
    # Bounded waits: an unreachable S3 answers 503 within seconds, not minutes.
    connect_timeout_s: float = Field(2.0, gt=0, le=60)
    read_timeout_s: float = Field(5.0, gt=0, le=300)
    max_attempts: int = Field(2, ge=1, le=10)  # per S3 call, the first try included

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> StoreSettings:
        if self.kind == "s3" and not self.bucket:
            raise ValueError("store.kind 's3' needs store.bucket")
        return self


class LimitSettings(Strict):
    # Bodies counted as they arrive (http/middleware.py): a file of a route that takes files; any other body.
    max_upload_bytes: int = Field(50 * 1024 * 1024, gt=0)
    max_json_bytes: int = Field(1024 * 1024, ge=64 * 1024)
    min_reference_seconds: float = 0.3
    max_reference_seconds: float = 600.0
    max_clip_seconds: float = 12.0
    max_styles_per_voice: int = Field(16, ge=0, le=256)  # takes a voice may hold besides its own clip
    # Wall-clock bound on decoding one upload; past it ffmpeg is stopped and the upload refused (422).
    decode_timeout_s: float = Field(30.0, gt=0, le=600)
    max_input_chars: int = Field(4096, gt=0)
    # Plausible speaking rate of a reference transcript, in characters per second of clip.
    min_ref_chars_per_second: float = 0.3
    max_ref_chars_per_second: float = 30.0
    # How long a model call (a stream's: till its first audio; a cold start included) may take: 504 `request_timeout`.
    request_timeout_s: float = Field(300.0, gt=0)
    # Sockets per Ingress replica; each holds one of its max_ongoing_requests, so keep below that (ARCHITECTURE).
    max_sockets: int = Field(100, ge=0)
    # Live pieces an Ingress replica has at the Synthesizer at once (the rest wait): its queue keeps room for HTTP.
    max_live_pieces: int = Field(16, ge=1)
    # How long a request waits for a replica no node can host (a node may be added) before 503 `capacity_unavailable`.
    capacity_wait_s: float = Field(30.0, gt=0)
    # `Retry-After` of our 503s when Serve's backpressure_config does not give one.
    retry_after_s: float = Field(5.0, ge=1)
    # Keyless callers (public catalog, 401s) per address and Ingress replica (behind HAProxy: one); open mode: no limit.
    anonymous_requests_per_minute: float = Field(600.0, gt=0)
    # A pronunciation lexicon (docs/ARCHITECTURE.md, "Lexicons"): its rules, their characters, its JSON or PLS bytes.
    max_lexicon_rules: int = Field(5000, ge=1, le=100_000)
    max_grapheme_chars: int = Field(50, ge=1, le=1000)
    max_alias_chars: int = Field(200, ge=1, le=2000)
    max_lexicon_bytes: int = Field(512 * 1024, ge=1024, le=16 * 1024 * 1024)

    @model_validator(mode="after")
    def _json_fits_the_input(self) -> LimitSettings:
        least = 6 * self.max_input_chars + 16 * 1024  # a character is at most 6 bytes of JSON (\uXXXX)
        if self.max_json_bytes < least:
            raise ValueError(f"limits.max_json_bytes must be at least {least} to hold max_input_chars of JSON")
        return self


class JobSettings(Strict):
    """Asynchronous speech jobs (`/v1/jobs`); see docs/ARCHITECTURE.md, "Jobs"."""

    result_ttl_s: float = Field(24 * 3600, gt=0)  # a finished job and its audio are removed after this
    max_attempts: int = Field(3, ge=1, le=10)  # runs of one job, counting retries after a lost runner
    lease_s: float = Field(30.0, gt=0)  # a running job whose lease is this old has lost its runner
    sweep_interval_s: float = Field(10.0, gt=0)  # how often each ingress looks for lost and expired jobs
    retry_delay_s: float = Field(2.0, ge=0)
    # Jobs one ingress runs at once (the rest wait `queued`): room in the Synthesizer's queue for interactive speech.
    max_running: int = Field(32, ge=1)
    segment_chars: int = Field(400, ge=20)  # older configs' (ignored): a job's segments are the Synthesizer's plan
    segment_timeout_s: float = Field(600.0, gt=0)  # one Synthesizer call longer than this is a failed attempt


class QualityCheck(Strict):
    """The quality check: each segment made is transcribed by the Transcriber and compared with what
    it should say; one over `max_wer` (word error rate) is made again with the next seed, up to
    `retries` times, and the best attempt kept. With `require`, a segment that never passes fails
    the request (422 `quality_check_failed`); without, the response carries a warning. In a request
    (`"quality": {...}`) unset fields take the operator's `quality` settings."""

    model_config = ConfigDict(extra="forbid", strict=True)  # a request's part: `"require": 0` is no bool
    max_wer: float | None = Field(None, ge=0.0, le=10.0)
    retries: int | None = Field(None, ge=0, le=5)
    require: bool | None = None


class QualitySettings(Strict):
    """The operator's quality check (`quality` in the application's args): its defaults, and
    whether every request is checked unless it sends `"quality": false`."""

    check_by_default: bool = False
    max_wer: float = Field(0.35, ge=0.0, le=10.0)
    retries: int = Field(2, ge=0, le=5)
    require: bool = False
    # The most retries a request may ask for: each is a synthesis and a Whisper pass per segment.
    max_retries: int = Field(5, ge=0, le=5)

    @model_validator(mode="after")
    def _default_within_the_cap(self) -> QualitySettings:
        if self.retries > self.max_retries:
            raise ValueError(f"quality.retries ({self.retries}) is over quality.max_retries ({self.max_retries})")
        return self

    def resolve(self, asked: QualityCheck | bool | None) -> QualityCheck | None:
        """The check a request gets, every field set; None when it gets none."""
        if asked is False or (asked is None and not self.check_by_default):
            return None
        own = QualityCheck(max_wer=self.max_wer, retries=self.retries, require=self.require)
        return own if asked in (None, True) else own.model_copy(update=asked.model_dump(exclude_none=True))


class ProvenanceSettings(Strict):
    """Content Credentials (C2PA) on every file the service makes; docs/ARCHITECTURE.md, "Provenance".
    PEM files: the signing certificate then its issuers, its private key (ES256, P-256), and the CAs
    that verification reports as Trusted. No chain: a throwaway untrusted development signer."""

    certificate_chain: str = ""
    private_key: str = ""
    trust_anchors: str = ""
    sidecar_ttl_s: float = Field(7 * 24 * 3600, gt=0)  # how long `GET /v1/provenance/{id}` keeps a sidecar
    # How long `GET /v1/provenance/{id}` waits for a sidecar still being stored (signed after its response).
    landing_wait_s: float = Field(2.0, ge=0, le=30)

    @model_validator(mode="after")
    def _key_with_chain(self) -> ProvenanceSettings:
        if bool(self.certificate_chain) != bool(self.private_key):
            raise ValueError("provenance: certificate_chain and private_key go together")
        return self


RequiredConsent = Literal["none", "attested", "spoken"]


class ConsentSettings(Strict):
    """Spoken consent (`POST /v1/voices/{name}/consent`): the challenge phrase the speaker reads,
    heard by the Transcriber. Which consent synthesis needs is `require_consent`."""

    max_wer: float = Field(0.4, ge=0.0, le=1.0)  # of the phrase's 15 words, up to 6 misheard
    challenge_ttl_s: float = Field(600.0, gt=0)  # how long a phrase may be answered
    max_recording_s: float = Field(30.0, gt=0, le=120)


class AuditSettings(Strict):
    """The audit trail (`GET /v1/audit`): entries are appended in batches off the request's path,
    and a batch the store refused is retried (backoff up to `max_retry_delay_s`) until it lands."""

    flush_interval_s: float = Field(1.0, gt=0)
    max_retry_delay_s: float = Field(30.0, gt=0)
    # Entries this replica may hold unwritten while the store is down; past it the oldest are
    # dropped, each logged as an error (bounded memory over an unbounded outage).
    max_pending: int = Field(100_000, ge=1)


class ApiKey(Strict):
    """One API key: its name (in logs, job ownership and errors), the key itself or `sha256:<hex>`
    of it (so the config holds no secret), its scopes and its limits (per Ingress replica)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    key: str = Field(min_length=1)
    scopes: list[Literal["admin", "speak"]] = Field(default_factory=lambda: ["admin"], min_length=1)
    requests_per_minute: float | None = Field(None, gt=0)
    max_concurrent: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _hash_is_a_sha256(self) -> ApiKey:
        if self.key.startswith("sha256:") and not re.fullmatch(r"[0-9a-f]{64}", self.key.removeprefix("sha256:")):
            raise ValueError(f"api key '{self.name}': a sha256: key needs 64 hex digits (lowercase)")
        return self


class ServiceSettings(Strict):
    """The application's `args` in `config/serve.yaml`."""

    store: StoreSettings = Field(default_factory=StoreSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    provenance: ProvenanceSettings = Field(default_factory=ProvenanceSettings)
    # Which consent a voice needs before it is spoken: none, attested (stated by who uploaded
    # it) or spoken (its speaker read a challenge phrase); spoken satisfies attested.
    require_consent: RequiredConsent = "none"
    consent: ConsentSettings = Field(default_factory=ConsentSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    # Keys for /v1/*: each a plain string (an admin key, as before scopes) or an `ApiKey`; none: open.
    api_keys: list[str | ApiKey] = Field(default_factory=list)
    # No api_keys on an address that is not loopback: the Ingress refuses to start unless this is true.
    allow_anonymous_admin: bool = False
    # `GET /v1/audio/voices` and `/v1/audio/models` (names only) answer without a key: Open WebUI
    # reads them without sending its key.
    public_catalog: bool = False
    # The models requests may pick (`model`); the first is the default unless `default_model` names
    # another. Empty: the one F5TTS_v1_Base (its weights as the Synthesizer's user_config states them).
    models: list[ModelSpec] = Field(default_factory=list)
    default_model: str | None = None
    # Names that mean "the voice's model, else the default" (OpenAI clients send e.g. "tts-1").
    accepted_models: list[str] = Field(default_factory=lambda: ["f5-tts", "F5TTS_v1_Base", "tts-1", "tts-1-hd",
                                                                "gpt-4o-mini-tts"])

    def keys(self) -> list[ApiKey]:
        """Every key as an `ApiKey`; a plain string is the admin key `key-<position>`."""
        return [k if isinstance(k, ApiKey) else ApiKey(name=f"key-{i}", key=k)
                for i, k in enumerate(self.api_keys, 1)]

    @model_validator(mode="after")
    def _key_names_are_unique(self) -> ServiceSettings:
        names = [k.name for k in self.keys()]
        if len(names) != len(set(names)):
            raise ValueError("api_keys: key names must be unique")
        return self

    @model_validator(mode="after")
    def _models_are_named_once(self) -> ServiceSettings:
        ModelRegistry.of(self)  # raises on a name given twice or an unknown default_model
        return self


__all__ = ["F5_DEFAULTS", "SynthesisOptions", "ModelSpec"]  # imported from here by most modules
