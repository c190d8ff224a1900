"""The access log: one line per request, `200 GET /path (client ip) 1.2ms`,
never with the query string (it may carry `access_token` or a ticket).

It runs for every request, each stream's connect included, so it is made
cheaply: nothing at all when its level is off; otherwise one record made
directly, its fields that stay the same within a thread of a process (the
process and thread, the source file) copied from a record made once,
instead of `Logger.log`'s work per line (finding the caller's frame, the
%-formatting, looking up the process and thread names). Handlers, filters
and formatters see the same record as ever.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

import tornado.web

#: Fields of a record that change from one line to the next.
_PER_LINE = frozenset({"msg", "args", "levelno", "levelname", "created", "msecs", "relativeCreated", "taskName"})


class AccessLog:
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("hub.access")
        self._fields: dict[str, Any] = {}
        self._made_in: tuple[int, int] = (-1, -1)

    def log_request(self, handler: tornado.web.RequestHandler) -> None:
        """Tornado's `log_function`."""
        status = handler.get_status()
        level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
        if not self.logger.isEnabledFor(level):
            return
        request = handler.request
        took = 1000.0 * request.request_time()
        message = f"{status} {request.method} {request.path} ({request.remote_ip}) {took:.1f}ms"
        self.logger.handle(self._record(level, message))

    def _record(self, level: int, message: str) -> logging.LogRecord:
        if logging.getLogRecordFactory() is not logging.LogRecord:
            # Someone makes every record (to add a trace id, say): theirs, the slow way.
            return self.logger.makeRecord(self.logger.name, level, __file__, 0, message, (), None, "log_request")
        here = (os.getpid(), threading.get_ident())
        if here != self._made_in:
            model = self.logger.makeRecord(self.logger.name, level, __file__, 0, "", (), None, "log_request")
            self._fields = {name: value for name, value in vars(model).items() if name not in _PER_LINE}
            self._made_in = here
        record = logging.LogRecord.__new__(logging.LogRecord)
        fields = vars(record)
        fields.update(self._fields)
        now = time.time()
        fields["msg"] = message
        fields["args"] = ()
        fields["levelno"] = level
        fields["levelname"] = logging.getLevelName(level)
        fields["created"] = now
        fields["msecs"] = int((now - int(now)) * 1000) + 0.0
        fields["relativeCreated"] = (now - logging._startTime) * 1000  # type: ignore[attr-defined]
        if sys.version_info >= (3, 12):
            fields["taskName"] = _task_name()
        return record


def _task_name() -> str | None:
    # As LogRecord does it (Python 3.12 on), for formats that show it.
    if not getattr(logging, "logAsyncioTasks", False):
        return None
    asyncio = sys.modules.get("asyncio")
    try:
        return asyncio.current_task().get_name() if asyncio else None
    except Exception:
        return None
