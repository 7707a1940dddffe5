"""`/v1/lexicons`: pronunciation lexicons, created, listed, read, replaced and deleted; as JSON or as
W3C PLS files (docs/ARCHITECTURE.md, "Lexicons"). Writing is `admin`'s, as voices are; reading is
`speak`'s, which names them in speech. Answers carry the lexicon's `ETag`; a replace or delete sent
with `If-Match` happens only to a version it names, else 412."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from speech_service.errors import BadRequest
from speech_service.http.auth import require
from speech_service.http.openapi import errors_for
from speech_service.http.services import Services, read_upload, services
from speech_service.service.lexicons import LexiconService
from speech_service.storage.lexicons import ANY_VERSION, NAME_RE, StoredLexicon
from speech_service.text import pls
from speech_service.text.lexicon import Lexicon, Rule

router = APIRouter(prefix="/v1/lexicons", tags=["lexicons"])
ADMIN = [Depends(require("admin"))]
SPEAK = [Depends(require("speak"))]
PLS_MEDIA_TYPE = "application/pls+xml"
NAME = {"pattern": NAME_RE.pattern}  # documented; the service checks it (400 invalid_lexicon_name)


class LexiconRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grapheme: str = Field(..., description="The text matched, literally, as whole words (any case unless "
                                           "case_sensitive)")
    alias: str | None = Field(None, description="What is read instead: a respelling ('toe-MAH-toe')")
    pinyin: str | None = Field(None, description="Instead of an alias, for Chinese characters: one syllable with its "
                                                 "tone per character of the grapheme ('yin2 hang2')")
    case_sensitive: bool = False


class LexiconReplacement(BaseModel):
    """A lexicon's content (PUT: its name is the path's)."""

    model_config = ConfigDict(extra="forbid")
    language: str | None = Field(None, description="A BCP 47 tag (PLS's xml:lang), for people: rules apply to any text")
    rules: list[LexiconRule]


class LexiconBody(LexiconReplacement):
    name: str = Field(..., json_schema_extra=NAME)


class LexiconOut(BaseModel):
    name: str
    language: str | None
    rules: list[LexiconRule]
    created_at: datetime
    updated_at: datetime | None


class LexiconSummary(BaseModel):
    name: str
    language: str | None
    rule_count: int
    created_at: datetime
    updated_at: datetime | None


class LexiconList(BaseModel):
    lexicons: list[LexiconSummary]


def _request_body(model: type[BaseModel], form_fields: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI request body of a route that takes JSON (`model`) or a PLS file as a form."""
    schema = model.model_json_schema()
    schema["properties"]["rules"]["items"] = schema.pop("$defs")["LexiconRule"]
    form = {"type": "object", "required": ["file", *form_fields],
            "properties": {**form_fields, "file": {"type": "string", "format": "binary",
                                                   "description": "A W3C PLS 1.0 document"}}}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema},
                                                          "multipart/form-data": {"schema": form}}}}


async def lexicon_service(s: Services = Depends(services)) -> LexiconService:
    return LexiconService(s.store.objects, s.settings.limits)


async def expected_versions(if_match: str | None = Header(
        None, description="Only if the lexicon is at one of these versions (its ETag; `*`: any); else 412")):
    if if_match is None:
        return None
    tags = [tag.strip() for tag in if_match.split(",") if tag.strip()]
    return frozenset(tag if tag == ANY_VERSION or tag.startswith(('"', "W/")) else f'"{tag}"' for tag in tags)


async def _sent(request: Request, lexicons: LexiconService, name: str | None) -> Lexicon:
    """The lexicon a POST or PUT sends: JSON, or a PLS file in a form (parsed in a thread)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        async with request.form(max_files=1, max_fields=4) as form:
            file, named = form.get("file"), form.get("name")
            if not isinstance(file, UploadFile):
                raise BadRequest("Send the PLS document as the form's 'file'.", code="missing_file", param="file")
            data = await read_upload(file, lexicons.limits.max_lexicon_bytes)
        name = name or (named if isinstance(named, str) else None)
        if not name:
            raise BadRequest("Send the lexicon's name as the form's 'name'.", code="invalid_lexicon_name", param="name")
        return await asyncio.to_thread(lexicons.from_pls, data, name)
    if content_type != "application/json":
        raise BadRequest(f"Send the lexicon as application/json or a PLS file as multipart/form-data, not "
                         f"{content_type or 'no content type'}.", code="unsupported_media_type")
    model = LexiconBody if name is None else LexiconReplacement
    try:
        body = model.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None
    rules = tuple(Rule(**rule.model_dump()) for rule in body.rules)
    return Lexicon(name or body.name, rules, body.language)


def _out(stored: StoredLexicon, response: Response) -> LexiconOut:
    response.headers["ETag"] = stored.version
    lexicon = stored.lexicon
    return LexiconOut(name=lexicon.name, language=lexicon.language, created_at=stored.created_at,
                      updated_at=stored.updated_at, rules=[LexiconRule(**vars(rule)) for rule in lexicon.rules])


ETAG = {"headers": {"ETag": {"description": "The lexicon's version (its rules and language), for If-Match",
                             "schema": {"type": "string"}}}}
WRITE_ERRORS = errors_for(400, 403, 409, 412, 413, 422, 503)


@router.post("", status_code=201, response_model=LexiconOut, dependencies=ADMIN, responses={201: ETAG, **WRITE_ERRORS},
             openapi_extra=_request_body(LexiconBody, {"name": {"type": "string", **NAME}}))
async def create_lexicon(request: Request, response: Response,
                         lexicons: LexiconService = Depends(lexicon_service)) -> LexiconOut:
    """A new lexicon, from JSON or from a PLS file; 409 when one of its name exists (PUT replaces)."""
    lexicon = await _sent(request, lexicons, None)
    return _out(await asyncio.to_thread(lexicons.create, lexicon), response)


@router.get("", response_model=LexiconList, dependencies=SPEAK, responses=errors_for(403, 503))
async def list_lexicons(lexicons: LexiconService = Depends(lexicon_service)) -> LexiconList:
    found = await asyncio.to_thread(lexicons.list)
    return LexiconList(lexicons=[LexiconSummary(name=x.lexicon.name, language=x.lexicon.language,
                                                rule_count=len(x.lexicon.rules), created_at=x.created_at,
                                                updated_at=x.updated_at) for x in found])


@router.get("/{name}", response_model=LexiconOut, dependencies=SPEAK, responses={
    200: {**ETAG, "content": {PLS_MEDIA_TYPE: {"schema": {"type": "string"}}},
          "description": "The lexicon as JSON, or with format=pls as a W3C PLS 1.0 document"},
    **errors_for(400, 403, 404, 422, 503)})
async def get_lexicon(response: Response, name: str = PathParam(json_schema_extra=NAME),
                      format: Literal["json", "pls"] = Query("json", description="pls: a W3C PLS 1.0 document"),
                      lexicons: LexiconService = Depends(lexicon_service)) -> Any:
    stored = await asyncio.to_thread(lexicons.get, name)
    if format == "pls":
        return Response(await asyncio.to_thread(pls.write, stored.lexicon), media_type=PLS_MEDIA_TYPE,
                        headers={"ETag": stored.version,
                                 "Content-Disposition": f'attachment; filename="{stored.lexicon.name}.pls"'})
    return _out(stored, response)


@router.put("/{name}", response_model=LexiconOut, dependencies=ADMIN, responses={200: ETAG, **errors_for(404),
                                                                                   **WRITE_ERRORS},
            openapi_extra=_request_body(LexiconReplacement, {}))
async def replace_lexicon(request: Request, response: Response, name: str = PathParam(json_schema_extra=NAME),
                          expected: frozenset[str] | None = Depends(expected_versions),
                          lexicons: LexiconService = Depends(lexicon_service)) -> LexiconOut:
    """The lexicon's rules and language replaced (404 when there is none: POST creates)."""
    lexicon = await _sent(request, lexicons, name)
    return _out(await asyncio.to_thread(lexicons.replace, lexicon, expected), response)


@router.delete("/{name}", status_code=204, response_class=Response, dependencies=ADMIN,
               responses=errors_for(400, 403, 404, 412, 503))
async def delete_lexicon(name: str = PathParam(json_schema_extra=NAME),
                         expected: frozenset[str] | None = Depends(expected_versions),
                         lexicons: LexiconService = Depends(lexicon_service)) -> Response:
    """Voices that name it are spoken without it from now on; a request that names it is a 400."""
    await asyncio.to_thread(lexicons.delete, name, expected)
    return Response(status_code=204)
