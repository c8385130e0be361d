"""The HTTP side of cdss (`cdss serve`): the CDS Hooks 2.0 service (app, configuration, JWT
authentication, feedback store) and the web pages (`web`: Try a patient, the rulebook).

    from cdss.service import create_app, load_config
    app = create_app(cdss.load_rules(), load_config("service.toml"))   # an ASGI app (FastAPI)

Needs the `service` extra (FastAPI, uvicorn, PyJWT[crypto]). Names are imported lazily so that
`cdss feedback report`, which only reads the SQLite store, does not import the web stack.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ServiceConfig", "create_app", "load_config"]

_LAZY = {"create_app": ".app", "ServiceConfig": ".config", "load_config": ".config"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cdss.service' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
