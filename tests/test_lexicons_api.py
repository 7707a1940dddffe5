"""`/v1/lexicons` over HTTP (the in-process app; no model is called) and `f5voice lexicons`, against
both stores: created as JSON or from a PLS file, exported as PLS and imported again the same, hostile
documents refused, written only by admin keys, replaced and deleted only at the version read."""

from __future__ import annotations

import inspect
import subprocess
import sys
import threading
import time

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from test_lexicon import HOSTILE, pls_document

from speech_service.config import ServiceSettings
from speech_service.errors import VersionMismatch
from speech_service.http.app import create_app
from speech_service.http.routes import lexicons as lexicon_routes
from speech_service.storage.lexicons import LexiconStore
from speech_service.storage.objects import open_object_store
from speech_service.text.lexicon import Lexicon, Rule

from conftest import REPO
from served import served_app

ADMIN, SPEAKER = "sk-lexicon-admin", "sk-lexicon-speak"
KEYS = [{"name": "ops", "key": ADMIN, "scopes": ["admin"]}, {"name": "app", "key": SPEAKER, "scopes": ["speak"]}]
BRANDS = {"name": "brands", "language": "en", "rules": [
    {"grapheme": "Nginx", "alias": "engine x"},
    {"grapheme": "SQL", "alias": "sequel", "case_sensitive": True},
    {"grapheme": "银行", "pinyin": "yin2 hang2"}]}


def make_client(store: dict, **settings) -> TestClient:
    settings = ServiceSettings.model_validate({"store": store, **settings})
    client = TestClient(create_app(settings, backends=None))
    client.objects = open_object_store(settings.store)
    return client


@pytest.fixture
def client(store_config):
    return make_client(store_config)


def error_code(response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]["code"]


def upload(client, name: str, document: bytes, method: str = "POST"):
    files = {"file": ("lexicon.pls", document, "application/pls+xml")}
    if method == "PUT":
        return client.put(f"/v1/lexicons/{name}", files=files)
    return client.post("/v1/lexicons", data={"name": name}, files=files)


def rules_of(client, name: str) -> tuple[str | None, list[dict]]:
    lexicon = client.get(f"/v1/lexicons/{name}").json()
    return lexicon["language"], lexicon["rules"]


def test_a_lexicon_is_created_listed_read_replaced_and_deleted(client):
    created = client.post("/v1/lexicons", json=BRANDS)
    assert created.status_code == 201, created.text
    assert created.headers["etag"] and created.json()["rules"][2] == {
        "grapheme": "银行", "alias": None, "pinyin": "yin2 hang2", "case_sensitive": False}
    assert client.objects.list("lexicons/") == ["lexicons/brands.json"]
    listed = client.get("/v1/lexicons").json()["lexicons"]
    assert [(x["name"], x["rule_count"], x["language"]) for x in listed] == [("brands", 3, "en")]
    assert error_code(client.post("/v1/lexicons", json=BRANDS), 409) == "lexicon_exists"

    replaced = client.put("/v1/lexicons/brands", json={"rules": [{"grapheme": "PLS", "alias": "pee el ess"}]})
    assert replaced.status_code == 200 and replaced.json()["updated_at"] and replaced.json()["language"] is None
    assert replaced.headers["etag"] != created.headers["etag"]
    assert rules_of(client, "brands")[1] == [{"grapheme": "PLS", "alias": "pee el ess", "pinyin": None,
                                              "case_sensitive": False}]
    assert client.delete("/v1/lexicons/brands").status_code == 204
    assert client.objects.list("") == []
    assert error_code(client.get("/v1/lexicons/brands"), 404) == "lexicon_not_found"
    assert error_code(client.put("/v1/lexicons/brands", json={"rules": []}), 404) == "lexicon_not_found"
    assert error_code(client.delete("/v1/lexicons/brands"), 404) == "lexicon_not_found"


def test_a_lexicon_exported_as_pls_and_imported_again_is_the_same_lexicon(client):
    assert client.post("/v1/lexicons", json=BRANDS).status_code == 201
    exported = client.get("/v1/lexicons/brands", params={"format": "pls"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("application/pls+xml")
    assert b'<phoneme>yin2 hang2</phoneme>' in exported.content and b'role="case-sensitive"' in exported.content
    imported = upload(client, "brands-again", exported.content)
    assert imported.status_code == 201, imported.text
    assert rules_of(client, "brands-again") == rules_of(client, "brands")
    assert imported.headers["etag"] == exported.headers["etag"]  # the same rules and language: the same version
    replaced = upload(client, "brands", pls_document("<lexeme><grapheme>a</grapheme><alias>b</alias></lexeme>"), "PUT")
    assert replaced.status_code == 200 and replaced.json()["language"] == "zh-CN"


@pytest.mark.parametrize("store_config", ["local"], indirect=True)
@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_and_malformed_pls_uploads_are_refused_with_400_at_once(client, name):
    started = time.monotonic()
    assert error_code(upload(client, "hostile", HOSTILE[name]), 400) == "invalid_pls"
    assert time.monotonic() - started < 5
    assert client.objects.list("") == []


@pytest.mark.parametrize("store_config", ["local"], indirect=True)
def test_an_ipa_rule_is_refused_saying_what_to_write_instead(client):
    document = pls_document("<lexeme><grapheme>tomato</grapheme><phoneme>təˈmeɪtoʊ</phoneme></lexeme>", "ipa")
    refused = upload(client, "ipa", document)
    assert error_code(refused, 400) == "unsupported_alphabet"
    assert "<alias>" in refused.json()["error"]["message"] and "x-pinyin" in refused.json()["error"]["message"]


@pytest.mark.parametrize("store_config", ["local"], indirect=True)
@pytest.mark.parametrize("body, status, code", [
    ({"name": "bad name", "rules": []}, 400, "invalid_lexicon_name"),
    ({"name": "zh", "rules": [{"grapheme": "银行", "pinyin": "hang2"}]}, 400, "invalid_lexicon"),
    ({"name": "both", "rules": [{"grapheme": "x", "alias": "y", "pinyin": "hang2"}]}, 400, "invalid_lexicon"),
    ({"name": "ipa", "rules": [{"grapheme": "x", "ipa": "ks"}]}, 422, "invalid_request"),
    ({"name": "lang", "language": "English!", "rules": []}, 400, "invalid_lexicon"),
])
def test_a_rule_the_model_cannot_read_is_refused_naming_it(client, body, status, code):
    assert error_code(client.post("/v1/lexicons", json=body), status) == code
    assert client.objects.list("") == []


@pytest.mark.parametrize("store_config", ["local"], indirect=True)
def test_a_lexicon_over_its_bounds_is_refused(store_config):
    client = make_client(store_config, limits={"max_lexicon_bytes": 4096, "max_lexicon_rules": 3})
    many = {"name": "many", "rules": [{"grapheme": f"w{i}", "alias": "x"} for i in range(4)]}
    assert error_code(client.post("/v1/lexicons", json=many), 413) == "lexicon_too_large"
    big = pls_document("<lexeme><grapheme>a</grapheme><alias>b</alias></lexeme>" * 200)
    assert error_code(upload(client, "big", big), 413) in ("upload_too_large", "lexicon_too_large")
    huge = {"name": "huge", "rules": [{"grapheme": "a", "alias": "b" * 100_000}]}
    assert error_code(client.post("/v1/lexicons", json=huge), 413) == "upload_too_large"  # counted as it arrives


@pytest.mark.parametrize("store_config", ["local"], indirect=True)
def test_admin_keys_write_lexicons_and_speak_keys_read_them(store_config):
    client = make_client(store_config, api_keys=KEYS)
    admin, speaker = {"Authorization": f"Bearer {ADMIN}"}, {"Authorization": f"Bearer {SPEAKER}"}
    assert error_code(client.post("/v1/lexicons", json=BRANDS, headers=speaker), 403) == "insufficient_scope"
    assert error_code(client.get("/v1/lexicons"), 401) == "invalid_api_key"
    assert client.post("/v1/lexicons", json=BRANDS, headers=admin).status_code == 201
    assert client.get("/v1/lexicons", headers=speaker).json()["lexicons"][0]["name"] == "brands"
    assert client.get("/v1/lexicons/brands", params={"format": "pls"}, headers=speaker).status_code == 200
    refused = client.put("/v1/lexicons/brands", json={"rules": []}, headers=speaker)
    assert error_code(refused, 403) == "insufficient_scope"
    assert error_code(client.delete("/v1/lexicons/brands", headers=speaker), 403) == "insufficient_scope"
    assert client.delete("/v1/lexicons/brands", headers=admin).status_code == 204


def test_a_replace_or_delete_with_if_match_happens_only_to_the_version_read(client):
    etag = client.post("/v1/lexicons", json=BRANDS).headers["etag"]
    newer = client.put("/v1/lexicons/brands", json={"rules": []}, headers={"If-Match": etag})
    assert newer.status_code == 200
    content = {"language": "en", "rules": BRANDS["rules"]}  # PUT names the lexicon in its path
    stale = client.put("/v1/lexicons/brands", json=content, headers={"If-Match": etag})
    assert error_code(stale, 412) == "precondition_failed" and newer.headers["etag"] in stale.json()["error"]["message"]
    assert error_code(client.delete("/v1/lexicons/brands", headers={"If-Match": etag}), 412) == "precondition_failed"
    assert rules_of(client, "brands")[1] == []
    assert client.delete("/v1/lexicons/brands", headers={"If-Match": newer.headers["etag"]}).status_code == 204


def test_of_replaces_made_at_once_from_one_version_exactly_one_lands(object_store):
    store = LexiconStore(object_store)
    first = store.create(Lexicon("race", (Rule("a", alias="b"),)))
    barrier, landed, refused = threading.Barrier(6), [], []

    def replace(i: int) -> None:
        barrier.wait()
        try:
            landed.append(store.replace(Lexicon("race", (Rule("a", alias=f"writer {i}"),)), if_match={first.version}))
        except VersionMismatch:
            refused.append(i)

    threads = [threading.Thread(target=replace, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(landed) == 1 and len(refused) == 5
    assert store.get("race").lexicon == landed[0].lexicon


@pytest.mark.parametrize("store_config", ["local"], indirect=True)
def test_the_openapi_document_declares_both_bodies_and_every_route_runs_on_the_event_loop(client):
    paths = client.get("/openapi.json").json()["paths"]
    post = paths["/v1/lexicons"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert {"400", "401", "403", "409", "412", "413"} <= set(post["responses"])
    assert "application/pls+xml" in paths["/v1/lexicons/{name}"]["get"]["responses"]["200"]["content"]

    def calls(dependant):
        for dependency in dependant.dependencies:
            yield dependency.call
            yield from calls(dependency)

    routes = [route for route in lexicon_routes.router.routes if isinstance(route, APIRoute)]
    in_threads = [call for route in routes for call in [route.endpoint, *calls(route.dependant)]
                  if not inspect.iscoroutinefunction(call)]
    assert len(routes) == 5 and not in_threads  # FastAPI runs a plain `def` in its thread pool


def f5voice(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "f5voice", "--url", url, *args], capture_output=True, cwd=REPO,
                          timeout=60, check=False)


@pytest.mark.slow  # the client runs as its own process, as users run it (as in test_cli)
def test_the_command_line_imports_lists_shows_exports_and_removes_lexicons(tmp_path):
    source = tmp_path / "brands.pls"
    source.write_bytes(pls_document("<lexeme><grapheme>Nginx</grapheme><alias>engine x</alias></lexeme>"
                                    "<lexeme><grapheme>银行</grapheme><phoneme>yin2 hang2</phoneme></lexeme>"))
    with served_app(tmp_path / "store", backends=None) as url:
        imported = f5voice(url, "lexicons", "import", "brands", str(source))
        assert imported.returncode == 0, imported.stderr
        shown = imported.stdout.decode()
        assert "Nginx -> engine x" in shown and "银行 -> pinyin yin2 hang2" in shown
        listed = f5voice(url, "lexicons", "ls").stdout.decode().splitlines()
        assert listed[1].split()[:3] == ["brands", "2", "zh-CN"]
        exported = tmp_path / "out.pls"
        assert f5voice(url, "lexicons", "export", "brands", "-o", str(exported)).returncode == 0
        again = f5voice(url, "lexicons", "import", "brands-again", str(exported), "--json")
        assert again.returncode == 0 and b'"yin2 hang2"' in again.stdout
        assert f5voice(url, "lexicons", "export", "brands").stdout == exported.read_bytes()
        refused = f5voice(url, "lexicons", "import", "brands", str(exported))  # exists: --replace replaces
        assert refused.returncode == 3 and b"lexicon_exists" in refused.stderr
        assert f5voice(url, "lexicons", "import", "brands", str(exported), "--replace").returncode == 0
        removed = f5voice(url, "lexicons", "rm", "brands", "brands-again")
        assert removed.returncode == 0 and b"deleted brands-again" in removed.stderr
        assert f5voice(url, "lexicons", "show", "brands").returncode == 3
