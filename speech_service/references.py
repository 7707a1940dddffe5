"""A voice's reference as it travels from the Ingress to the Synthesizer (plain data: no torch).

A request names its voice's clip by sha256 and carries the transcript; the clip's bytes go only to
a replica that lacks them (`synthesis.clips.ClipCache`, docs/ARCHITECTURE.md, "Reference cache").
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Reference:
    """What the model needs of a voice: its transcript and its clip, named by the clip's sha256."""

    voice: str
    sha256: str
    ref_text: str
    wav: bytes | None = None  # the stored clip (24 kHz mono WAV); None: named only
    language: str | None = None  # the voice's, as Whisper names it (what the speech made is heard as)
    consent_id: str | None = None  # not for the model: the credentials and the audit entry name it
    # The registry name of the model that speaks it (`models.ModelRegistry.resolve`): a replica
    # prepares the clip, and Serve routes the call, per model.
    model: str = "F5TTS_v1_Base"
    style: str | None = None  # the voice's take it names (None: the voice's own clip)

    def named(self) -> Reference:
        """This reference without the clip's bytes."""
        return replace(self, wav=None) if self.wav is not None else self
