"""A React app on a second origin (see app_origin.py), with no bundler: the
page loads React 19 and react-dom from the client's node_modules, through a
small CommonJS `require` (support/react/commonjs.js) and an import map that
gives ES modules "react" and "react-dom/client"; it imports the client's own
clients/js/react.js, hub-client.js and shared-connection.js as they are.

The app is one ES module, `app_script`, served at /app.js; the page runs it
after React is loaded. `react_app(app_script)` gives the routes:

    with AppOrigin(get=react_app(SCRIPT)) as app:
        hub = hub_process(HUB_CORS_ORIGINS=app.origin)
        page.goto(app.origin + "/")
"""

from __future__ import annotations

import json

from tests.support.app_origin import Answer, Route, files, page
from tests.support.environment import ROOT

CLIENT = ROOT / "clients" / "js"
NODE_MODULES = CLIENT / "node_modules"
SHIMS = ROOT / "tests" / "support" / "react"

#: React's CommonJS builds the page evaluates (their paths under node_modules).
REACT_FILES = (
    "react/cjs/react.development.js",
    "react-dom/cjs/react-dom.development.js",
    "react-dom/cjs/react-dom-client.development.js",
    "scheduler/cjs/scheduler.development.js",
)

IMPORT_MAP = {"imports": {"react": "/react/react.js", "react-dom/client": "/react/react-dom-client.js"}}

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>A React app on another origin</title>
<link rel="icon" href="data:,">
<script type="importmap">{json.dumps(IMPORT_MAP)}</script>
<script type="module" src="/app.js"></script>
</head>
<body>
<div id="root"></div>
</body>
</html>
"""


def have_react() -> bool:
    return all((NODE_MODULES / path).is_file() for path in REACT_FILES)


def react_app(app_script: str) -> list[Route]:
    """The page, its app, React and the client: `/client/react.js`,
    `/client/hub-client.js` and `/client/shared-connection.js` are the
    client's files."""
    return [
        page("/", lambda: Answer.html(PAGE)),
        page("/app.js", lambda: Answer.script(app_script)),
        files("/react/", SHIMS, ("commonjs.js", "react.js", "react-dom-client.js")),
        files("/node_modules/", NODE_MODULES, REACT_FILES),
        files("/client/", CLIENT, ("react.js", "hub-client.js", "shared-connection.js")),
    ]
