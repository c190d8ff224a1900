// `react-dom/client` for ES modules (see react.js).
import { require } from './commonjs.js';

const ReactDOMClient = require('react-dom/client');
export default ReactDOMClient;
export const { createRoot, hydrateRoot, version } = ReactDOMClient;
