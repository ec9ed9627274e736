"""`g4f api` (gpt4free 8.x) with the old `Pizzagpt` provider registered: the serve benchmark's peer.

gpt4free deleted its Pizzagpt provider in 6.7.2 and `g4f api` loads outside providers only
from its sandboxed provider files, so this launcher loads the provider's last file (from
g4f 6.7.1, unchanged: an aiohttp session per call) against gpt4free 8.x's own modules, points
its `url` at the benchmark's loopback server, registers it under its old name, and then starts
the server the way `g4f api` does (`g4f.api.run_api`: FastAPI under uvicorn, in this process).

    python benchmarks/g4f_api.py --provider-file .../g4f/Provider/not_working/Pizzagpt.py \\
        --upstream http://127.0.0.1:PORT --port 1337

Run it in an environment with `g4f[api]` 8.x installed (not the SDK's: their dependencies
differ). It serves on 127.0.0.1 only, and stops on SIGINT/SIGTERM as `g4f api` does.
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import sys
import types
from typing import Any

_LOOPBACK = ("localhost", "::1")


def loopback_only() -> None:
    """Refuse to resolve any host but a loopback one: gpt4free 8.x fetches a list of providers
    from its website when `g4f.api` is imported, and a benchmark contacts nothing but this
    machine. (Every connection, aiohttp's and requests' alike, resolves through getaddrinfo.)"""
    resolve = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in _LOOPBACK and not name.startswith("127."):
            raise socket.gaierror(socket.EAI_NONAME, f"{name}: not on this machine (benchmark)")
        return resolve(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo


def no_live_provider_list() -> None:
    """Give gpt4free's factory an empty list of live providers, so that it does not fetch one;
    its `default` provider then points at a closed loopback port, and is never used."""
    from g4f.client.factory import AbstractClientFactory

    AbstractClientFactory._live_providers = {
        "providers": {"default": {"baseUrl": "http://127.0.0.1:9/v1"}},
        "defaultModels": {},
    }


def load_provider(path: str) -> Any:
    """The old provider class, its relative imports resolved against the installed gpt4free."""
    package = "g4f.Provider.not_working"  # where the file lived; 8.x has no such package
    if package not in sys.modules:
        stand_in = types.ModuleType(package)
        stand_in.__path__ = []
        sys.modules[package] = stand_in
    spec = importlib.util.spec_from_file_location(f"{package}.Pizzagpt", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.Pizzagpt


def register(provider: Any) -> None:
    """Make `provider="Pizzagpt"` (and `--provider Pizzagpt`) find the class, as before 6.7.2."""
    from g4f.Provider import ProviderLoader

    original = ProviderLoader.from_name.__func__  # type: ignore[attr-defined]

    def from_name(cls: Any, name: str) -> Any:
        if name == provider.__name__:
            return provider
        return original(cls, name)

    ProviderLoader.from_name = classmethod(from_name)  # type: ignore[assignment]
    if provider.__name__ not in ProviderLoader.names:
        ProviderLoader.names.append(provider.__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider-file", required=True, help="g4f 6.7.1's Pizzagpt.py")
    parser.add_argument("--upstream", required=True, help="the loopback server's base URL")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    loopback_only()
    no_live_provider_list()
    provider = load_provider(args.provider_file)
    provider.url = args.upstream.rstrip("/")
    provider.working = True
    register(provider)

    from g4f.api import AppConfig, run_api

    # As `g4f api --provider Pizzagpt --no-gui --ignore-cookie-files --no-access-log` sets it.
    AppConfig.set_config(provider="Pizzagpt", model="gpt-4o-mini", ignore_cookie_files=True)
    run_api(host="127.0.0.1", port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
