"""The model registry: which models requests may pick, by which names, and which is the default.

The Ingress resolves a request's (or job's) `model` to one registry name, so a request never reaches
a Synthesizer with a name it would not know; the Synthesizer loads that name's weights on demand
(`synthesis.engines.EngineCache`) and Serve routes the call to a replica that holds it
(docs/ARCHITECTURE.md, "Models"). Plain data: no torch.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pydantic import Field

from speech_service.errors import BadRequest, Unprocessable
from speech_service.options import Strict, SynthesisOptions

if TYPE_CHECKING:
    from speech_service.config import ServiceSettings

F5_BASE_CHECKPOINT = "hf://SWivid/F5-TTS/F5TTS_v1_Base/model_1250000.safetensors"
VOCOS_24KHZ = "hf://charactr/vocos-mel-24khz"
# An entry's weight fields; the Synthesizer's user_config may still state them (older configs),
# and those it states override the default model's.
WEIGHT_FIELDS = ("architecture", "architecture_overrides", "checkpoint", "vocab", "vocoder", "use_ema")


class ModelSpec(Strict):
    """One model of the registry (`models` in the application's args): its name and the names that
    mean it, its weights, the languages it speaks and its sampling defaults."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    aliases: list[str] = Field(default_factory=list)
    # An f5-tts config name (`f5_tts/configs/<name>.yaml`: F5TTS_v1_Base, F5TTS_Base, E2TTS_Base, their
    # Small variants) whose architecture the checkpoint has, and overrides of it (tiny test models).
    architecture: str = "F5TTS_v1_Base"
    architecture_overrides: dict = Field(default_factory=dict)
    checkpoint: str = F5_BASE_CHECKPOINT  # hf://…, s3://…, or a local path
    vocab: str = ""  # "" = the vocab shipped with f5-tts; community checkpoints bring their own
    vocoder: str = VOCOS_24KHZ  # hf://owner/repo, s3://bucket/prefix, or a local directory
    use_ema: bool = True
    languages: list[str] = Field(default_factory=lambda: ["en", "zh"])  # ISO 639, as voices name theirs
    defaults: SynthesisOptions = Field(default_factory=SynthesisOptions)  # over the Synthesizer's defaults

    def names(self) -> list[str]:
        return [self.name, *self.aliases]


class ModelRegistry:
    """`specs` by name; `generic` names (OpenAI's "tts-1", ...) mean the voice's model, else `default`."""

    def __init__(self, specs: list[ModelSpec], default: str, generic: list[str]):
        self.specs = {spec.name: spec for spec in specs}
        self.default = default
        self._by_name: dict[str, str] = {}
        for spec in specs:
            for name in spec.names():
                if name in self._by_name:
                    raise ValueError(f"models: the name {name!r} is given twice")
                self._by_name[name] = spec.name
        if default not in self.specs:
            raise ValueError(f"default_model {default!r} is not a name of `models`")
        self.generic = [name for name in generic if name not in self._by_name]

    @classmethod
    def of(cls, settings: ServiceSettings) -> ModelRegistry:
        specs = settings.models or [ModelSpec(name="F5TTS_v1_Base")]
        return cls(specs, settings.default_model or specs[0].name, settings.accepted_models)

    def names(self) -> list[str]:
        """Every name a request may send."""
        return [*self._by_name, *self.generic]

    def canonical(self, name: str) -> str:
        """The registry name that `name` (a name or an alias, not a generic one) means."""
        if name not in self._by_name:
            raise BadRequest(f"Unknown model '{name}'; use one of {json.dumps(self.names())}.",
                             code="unknown_model", param="model")
        return self._by_name[name]

    def resolve(self, asked: str, voice: str, voice_model: str | None) -> str:
        """The model a request for `voice` is spoken with: the one it names, else the voice's, else
        the default."""
        if asked not in self.generic:
            return self.canonical(asked)
        if voice_model is None:
            return self.default
        if voice_model not in self.specs:
            raise Unprocessable(f"Voice '{voice}' is spoken with model '{voice_model}', which this service no "
                                "longer has; name a model in the request or set the voice's model.",
                                code="voice_model_unknown", param="model")
        return voice_model
