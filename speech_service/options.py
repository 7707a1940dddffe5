"""The F5 sampling knobs, declared once (`SynthesisOptions`), and f5-tts's own defaults."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SynthesisOptions(Strict):
    """The F5 sampling knobs, declared once: the speech request body (`SpeechRequest`) derives from
    it, the Synthesizer handle call carries it and the engine takes it; `SynthesizerSettings.defaults`
    fills what a request leaves unset (None), then `F5_DEFAULTS`. A new knob is one line here."""

    nfe_step: int | None = Field(None, ge=1, le=128)
    cfg_strength: float | None = Field(None, ge=0.0, le=10.0)
    sway_sampling_coef: float | None = Field(None, ge=-1.0, le=1.0)
    cross_fade_duration: float | None = Field(None, ge=0.0, le=1.0)
    speed: float | None = Field(None, ge=0.25, le=4.0)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)

    def over(self, defaults: SynthesisOptions) -> SynthesisOptions:
        """These options, the unset ones taken from `defaults`."""
        return defaults.model_copy(update=self.model_dump(exclude_none=True))

    def sampling_key(self) -> tuple:
        """What items of one batch must share: everything but the seed and the text's pace."""
        return (self.nfe_step, self.cfg_strength, self.sway_sampling_coef)


# f5-tts's own inference defaults; below operator defaults and request options.
F5_DEFAULTS = SynthesisOptions(nfe_step=32, cfg_strength=2.0, sway_sampling_coef=-1.0, cross_fade_duration=0.15,
                               speed=1.0)
