"""`f5voice lexicons ls|show|rm|import|export`: pronunciation lexicons, and W3C PLS files of them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from f5voice.client import EXIT_USAGE, Api, CliError
from f5voice.output import say


def add_lexicon_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    lexicons = commands.add_parser("lexicons", help="pronunciation lexicons: list, show, import and export PLS files")
    actions = lexicons.add_subparsers(dest="lexicons_command", required=True, metavar="ACTION")
    actions.add_parser("ls", parents=[common], help="all lexicons").set_defaults(run=lexicons_ls)
    show = actions.add_parser("show", parents=[common], help="a lexicon's rules")
    show.add_argument("name")
    show.set_defaults(run=lexicons_show)
    rm = actions.add_parser("rm", parents=[common], help="delete lexicons (voices naming one speak without it)")
    rm.add_argument("names", nargs="+", metavar="NAME")
    rm.set_defaults(run=lexicons_rm)
    load = actions.add_parser("import", parents=[common], help="create a lexicon from a W3C PLS file")
    load.add_argument("name")
    load.add_argument("file", help="a PLS 1.0 document: <alias> respellings, or x-pinyin <phoneme>s for Chinese")
    load.add_argument("--replace", action="store_true", help="replace the lexicon of that name")
    load.set_defaults(run=lexicons_import)
    export = actions.add_parser("export", parents=[common], help="write a lexicon as a W3C PLS file")
    export.add_argument("name")
    export.add_argument("--output", "-o", default="-", help="file to write; '-' (default) for stdout")
    export.set_defaults(run=lexicons_export)


def lexicons_ls(api: Api, args: argparse.Namespace) -> None:
    lexicons = api.json("GET", "/v1/lexicons")["lexicons"]
    if args.json:
        print(json.dumps(lexicons, indent=2))
        return
    print(f"{'NAME':<24} {'RULES':>6}  {'LANGUAGE':<10} UPDATED")
    for lexicon in lexicons:
        print(f"{lexicon['name']:<24} {lexicon['rule_count']:>6}  {lexicon['language'] or '-':<10} "
              f"{lexicon['updated_at'] or lexicon['created_at']}")


def show_lexicon(lexicon: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(lexicon, indent=2, ensure_ascii=False))
        return
    print(f"{lexicon['name']} ({len(lexicon['rules'])} rules, language {lexicon['language'] or 'any'})")
    for rule in lexicon["rules"]:
        said = rule["alias"] if rule["alias"] is not None else f"pinyin {rule['pinyin']}"
        print(f"  {rule['grapheme']} -> {said}{'  (case-sensitive)' if rule['case_sensitive'] else ''}")


def lexicons_show(api: Api, args: argparse.Namespace) -> None:
    show_lexicon(api.json("GET", f"/v1/lexicons/{args.name}"), args.json)


def lexicons_rm(api: Api, args: argparse.Namespace) -> None:
    for name in args.names:
        etag = api.call("GET", f"/v1/lexicons/{name}").headers.get("ETag")  # a lexicon changed since: exit 3
        api.call("DELETE", f"/v1/lexicons/{name}", headers={"If-Match": etag} if etag else {})
        say(f"deleted {name}")


def lexicons_import(api: Api, args: argparse.Namespace) -> None:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"no such file: {path}", EXIT_USAGE)
    with path.open("rb") as f:
        files = {"file": (path.name, f, "application/pls+xml")}
        if args.replace:
            lexicon = api.json("PUT", f"/v1/lexicons/{args.name}", files=files)
        else:
            lexicon = api.json("POST", "/v1/lexicons", data={"name": args.name}, files=files)
    show_lexicon(lexicon, args.json)


def lexicons_export(api: Api, args: argparse.Namespace) -> None:
    document = api.call("GET", f"/v1/lexicons/{args.name}", params={"format": "pls"}).content
    if args.output == "-":
        sys.stdout.buffer.write(document)
        sys.stdout.flush()
        return
    Path(args.output).write_bytes(document)
    say(f"wrote {args.output} ({len(document)} bytes)")
