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
import inspect
import re
import sysconfig
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from hub.errors import ClientError, ConfigError
from hub.store.schema import AnyObject, Field, Schema, as_schema

#: What a job type's name may be (it appears in paths and metric labels).
NAME = re.compile(r"\A[a-z][a-z0-9_-]{0,31}\Z")
#: Dramatiq's rule for queue names.
QUEUE_NAME = re.compile(r"\A[a-zA-Z_][a-zA-Z0-9._-]*\Z")
#: A dotted Python module name (an entry of HUB_APPS).
MODULE_NAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
#: The Dramatiq queue of the hub's jobs; the workers consume it.
QUEUE = "hub-jobs"
#: Message option that tells the lifecycle middleware which job a message runs.
JOB_OPTION = "hub_job"
#: The module that registers the two example types (`HUB_EXAMPLE_JOBS`).
EXAMPLES_MODULE = "actors.examples"
#: The defaults the hub gives Dramatiq's options of a job type's actor.
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
    #: {"title": "Transcode", "image": "url"} (show result["url"] as an image).
    view: dict[str, Any] = field(default_factory=dict)
    seed_paths: SeedPaths | None = None
    #: An input that shows what the type takes (in `hub up`'s banner, the demo).
    example: dict[str, Any] | None = None

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
            "example": self.example,
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
    example: dict[str, Any] | None = None,
    **actor_options: Any,
) -> Callable[[Callable[..., Any]], JobType]:
    """Declares a job type run by the decorated function as a Dramatiq actor.

    `input` maps each input field to its kind (`Text`, `Integer`,
    `Boolean`); the function gets the validated input as keyword arguments
    (every field, defaults filled in). Without `input`, any JSON object is
    taken and passed as keyword arguments. `actor_name` defaults to the
    function's name and must be unique across the deployment; `queue_name`
    is the Dramatiq queue the hub enqueues to (every worker consumes the
    queues of the actors it declares). `actor_options` are Dramatiq's
    (max_retries, time_limit, min_backoff, max_backoff, max_age, throws,
    retry_when, priority, ...). The decorated name becomes the `JobType`;
    calling it still calls the function.

    Every mistake is a `ConfigError` raised here, when the app's module is
    imported, so `hub serve` and `hub worker` refuse to start on it.
    """
    if not isinstance(name, str):
        raise ConfigError(f'@job_type needs the type\'s name: @job_type("name", input={{...}}), not {name!r}')
    unknown = sorted(set(actor_options) - DRAMATIQ_OPTIONS)
    if unknown:
        raise ConfigError(f"job type {name!r}: unknown actor option(s) {', '.join(unknown)}")
    if not isinstance(queue_name, str) or not QUEUE_NAME.match(queue_name):
        raise ConfigError(f"job type {name!r}: queue name {queue_name!r} must match {QUEUE_NAME.pattern[2:-2]}")
    try:
        schema = as_schema(input)
    except TypeError as exc:
        raise ConfigError(f"job type {name!r}: {exc}") from None

    def declare(fn: Callable[..., Any]) -> JobType:
        plain, declared_name, declared_options = _unwrap_actor(name, fn, queue_name)
        if actor_name and declared_name and actor_name != declared_name:
            raise ConfigError(
                f"job type {name!r}: actor_name {actor_name!r} differs from its @dramatiq.actor's {declared_name!r}"
            )
        _check_signature(name, plain, schema)
        options = {**ACTOR_DEFAULTS, **declared_options, **actor_options}
        actor = Actor(plain, actor_name or declared_name or plain.__name__, queue_name, options)
        return JobType(name, schema, actor, dict(view or {}), seed_paths, _example(name, schema, example))

    return declare


def external_job_type(
    name: str,
    *,
    input: Schema | dict[str, Field] | None = None,
    view: dict[str, Any] | None = None,
    example: dict[str, Any] | None = None,
) -> JobType:
    """Declares a job type whose progress the app's own workers publish over HTTP."""
    try:
        schema = as_schema(input)
    except TypeError as exc:
        raise ConfigError(f"job type {name!r}: {exc}") from None
    return JobType(name, schema, None, dict(view or {}), None, _example(name, schema, example))


def _example(name: str, schema: Schema, example: dict[str, Any] | None) -> dict[str, Any] | None:
    """The example input, checked against the type's own schema at start."""
    if example is None:
        return None
    try:
        schema.validate(example)
    except ClientError as exc:
        raise ConfigError(f"job type {name!r}: its example input is refused: {exc.message}") from None
    return dict(example)


#: Dramatiq's actor options a job type may set (those of its default middleware).
DRAMATIQ_OPTIONS = frozenset(
    {
        "max_retries",
        "min_backoff",
        "max_backoff",
        "retry_when",
        "throws",
        "on_retry_exhausted",
        "time_limit",
        "max_age",
        "notify_shutdown",
        "on_success",
        "on_failure",
        "priority",
    }
)


def _unwrap_actor(name: str, fn: Any, queue_name: str) -> tuple[Callable[..., Any], str | None, dict[str, Any]]:
    """The function behind `fn`, which may already be a Dramatiq actor (an
    app that stacked @job_type on @dramatiq.actor), with that actor's name
    and options. Such an actor must be on the job type's queue, or its jobs
    would wait where no hub worker looks."""
    inner = getattr(fn, "fn", None)
    if inner is not None and hasattr(fn, "queue_name") and hasattr(fn, "actor_name"):
        if fn.queue_name != queue_name:
            raise ConfigError(
                f"job type {name!r}: actor {fn.actor_name!r} is declared on queue {fn.queue_name!r}, "
                f"but the hub enqueues this type on {queue_name!r}: declare it with @job_type alone"
            )
        options = {key: value for key, value in dict(getattr(fn, "options", {})).items() if key in DRAMATIQ_OPTIONS}
        return inner, str(fn.actor_name), options
    if isinstance(fn, JobType):
        raise ConfigError(f"job type {name!r}: @job_type is stacked on job type {fn.name!r}")
    if not callable(fn):
        raise ConfigError(f"job type {name!r}: @job_type decorates a function, not {fn!r}")
    return fn, None, {}


def _check_signature(name: str, fn: Callable[..., Any], schema: Schema) -> None:
    """Refuses a function that could not take its input: every job of the
    type would fail, one by one, long after the deployment started."""
    if isinstance(schema, AnyObject):
        return  # whatever keys the input has; the function takes its chances
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin or C function: nothing to check
    try:
        signature.bind(**dict.fromkeys(schema.fields))
    except TypeError as exc:
        fields = ", ".join(schema.fields) or "none"
        raise ConfigError(
            f"job type {name!r}: {getattr(fn, '__qualname__', fn)!r} cannot take its input fields ({fields}): {exc}"
        ) from None


class Registry:
    """The job types of one deployment, by name."""

    def __init__(self, types: Iterable[JobType] = ()) -> None:
        self._types: dict[str, JobType] = {}
        self._origins: dict[str, str] = {}
        for job in types:
            self.add(job)

    def add(self, job: JobType, origin: str = "") -> None:
        """Registers `job`, declared in `origin` (a module name, say)."""
        known = self._types.get(job.name)
        if known is job:
            return  # the same object, imported by two app modules
        if known is not None:
            raise ConfigError(f"job type {job.name!r} is registered twice{self._where(known, origin)}")
        if job.actor is not None:
            for other in self._types.values():
                if other.actor is not None and other.actor.actor_name == job.actor.actor_name:
                    raise ConfigError(
                        f"job types {other.name!r} and {job.name!r} use the same actor name "
                        f"{job.actor.actor_name!r}{self._where(other, origin)}: give one another actor_name"
                    )
        self._types[job.name] = job
        self._origins[job.name] = origin

    def _where(self, known: JobType, origin: str) -> str:
        first = self._origins[known.name]
        if not first or not origin:
            return ""
        hint = "; HUB_EXAMPLE_JOBS=0 turns the examples off" if EXAMPLES_MODULE in (first, origin) else ""
        return f" (in {origin})" if first == origin else f" (in {first} and {origin}{hint})"

    def get(self, name: str) -> JobType | None:
        return self._types.get(name)

    def __iter__(self) -> Iterator[JobType]:
        return iter(self._types.values())

    def __len__(self) -> int:
        return len(self._types)

    def with_actors(self) -> list[JobType]:
        """The types the workers run (not the `external` ones)."""
        return [job for job in self if job.actor is not None]

    def with_seed_paths(self) -> list[JobType]:
        return [job for job in self if job.seed_paths is not None]


def load(apps: Iterable[str], external: Iterable[str] = ()) -> Registry:
    """Imports each app module and registers every job type it defines, then
    the `external` types named in settings.

    Fails loudly, at start, with a `ConfigError` that names the module or
    the type: a module that cannot be imported or raises while it is, one
    that defines no job type, a duplicate type or actor name, a bad
    declaration. A process loads it once, before anything else.
    """
    registry = Registry()
    for module_name in apps:
        types = job_types_in(import_module(module_name))
        if not types:
            raise ConfigError(
                f"HUB_APPS: module {module_name!r} defines no job type "
                "(declare them at module level with @job_type or external_job_type)"
            )
        for job in types:
            registry.add(job, module_name)
    for name in external:
        known = registry.get(name)
        if known is None:
            try:
                registry.add(external_job_type(name), "HUB_EXTERNAL_JOB_TYPES")
            except ConfigError as exc:
                raise ConfigError(f"HUB_EXTERNAL_JOB_TYPES: {exc}") from None
        elif not known.external:
            raise ConfigError(f"HUB_EXTERNAL_JOB_TYPES names {name!r}, which an app runs with an actor")
    return registry


def job_types_in(module: ModuleType) -> list[JobType]:
    """The job types a module defines (or imports) at module level."""
    found = []
    for attribute, value in vars(module).items():
        if isinstance(value, JobType):
            found.append(value)
        elif isinstance(getattr(value, "fn", None), JobType):
            # @dramatiq.actor over @job_type: a plain actor on Dramatiq's
            # default queue that the hub would never enqueue.
            raise ConfigError(
                f"{module.__name__}.{attribute}: @dramatiq.actor is stacked on job type "
                f"{value.fn.name!r}; use @job_type alone (or on top)"
            )
    return sorted(found, key=lambda job: job.name)


def import_module(module_name: str, source: str = "HUB_APPS") -> ModuleType:
    """Imports an app's module; whatever goes wrong is a one-line
    `ConfigError` that starts with `source` (the setting or option that
    named the module) and says which module and why."""
    if not MODULE_NAME.match(module_name):
        raise ConfigError(f"{source}: {module_name!r} is not a module name")
    try:
        return importlib.import_module(module_name)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {module_name}: {exc}") from None
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise ConfigError(
                f"{source}: no module named {exc.name!r} (is its folder on PYTHONPATH, or the current directory?)"
            ) from None
        raise ConfigError(f"{source}: importing {module_name!r} failed: {_one_line(exc)}") from None
    except Exception as exc:
        raise ConfigError(f"{source}: importing {module_name!r} failed: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    """The exception, and where it was raised, on one line."""
    text = " ".join(str(exc).split())
    what = f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
    if isinstance(exc, SyntaxError):
        return what  # its text says file and line already
    # The innermost frame of the app's code: not of the import machinery,
    # nor of a library the app called (unless the app is installed as one).
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen")]
    libraries = tuple({sysconfig.get_path(kind) for kind in ("stdlib", "platstdlib", "purelib", "platlib")})
    own = [f for f in frames if not f.filename.startswith(libraries)] or frames
    return f"{what} (at {own[-1].filename}:{own[-1].lineno})" if own else what
