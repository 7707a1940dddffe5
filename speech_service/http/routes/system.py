"""The service itself: liveness, status, who the caller is, and the web page."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from speech_service.http.auth import Caller, authenticated, require
from speech_service.http.openapi import errors_for
from speech_service.http.services import Services, services
from speech_service.schemas import KeyInfo

router = APIRouter()
WEB = Path(__file__).resolve().parents[1] / "web"


@router.get("/", include_in_schema=False)
async def web_page() -> FileResponse:
    return FileResponse(WEB / "index.html")


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/v1/status", dependencies=[Depends(require("admin"))], responses=errors_for(401, 403, 503))
async def status(s: Services = Depends(services)) -> dict:
    registry = {name: {"aliases": spec.aliases, "languages": spec.languages, "default": name == s.models.default}
                for name, spec in s.models.specs.items()}
    status = {"voices": len(await asyncio.to_thread(s.store.list)), "models": registry, **(await s.backends.status())}
    # This Ingress replica's live sockets (another replica may answer the next call): counted here, no model woken.
    status.setdefault("deployments", {}).setdefault("Ingress", {})["this_replica"] = {"live": s.live.counts()}
    return status


@router.get("/v1/me", response_model=KeyInfo, responses=errors_for(401))
async def me(caller: Caller = Depends(authenticated)) -> KeyInfo:
    """The calling key's name and scopes (what the page and clients show or hide)."""
    return KeyInfo(name=caller.name, scopes=sorted(caller.scopes))
