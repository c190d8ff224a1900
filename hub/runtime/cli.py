"""The `hub` command: up, serve, worker, token, watch."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from hub_client import watch as watch_command

from hub.errors import ConfigError
from hub.store.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hub", description="Realtime job-progress hub.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="run everything on this machine: Redis, web server and worker")
    up.add_argument("--data-dir", help="where the embedded Redis keeps its files (default: a temporary folder)")
    serve_command = commands.add_parser("serve", help="run the web server (needs HUB_REDIS_URL)")
    # Only `hub up` passes this: it serves the demo page's token endpoint.
    serve_command.add_argument("--dev-tokens", action="store_true", help=argparse.SUPPRESS)
    # Only the process that runs HUB_PROCESSES of them passes this to each.
    serve_command.add_argument("--shared-port", action="store_true", help=argparse.SUPPRESS)
    worker = commands.add_parser("worker", help="run a Dramatiq worker for the actors (needs HUB_REDIS_URL)")
    worker.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="also import MODULE: plain Dramatiq actors of your app, run on their own queues "
        "(job types go in HUB_APPS)",
    )
    token = commands.add_parser("token", help="print a JWT for a user or a service, signed with HUB_JWT_SECRET")
    subject = token.add_mutually_exclusive_group(required=True)
    subject.add_argument("--user", help="the user id (the token's sub)")
    subject.add_argument(
        "--service", help="a service's name (the token's sub): it may create jobs for users and publish progress"
    )
    token.add_argument("--ttl", type=int, default=3600, help="seconds the token is valid (default 3600)")
    watch_command.add_arguments(commands.add_parser("watch", help="follow one job's progress until it ends"))
    args = parser.parse_args(argv)
    if args.command == "watch":
        # A client of the hub: it needs none of the hub's settings or logging.
        return watch_command.run(args)

    logging.basicConfig(level=os.environ.get("HUB_LOG_LEVEL", "INFO").upper(), format=LOG_FORMAT)
    if args.command in ("up", "serve", "worker") and os.getcwd() not in sys.path:
        # As under `python -m`: an app's modules (HUB_APPS, --import) next
        # to where the hub is started are found without PYTHONPATH.
        sys.path.append(os.getcwd())
    try:
        if args.command == "up":
            from hub.runtime.supervisor import run_everything

            return run_everything(data_dir=args.data_dir)
        settings = Settings.from_env()
        if args.command == "serve":
            from hub.runtime.server_group import process_count

            count = 1 if args.shared_port else process_count(settings.processes, default=1)
            if count > 1:
                from hub.runtime.server_group import serve_group

                return serve_group(settings, count, dev_tokens=args.dev_tokens)
            from hub.runtime.server import serve
            from hub.web.dispatch import load_job_types

            job_types = load_job_types(settings)  # before anything else: a bad app stops here
            asyncio.run(serve(settings, dev_tokens=args.dev_tokens, job_types=job_types, shared_port=args.shared_port))
            return 0
        if args.command == "worker":
            from actors.worker import run

            run(settings, tuple(args.imports))
            return 0
        if args.command == "token":
            from hub.web.auth import PUBLISH_SCOPE, issue_token, subject_problem

            if args.ttl <= 0:
                raise ConfigError("--ttl must be greater than 0")
            subject, what = (args.service, "service name") if args.service is not None else (args.user, "user id")
            problem = subject_problem(subject)
            if problem:
                # Never a token the hub would refuse (or choke on) later.
                raise ConfigError(f"the {what} {problem}")
            scope = PUBLISH_SCOPE if args.service is not None else None
            print(issue_token(settings, subject, args.ttl, scope=scope))
            return 0
    except ConfigError as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
