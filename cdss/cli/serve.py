"""`cdss serve`: run the CDS Hooks 2.0 service (cdss.service) under uvicorn.

This module only parses options and starts the server (the app is built by
`cdss.service.app.create_app`). With `--workers 1` the app is built here, so a bad rule set or
configuration fails before the port opens; with more workers uvicorn starts each worker from
`app_from_environment`, after the same checks have passed here.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from .commands import EXIT_USAGE, Fail, _parse_params, _rules_option, load_rule_set

INSECURE_WARNING = ("cdss: WARNING: authentication is OFF (--insecure-no-auth): anyone who can reach this port can "
                    "submit patient data and read cards. For local trials only; never expose it to a network.")
PAGES_WARNING = ("cdss: WARNING: web_pages = true with authentication on: the web pages (/, /rulebook, /try/evaluate) "
                 "take NO token, so anyone who can reach this port can evaluate patient documents there. Serve them "
                 "only on a trusted network, or set web_pages = false.")


def log_config() -> dict[str, Any]:
    """Logging to stderr: uvicorn's own lines and cdss's access log; uvicorn's access log (it holds paths) is off."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            "cdss.service": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
    }


@click.command()
@_rules_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="Service configuration (TOML, YAML or JSON): issuers and keys, audience base URL, "
                                   "CORS origins, feedback database (default: $XDG_STATE_HOME/cdss/feedback.sqlite3, else "
                                   "~/.local/state/cdss/feedback.sqlite3). See docs/SERVICE.md.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="Override a policy parameter (repeatable).")
@click.option("--insecure-no-auth", is_flag=True, help="Accept requests without a JWT (local trials only; warns on every start).")
def serve(rules_path: Path | None, host: str, port: int, workers: int, config_path: Path | None, params: tuple[str, ...],
          insecure_no_auth: bool) -> None:
    """Serve the rules as a CDS Hooks 2.0 service (discovery, patient-view, feedback).

    \b
    GET  /cds-services                 discovery
    POST /cds-services/{id}            the patient-view hook (answers in prefetch.cdssPatient)
    POST /cds-services/{id}/feedback   card outcomes, stored for `cdss feedback report`
    GET  /healthz, /docs               liveness, OpenAPI documentation

    Every request needs a signed JWT (CDS Hooks "Trusting CDS Clients") from an issuer in
    --config, unless --insecure-no-auth.
    """
    try:
        import uvicorn

        from ..service.app import ENV_CONFIG, ENV_INSECURE, ENV_PARAMS, ENV_RULES, create_app
        from ..service.config import ConfigError, load_config
        from ..service.feedback import StoreError
    except ImportError as error:
        raise Fail(f"cdss serve needs the service extra ({error.name} is missing): pip install 'cdss[service]'",
                   EXIT_USAGE) from None
    overrides = _parse_params(params)
    rules = load_rule_set(rules_path, overrides)
    try:
        config = load_config(config_path, auth=not insecure_no_auth)
    except ConfigError as error:
        raise Fail(f"--config: {error}", EXIT_USAGE) from None
    if insecure_no_auth:
        click.echo(INSECURE_WARNING, err=True)
    elif config.pages_served:
        click.echo(PAGES_WARNING, err=True)
    click.echo(f"cdss: serving {rules.info.id} {rules.info.version} ({rules.info.digest[:19]}...) at "
               f"http://{host}:{port}/cds-services with {workers} worker{'s' if workers != 1 else ''}; "
               f"feedback in {config.feedback_db}", err=True)
    if workers == 1:
        try:
            app: Any = create_app(rules, config)
        except StoreError as error:
            raise Fail(str(error), EXIT_USAGE) from None
        with _startup_failure(host, port):
            uvicorn.run(app, host=host, port=port, log_config=log_config(), access_log=False, server_header=False)
        return
    os.environ[ENV_RULES] = str(rules_path) if rules_path is not None else ""
    os.environ[ENV_CONFIG] = str(config_path) if config_path is not None else ""
    os.environ[ENV_INSECURE] = "1" if insecure_no_auth else "0"
    os.environ[ENV_PARAMS] = json.dumps(overrides)
    from ..service.workers import run_workers

    with _startup_failure(host, port):
        run_workers(host=host, port=port, workers=workers, log_config=log_config())


@contextlib.contextmanager
def _startup_failure(host: str, port: int) -> Iterator[None]:
    """uvicorn exits 3 when it cannot bind; 3 means "invalid rule files" here, so say what happened, exit 2."""
    try:
        yield
    except SystemExit as error:
        if error.code in (0, None):
            raise
        raise Fail(f"the server could not start on {host}:{port} (uvicorn's message is above: is the port in use?)",
                   EXIT_USAGE) from None
