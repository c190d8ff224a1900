"""Short JSON calls with bounded retries.

What may be retried depends on the request:

- reads and publishes (`resend=True`) are retried after any network error
  and after 429, 502, 503 and 504. A publish whose answer was lost may have
  been applied; the caller learns so from `Answer.uncertain`;
- creating a job (`resend=False`) is retried only when the hub certainly did
  not act on it: no connection could be made, or it answered 429 or 503
  (a job it could not queue is marked failed before the 503, so a retry
  never leaves two jobs running). A connection that breaks after the
  request went out raises OutcomeUnknown instead.
"""

from __future__ import annotations

import http.client
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hub_client.backoff import Backoff
from hub_client.endpoint import Endpoint, NotSent, Reply, StaleConnection
from hub_client.errors import HubClientError, OutcomeUnknown, code_of, error_for

#: The hub refused before acting: busy, limited or briefly unavailable.
_REFUSED = frozenset({429, 503})
#: A proxy in front of the hub gave up: the hub may or may not have acted.
_GATEWAY = frozenset({502, 504})


@dataclass(frozen=True, slots=True)
class Answer:
    reply: Reply
    #: An earlier attempt failed in a way that leaves open whether the hub
    #: applied it (its answer was lost).
    uncertain: bool


class _Busy(HubClientError):
    """An answer that asks to try again later; only ever a retry's cause."""


def call(
    endpoint: Endpoint,
    method: str,
    path: str,
    body: Any,
    backoff: Backoff,
    *,
    resend: bool,
    sleep: Callable[[float], None] = time.sleep,
) -> Answer:
    """Sends until the hub gives an answer worth keeping (a success or a
    refusal that will not change) and returns it; raises RetriesExhausted
    when the retries run out, OutcomeUnknown as described above."""
    uncertain = False
    while True:
        try:
            reply = endpoint.exchange(method, path, body, reuse=resend)
        except NotSent as error:
            sleep(backoff.failed(error.__cause__ or error))
            continue
        except StaleConnection:
            # At once, on a new connection (the next exchange makes one); and
            # uncertain, in the unlikely case the hub acted before it closed.
            uncertain = True
            continue
        except (OSError, http.client.HTTPException) as error:
            if isinstance(error, ssl.SSLCertVerificationError):
                # A certificate that does not verify will not verify later.
                raise HubClientError(f"TLS verification failed: {error}") from error
            if not resend:
                raise OutcomeUnknown(
                    f"the connection broke after {method} {path} was sent; the hub may have acted on it: {error}"
                ) from error
            uncertain = True
            sleep(backoff.failed(error))
            continue
        retry = reply.status in _REFUSED or (resend and reply.status in _GATEWAY)
        if not retry:
            return Answer(reply, uncertain)
        # Only a 429 is sure to come before the hub did anything.
        uncertain = uncertain or reply.status != 429
        busy = _Busy(f"the hub answered {reply.status}{code_of(reply.body)}", reply.status, reply.body)
        sleep(backoff.failed(busy, reply.retry_after))


def expect_success(answer: Answer, path: str) -> Any:
    """The body of a 2xx answer; raises the matching error for any other."""
    reply = answer.reply
    if 200 <= reply.status < 300:
        return reply.body
    raise error_for(reply.status, reply.body, path)
