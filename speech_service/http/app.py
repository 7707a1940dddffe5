"""The HTTP API (FastAPI). `create_app(settings, backends)` is served by the Ray ingress deployment;
`backends` is how it reaches the model replicas, so the API itself runs and tests without Ray.

Routes live one module per resource in `routes/`, each a few lines that call `Services`; who may
call what is `auth.py`; errors become HTTP in one place (`errors.py`)."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from speech_service.config import ServiceSettings
from speech_service.http.auth import KeyGate, authenticated
from speech_service.http.errors import UnknownPath, install_error_handlers
from speech_service.http.middleware import BodyLimit, RequestCounter, RequestIdMiddleware
from speech_service.http.openapi import document, errors_for
from speech_service.http.routes import (
    audit,
    catalog,
    consent,
    jobs,
    lexicons,
    provenance,
    speech,
    system,
    text_to_speech,
    voices,
)
from speech_service.http.routes.live_socket import router as live_sockets
from speech_service.http.services import Services
from speech_service.service.speech import Backends
from speech_service.storage.voices import VoiceStore, open_store


def create_app(settings: ServiceSettings, backends: Backends, store: VoiceStore | None = None, *,
               echo_request_id: bool = True) -> FastAPI:
    services = Services.build(settings, backends, store or open_store(settings.store))

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await services.runner.start()  # picks up jobs a previous ingress left behind
        try:
            yield
        finally:
            await services.runner.stop()
            await services.speech.marker.drain()  # sidecars of responses already sent
            await asyncio.to_thread(services.audit.close)  # what is queued, written before the replica goes

    app = FastAPI(title="F5-TTS voice service", version="1", lifespan=lifespan)
    app.state.services = services
    install_error_handlers(app)
    document(app, settings)
    app.mount("/web", StaticFiles(directory=system.WEB), name="web")  # public: the page's API calls carry the key
    app.include_router(system.router)
    app.include_router(catalog.router)  # its own key check: `public_catalog` may open two of its lists
    for resource in (voices, lexicons, consent, speech, text_to_speech, jobs, provenance, audit):
        app.include_router(resource.router, dependencies=[Depends(authenticated)], responses=errors_for(401))
    app.include_router(live_sockets)  # sockets check their key themselves: KeyGate sees HTTP only
    app.router.routes.append(UnknownPath(app.router))  # last: a 404 that Serve's access log names by its path
    # Outermost last: request ids first, so every answer (429s and 413s included) carries one; the key
    # before the body (a caller without one cannot make us read it), the body counted as it arrives.
    limits = settings.limits
    upload = limits.max_upload_bytes
    app.add_middleware(BodyLimit, routers=(voices.router, lexicons.router, consent.router, provenance.router),
                       default=limits.max_json_bytes,
                       limits={voices.create_voice: upload, voices.add_style: upload, consent.give_consent: upload,
                               provenance.verify: 2 * upload,  # a file and its sidecar manifest
                               lexicons.create_lexicon: limits.max_lexicon_bytes,
                               lexicons.replace_lexicon: limits.max_lexicon_bytes})
    app.add_middleware(KeyGate, keys=services.keys, anonymous_per_minute=limits.anonymous_requests_per_minute,
                       public=catalog.PUBLIC_PATHS if settings.public_catalog else frozenset())
    app.add_middleware(RequestIdMiddleware, echo=echo_request_id)
    app.add_middleware(RequestCounter)
    return app
