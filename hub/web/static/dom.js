// Small DOM helpers shared by the demo page's modules. Text from the hub or
// the user goes in through textContent, never innerHTML.

export const $ = (id) => document.getElementById(id);

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = String(text);
  return node;
}

/** Shows `text` in `node`, or hides the node when there is none. */
export function showMessage(node, text) {
  node.textContent = text || '';
  node.hidden = !text;
}

/** "maxWidth" or "max_width" as "Max width". */
export function humanize(name) {
  const words = String(name)
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/[_-]+/g, ' ')
    .trim()
    .toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}
