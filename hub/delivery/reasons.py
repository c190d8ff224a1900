"""Why a subscriber stopped: each transport ends its client's answer by it."""

from __future__ import annotations


class CloseReason:
    #: The client went away, or its connection failed.
    CLIENT_GONE = "client_gone"
    #: The client did not keep up (its queue filled, or a write stalled).
    SLOW = "slow_consumer"
    #: Redis pub/sub was lost: the client resumes from its cursor.
    BUS_RESET = "bus_reset"
    SHUTDOWN = "shutdown"
    #: The job's terminal event has been sent.
    ENDED = "ended"
    TOKEN_EXPIRED = "token_expired"
    #: The transport's answer is complete (a long-poll's batch).
    ANSWERED = "answered"
