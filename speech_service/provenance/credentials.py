"""Content Credentials (C2PA) on the speech the service makes, and their verification.
docs/ARCHITECTURE.md, "Provenance".

A whole wav, mp3 or flac file carries its manifest inside; every other output (opus, aac, pcm, and
every stream, whose bytes are gone before the last is known) gets a detached manifest, a sidecar,
bound to the exact bytes sent as one opaque blob (a C2PA data hash over every byte)."""

from __future__ import annotations

import functools
import io
import logging
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from speech_service.config import ProvenanceSettings
from speech_service.errors import BadRequest
from speech_service.provenance.development import make_signer

logger = logging.getLogger(__name__)

# Formats whose whole files carry the manifest inside them.
EMBEDDED = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac"}
# How a sidecar sees the bytes it binds: as opaque data. (Signed as mp3 or flac, a sidecar would
# bind the file as the library rewrites it, not the bytes already sent.)
OPAQUE = "application/octet-stream"
SIDECAR_MEDIA_TYPE = "application/c2pa"
ASSERTION = "org.f5voice.speech"  # the service's own assertion: who made this speech, from what
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
SERVICE = "f5-voice-service"
# Verification reads files anyone sends, so the library must connect nowhere for them: by default it
# fetches the remote manifest a file's XMP names (`dcterms:provenance`), an address the sender
# chooses, and may fetch OCSP, timestamp or did:web documents. Fetching is off, no host is allowed
# (an empty allowed list refuses every request the library would make) and redirects are not followed.
OFFLINE = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
           "core": {"allowed_network_hosts": [], "allow_redirects": False}}


@functools.cache  # a metadata lookup scans the installed distributions; signing asks for it every time
def _service_version() -> str:
    try:
        return metadata.version(SERVICE)
    except metadata.PackageNotFoundError:
        return "unknown"


def _pem(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"provenance: cannot read {path}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class SpeechFacts:
    """What the service's assertion says about one piece of speech."""

    voice: str
    text_sha256: str
    request_id: str
    key: str | None  # the API key's name; None when the service has no keys
    model: str  # the model name the request asked for
    consent_id: str | None = None
    # Who spoke, when more than the voice's own clip did: "voice" or "voice:style" per voice and take
    # (a dialogue, a style); left out of the assertion when empty.
    speakers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verification:
    state: str  # C2PA's validation state: Trusted, Valid or Invalid
    embedded: bool
    failures: list[str]  # the validation codes that failed, e.g. assertion.dataHash.mismatch
    manifest: dict[str, Any]  # the active manifest as the C2PA library reads it
    speech: dict[str, Any] | None  # the service's assertion, when the manifest has one


class ContentCredentials:
    """Signs with the operator's key and chain (`ProvenanceSettings`), or, with none configured, a
    throwaway development signer made here (untrusted, and said so in the log); verifies against the
    configured trust anchors."""

    def __init__(self, settings: ProvenanceSettings):
        import c2pa  # its native library loads only where signing happens (the Ingress)

        self._c2pa = c2pa
        if settings.certificate_chain:
            chain, key = _pem(settings.certificate_chain), _pem(settings.private_key)
            anchors = _pem(settings.trust_anchors) if settings.trust_anchors else ""
        else:
            logger.warning("provenance: no certificate_chain configured; signing with a throwaway "
                           "UNTRUSTED development certificate")
            files = make_signer()
            chain, key, anchors = files.chain, files.key, ""
        # Passed to every Reader (the library's process-wide settings stay as they are).
        self._context = c2pa.Context.from_dict(_verification_settings(anchors))
        # The library reads back every manifest it signs (more than half of the signing time); the
        # manifests differ only in their facts, so one probe read back at start stands for them.
        self._signing = c2pa.Context.from_dict({"verify": {"verify_after_sign": False}})
        try:
            self._signer = c2pa.Signer.from_info(
                c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain.encode(), key.encode(), None))
            probe = self.sidecar(b"\0", SpeechFacts("probe", "", "probe", None, "probe"))
        except c2pa.C2paError as exc:
            raise ValueError(f"provenance: the certificate chain and key do not make an ES256 signer: {exc}") from exc
        # A key that does not match its certificate fails here, at start, not in every request.
        verified = self.verify(b"\0", probe)
        if verified is None or verified.state == "Invalid":
            raise ValueError("provenance: the certificate chain and key do not make an ES256 signer: what they "
                             f"sign does not verify ({', '.join(verified.failures) if verified else 'unreadable'})")

    def manifest(self, facts: SpeechFacts) -> dict[str, Any]:
        return {
            "claim_generator_info": [{"name": SERVICE, "version": _service_version()}],
            "title": f"Speech in the voice '{facts.voice}'",
            "assertions": [
                {"label": "c2pa.actions.v2", "data": {"actions": [{
                    "action": "c2pa.created", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                    "softwareAgent": {"name": "F5-TTS", "version": facts.model}}]}},
                {"label": ASSERTION, "data": {k: v for k, v in asdict(facts).items() if k != "speakers" or v}},
            ],
        }

    def embed(self, data: bytes, fmt: str, facts: SpeechFacts) -> bytes:
        """`data` (a whole file in `fmt`, one of EMBEDDED) with its manifest inside."""
        signed = io.BytesIO()
        builder = self._c2pa.Builder(self.manifest(facts), self._signing)
        builder.sign(self._signer, EMBEDDED[fmt], io.BytesIO(data), signed)
        return signed.getvalue()

    def sidecar(self, data: bytes, facts: SpeechFacts) -> bytes:
        """A detached manifest bound to exactly `data`."""
        builder = self._c2pa.Builder(self.manifest(facts), self._signing)
        builder.set_no_embed()
        return builder.sign(self._signer, OPAQUE, io.BytesIO(data), io.BytesIO())

    def verify(self, data: bytes, sidecar: bytes | None = None, media_type: str | None = None) -> Verification | None:
        """The manifest of `data` (embedded, or `sidecar`) and whether it holds; None when `data`
        carries none. `media_type` is the file's type when it has an embedded manifest."""
        c2pa = self._c2pa
        if sidecar is None and media_type not in EMBEDDED.values():
            return None  # nothing else can carry a manifest inside
        try:
            if sidecar is not None:
                reader = c2pa.Reader(OPAQUE, io.BytesIO(data), sidecar, context=self._context)
            else:
                reader = c2pa.Reader.try_create(media_type, io.BytesIO(data), None, context=self._context)
            if reader is None:
                return None
            with reader:
                return _verification(reader)
        except c2pa.C2paError as exc:
            # The library's words may name its internals or an address the file gave: the log keeps them.
            logger.info("provenance: Content Credentials could not be read: %s", exc)
            raise _unreadable(sidecar is not None) from exc


def _verification_settings(anchors: str) -> dict[str, Any]:
    """The library's settings for verification: offline, and with the trust anchors, when configured."""
    if not anchors:
        return OFFLINE
    return {**OFFLINE, "verify": {**OFFLINE["verify"], "verify_trust": True}, "trust": {"trust_anchors": anchors}}


def _verification(reader: Any) -> Verification:
    manifest = reader.get_active_manifest() or {}
    results = reader.get_validation_results() or {}
    failures = [f.get("code", "") for f in results.get("activeManifest", {}).get("failure", [])]
    speech = next((a["data"] for a in manifest.get("assertions", []) if a.get("label") == ASSERTION), None)
    return Verification(reader.get_validation_state() or "Invalid", reader.is_embedded(), failures, manifest, speech)


def _unreadable(detached: bool) -> BadRequest:
    if detached:
        return BadRequest("The manifest could not be read: it is not a C2PA manifest store, or it is damaged.",
                          code="unreadable_manifest", param="manifest")
    return BadRequest("The file's Content Credentials could not be read: they are damaged, or kept elsewhere "
                      "(a remote manifest, which this service does not fetch: send it as `manifest`).",
                      code="unreadable_manifest", param="file")
