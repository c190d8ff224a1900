// React 19 ships CommonJS only. This module evaluates its development builds
// in the page with a `require` that knows just these modules, so that a page
// runs React without a bundler. The files are fetched first (top-level
// await), then evaluated on first `require`, each once, in its own function
// scope, as Node would.

const BASE = '/node_modules/';
const FILES = {
  react: 'react/cjs/react.development.js',
  'react-dom': 'react-dom/cjs/react-dom.development.js',
  'react-dom/client': 'react-dom/cjs/react-dom-client.development.js',
  scheduler: 'scheduler/cjs/scheduler.development.js',
};
// The one thing the builds read from Node's globals.
const process = { env: { NODE_ENV: 'development' } };

const sources = new Map(
  await Promise.all(
    Object.entries(FILES).map(async ([name, file]) => {
      const response = await fetch(BASE + file);
      if (!response.ok) throw new Error(`${BASE}${file}: HTTP ${response.status}`);
      return [name, await response.text()];
    }),
  ),
);
const evaluated = new Map();

export function require(name) {
  if (evaluated.has(name)) return evaluated.get(name).exports;
  const source = sources.get(name);
  if (source === undefined) throw new Error(`no CommonJS module ${JSON.stringify(name)} in this page`);
  const module = { exports: {} };
  evaluated.set(name, module); // before evaluating: a cycle gets the partial exports, as in Node
  // sourceURL: stack traces and the devtools name the file.
  const body = `${source}\n//# sourceURL=${BASE}${FILES[name]}`;
  new Function('module', 'exports', 'require', 'process', body)(module, module.exports, require, process);
  return module.exports;
}
