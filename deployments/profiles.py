"""Serve profiles: `config/serve.yaml` is the production profile and the one source of every
setting; each other profile (`config/profiles/NAME.yaml`) states only what it changes.

`python -m deployments.profiles NAME` writes the whole Serve config file of a profile to
`config/serve.NAME.yaml` (what `serve run` takes; `make setup` writes them all, git ignores them).
The deployments' decorators take their options from the production profile too, so
`serve.run(serve_app.build({}))` without a config file has the same shape.

Merging (onto the production profile, or onto the profile named by `extends:`): mappings merge key
by key; `applications` and `deployments` merge entry by entry, matched by `name`; any other value (a
list included) replaces the production one; `null` removes a key.
"""

from __future__ import annotations

import argparse
import copy
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

CONFIG = Path(__file__).resolve().parents[1] / "config"
PRODUCTION = CONFIG / "serve.yaml"
_BY_NAME = ("applications", "deployments")


def merged(base: Any, change: Any, key: str = "") -> Any:
    """`base` with `change` applied (see the module's docstring)."""
    if isinstance(base, dict) and isinstance(change, dict):
        out = dict(base)
        for k, v in change.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = merged(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if key in _BY_NAME and isinstance(base, list) and isinstance(change, list):
        out = [copy.deepcopy(entry) for entry in base]
        names = [entry.get("name") for entry in out]
        for entry in change:
            if entry.get("name") in names:
                i = names.index(entry["name"])
                out[i] = merged(out[i], entry)
            else:
                out.append(copy.deepcopy(entry))
        return out
    return copy.deepcopy(change)


def profile_names() -> list[str]:
    return sorted(p.stem for p in (CONFIG / "profiles").glob("*.yaml"))


def load_profile(name: str = "production") -> dict[str, Any]:
    """The whole Serve config of a profile."""
    production = yaml.safe_load(PRODUCTION.read_text())
    if name == "production":
        return production
    path = CONFIG / "profiles" / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"no profile {name!r}: one of {', '.join(['production', *profile_names()])}")
    change = yaml.safe_load(path.read_text()) or {}
    base = load_profile(change.pop("extends")) if "extends" in change else production
    return merged(base, change)


@cache
def deployment_options(deployment: str) -> dict[str, Any]:
    """The production profile's options of `deployment`, as `@serve.deployment` takes them."""
    if not PRODUCTION.exists():  # installed without the config folder: Serve's defaults
        return {}
    for entry in load_profile()["applications"][0]["deployments"]:
        if entry["name"] == deployment:
            return {k: v for k, v in entry.items() if k not in ("name", "user_config")}
    return {}


def write_profile(name: str, path: Path | None = None) -> Path:
    path = path or CONFIG / f"serve.{name}.yaml"
    source = f"config/profiles/{name}.yaml"
    header = (f"# Written by `python -m deployments.profiles {name}` from config/serve.yaml and {source};\n"
              f"# edit those, not this file.\n")
    path.write_text(header + yaml.safe_dump(load_profile(name), sort_keys=False, width=120))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.profiles", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"profiles to write (default: all: {', '.join(profile_names())})")
    parser.add_argument("-o", "--output", type=Path, help="write one profile here instead")
    args = parser.parse_args(argv)
    names = args.names or profile_names()
    if args.output and len(names) != 1:
        parser.error("--output takes one profile")
    for name in names:
        print(write_profile(name, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
