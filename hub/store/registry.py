"""The registry of job types: what a job type is, how an app declares one,
and how the hub, the workers and the clients find them all.

A job type has a name, an input schema and a runner: a Dramatiq actor that
the hub enqueues, or `external` (the app's own workers publish its progress
over HTTP). Routes, links, validation, the worker's actor declarations and
the clients all derive from here; nothing else lists job types.

An app declares its types in a module of its own, named by `HUB_APPS`:

    from actors import Text, job_type, report

    @job_type("transcode", input={"url": Text(required=True)})
    def transcode(url: str) -> dict:
        report(50, step="halfway")
        return {"done": url}

Loading imports each module and takes every `JobType` it defines; this
module keeps no state of its own.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from hub.errors import ConfigError
from hub.store.schema import AnyObject, Field, Schema, as_schema

NAME = re.compile(r"\A[a-z][a-z0-9_-]{0,31}\Z")
#: The Dramatiq queue of the hub's jobs; the workers consume it.
QUEUE = "hub-jobs"
#: Message option that tells the lifecycle middleware which job a message runs.
JOB_OPTION = "hub_job"
#: The module that registers the two example types (`HUB_EXAMPLE_JOBS`).
EXAMPLES_MODULE = "actors.examples"
#: Dramatiq's options a hub actor may set, and the defaults the hub gives them.
ACTOR_DEFAULTS: dict[str, Any] = {
    "max_retries": 3,
    "min_backoff": 500,
    "max_backoff": 10_000,
    "time_limit": 5 * 60 * 1000,
}


@dataclass(frozen=True)
class Actor:
    """How the workers run a job type: a function declared as a Dramatiq actor."""

    fn: Callable[..., Any]
    actor_name: str
    queue_name: str = QUEUE
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SeedPaths:
    """The paths a type had before the generic API (kept for old clients):
    where its jobs are created, and the segment of its status path
    (`/api/v1/{segment}/jobs/{id}`)."""

    create: str
    segment: str


@dataclass(frozen=True)
class JobType:
    name: str
    input: Schema = field(default_factory=AnyObject)
    #: None for an `external` type.
    actor: Actor | None = None
    #: Hints for the demo page and other generic clients, e.g.
    #: {"title": "Character", "image": "url"} (show result["url"] as an image).
    view: dict[str, Any] = field(default_factory=dict)
    seed_paths: SeedPaths | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME.match(self.name):
            raise ConfigError(f"job type name {self.name!r} must match {NAME.pattern[2:-2]}")

    @property
    def external(self) -> bool:
        return self.actor is None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the actor's function directly (in tests, say)."""
        if self.actor is None:
            raise TypeError(f"job type {self.name!r} is external: its own workers run it")
        return self.actor.fn(*args, **kwargs)

    def links(self, job_id: str) -> dict[str, str]:
        status = f"/api/v1/{self.seed_paths.segment}/jobs/{job_id}" if self.seed_paths else f"/api/v1/jobs/{job_id}"
        return {
            "sse": f"/api/v1/sse/jobs/{self.name}/{job_id}",
            "poll": f"/api/v1/poll/jobs/{self.name}/{job_id}",
            "status": status,
        }

    def describe(self) -> dict[str, Any]:
        """What clients learn of the type (`GET /api/v1/job-types`)."""
        return {
            "type": self.name,
            "runner": "external" if self.external else "actor",
            "input": self.input.describe(),
            "view": self.view,
            "create": self.seed_paths.create if self.seed_paths else "/api/v1/jobs",
        }


def job_type(
    name: str,
    *,
    input: Schema | dict[str, Field] | None = None,
    view: dict[str, Any] | None = None,
    actor_name: str | None = None,
    queue_name: str = QUEUE,
    seed_paths: SeedPaths | None = None,
    **actor_options: Any,
) -> Callable[[Callable[..., Any]], JobType]:
    """Declares a job type run by the decorated function as a Dramatiq actor.

    `input` maps each input field to its kind (`Text`, `Integer`,
    `Boolean`); the function gets the validated input as keyword arguments.
    `actor_options` are Dramatiq's (max_retries, time_limit, min_backoff,
    max_backoff, ...). The decorated name becomes the `JobType`; calling it
    still calls the function.
    """
    unknown = sorted(set(actor_options) - _DRAMATIQ_OPTIONS)
    if unknown:
        raise ConfigError(f"job type {name!r}: unknown actor option(s) {', '.join(unknown)}")

    def declare(fn: Callable[..., Any]) -> JobType:
        fn = _plain_function(name, fn, queue_name)
        actor = Actor(fn, actor_name or fn.__name__, queue_name, {**ACTOR_DEFAULTS, **actor_options})
        return JobType(name, as_schema(input), actor, dict(view or {}), seed_paths)

    return declare


def external_job_type(
    name: str, *, input: Schema | dict[str, Field] | None = None, view: dict[str, Any] | None = None
) -> JobType:
    """Declares a job type whose progress the app's own workers publish over HTTP."""
    return JobType(name, as_schema(input), None, dict(view or {}))


_DRAMATIQ_OPTIONS = {
    "max_retries",
    "min_backoff",
    "max_backoff",
    "time_limit",
    "max_age",
    "retry_when",
    "throws",
    "priority",
}


def _plain_function(name: str, fn: Any, queue_name: str) -> Callable[..., Any]:
    """The function behind `fn`, which may already be a Dramatiq actor (an
    app that stacked @job_type on @dramatiq.actor): such an actor must be on
    the hub's queue, or its jobs would wait where no hub worker looks."""
    inner = getattr(fn, "fn", None)
    if inner is not None and hasattr(fn, "queue_name"):
        if fn.queue_name != queue_name:
            raise ConfigError(
                f"job type {name!r}: actor {fn.actor_name!r} is on queue {fn.queue_name!r}, "
                f"but hub jobs run on {queue_name!r}: declare it with @job_type alone"
            )
        return inner  # type: ignore[no-any-return]
    if not callable(fn):
        raise ConfigError(f"job type {name!r}: @job_type decorates a function, not {fn!r}")
    return fn  # type: ignore[no-any-return]


class Registry:
    """The job types of one deployment, by name."""

    def __init__(self, types: Iterable[JobType] = ()) -> None:
        self._types: dict[str, JobType] = {}
        self._origins: dict[str, str] = {}
        for job in types:
            self.add(job)

    def add(self, job: JobType, origin: str = "") -> None:
        if job.name in self._types:
            if self._types[job.name] is job:
                return  # the same object, imported by two app modules
            where = f" ({self._origins[job.name]} and {origin})" if origin else ""
            raise ConfigError(f"job type {job.name!r} is registered twice{where}")
        if job.actor is not None:
            for other in self._types.values():
                if other.actor is not None and other.actor.actor_name == job.actor.actor_name:
                    raise ConfigError(
                        f"job types {other.name!r} and {job.name!r} use the same actor name {job.actor.actor_name!r}"
                    )
        self._types[job.name] = job
        self._origins[job.name] = origin

    def get(self, name: str) -> JobType | None:
        return self._types.get(name)

    def __iter__(self) -> Iterator[JobType]:
        return iter(self._types.values())

    def __len__(self) -> int:
        return len(self._types)

    def names(self) -> list[str]:
        return list(self._types)

    def actors(self) -> list[Actor]:
        return [job.actor for job in self if job.actor is not None]

    def with_seed_paths(self) -> list[JobType]:
        return [job for job in self if job.seed_paths is not None]


def load(apps: Iterable[str], external: Iterable[str] = ()) -> Registry:
    """Imports each app module and registers every job type it defines, then
    the `external` types named in settings. Fails loudly, at start, on a
    module that cannot be imported, a duplicate name or a bad declaration."""
    registry = Registry()
    for module_name in apps:
        for job in job_types_in(_import(module_name)):
            registry.add(job, module_name)
    for name in external:
        if registry.get(name) is None:
            registry.add(external_job_type(name), "HUB_EXTERNAL_JOB_TYPES")
        elif not registry.get(name).external:  # type: ignore[union-attr]
            raise ConfigError(f"HUB_EXTERNAL_JOB_TYPES names {name!r}, which an app runs with an actor")
    return registry


def job_types_in(module: ModuleType) -> list[JobType]:
    found = [value for value in vars(module).values() if isinstance(value, JobType)]
    return sorted(found, key=lambda job: job.name)


def _import(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ConfigError as exc:
        raise ConfigError(f"HUB_APPS: {module_name}: {exc}") from None
    except ImportError as exc:
        raise ConfigError(f"HUB_APPS: cannot import {module_name!r}: {exc}") from exc
