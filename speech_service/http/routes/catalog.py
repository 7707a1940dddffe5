"""What the clients people use read to fill their menus: `GET /v1/models` (OpenAI's shape, what
`client.models.list()` reads), `GET /v1/audio/models` and `GET /v1/audio/voices` (the shapes Open
WebUI's `routers/audio.py` reads from an OpenAI-compatible TTS server). Names only."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from speech_service.errors import NotFound
from speech_service.http.auth import authenticated, require
from speech_service.http.openapi import errors_for
from speech_service.http.services import Services, services
from speech_service.models import ModelRegistry

router = APIRouter(tags=["catalog"])
# What `public_catalog` opens to callers without a key (names only).
PUBLIC_PATHS = frozenset({"/v1/audio/models", "/v1/audio/voices"})


class ModelCard(BaseModel):
    """OpenAI's model object, and what this service adds: the languages a model speaks, or for
    another name of one, which (a generic name such as "tts-1" means the voice's model, else this)."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "f5-voice-service"
    languages: list[str] | None = None
    alias_of: str | None = None


class ModelList(BaseModel):
    """OpenAI's `GET /v1/models`: the registry's models first, then the other names requests may send."""

    object: Literal["list"] = "list"
    data: list[ModelCard]

    @classmethod
    def of(cls, models: ModelRegistry) -> ModelList:
        cards = [ModelCard(id=name, languages=spec.languages) for name, spec in models.specs.items()]
        cards += [ModelCard(id=alias, alias_of=name) for name, spec in models.specs.items() for alias in spec.aliases]
        cards += [ModelCard(id=name, alias_of=models.default) for name in models.generic]
        return cls(data=cards)

    def card(self, model: str) -> ModelCard:
        """One name's card (OpenAI's `GET /v1/models/{model}`), or 404 model_not_found as OpenAI answers."""
        found = next((card for card in self.data if card.id == model), None)
        if found is None:
            raise NotFound(f"The model '{model}' does not exist; GET /v1/models lists them.",
                           code="model_not_found", param="model")
        return found


class NamedItem(BaseModel):
    id: str
    name: str


def named(names: list[str]) -> list[NamedItem]:
    """Open WebUI's items: the name is the id (a voice's or a model's)."""
    return [NamedItem(id=n, name=n) for n in names]


class AudioModelList(BaseModel):
    """Open WebUI's `{base}/audio/models`: `{"models": [{"id": ...}]}`."""

    models: list[NamedItem]


class AudioVoiceList(BaseModel):
    """Open WebUI's `{base}/audio/voices`: `{"voices": [{"id": ..., "name": ...}]}`."""

    voices: list[NamedItem]


async def catalog_reader(request: Request) -> None:
    """A `speak` key, or nobody with `public_catalog` (Open WebUI fetches the two lists without one)."""
    if not request.app.state.services.settings.public_catalog:
        await require("speak")(await authenticated(request))


@router.get("/v1/models", response_model=ModelList, dependencies=[Depends(require("speak"))],
            responses=errors_for(401, 403))
async def list_models(s: Services = Depends(services)) -> ModelList:
    return ModelList.of(s.models)


@router.get("/v1/models/{model}", response_model=ModelCard, dependencies=[Depends(require("speak"))],
            responses=errors_for(401, 403, 404))
async def retrieve_model(model: str, s: Services = Depends(services)) -> ModelCard:
    return ModelList.of(s.models).card(model)


@router.get("/v1/audio/models", response_model=AudioModelList, dependencies=[Depends(catalog_reader)],
            responses=errors_for(401, 403))
async def list_audio_models(s: Services = Depends(services)) -> AudioModelList:
    return AudioModelList(models=named(s.models.names()))


@router.get("/v1/audio/voices", response_model=AudioVoiceList, dependencies=[Depends(catalog_reader)],
            responses=errors_for(401, 403, 503))
async def list_audio_voices(s: Services = Depends(services)) -> AudioVoiceList:
    return AudioVoiceList(voices=named(await asyncio.to_thread(s.store.names)))  # keys only: no record is read
