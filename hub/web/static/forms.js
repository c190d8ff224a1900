// "Start a job" forms, built from a job type's input schema (the JSON Schema
// subset of GET /api/v1/job-types): a text box per string (a list for an
// enum, a text area for long text), a number box per integer, a checkbox per
// boolean. The forms do not validate: the hub's 400 message is the one set of
// rules, shown under the form.

import { el, humanize, showMessage } from './dom.js';

// Strings that may be longer than this get a text area.
const LONG_TEXT = 1000;

/** A form for `jobType`; `start(type, input, title)` creates the job and
 *  rejects with an Error whose message the form shows. */
export function jobForm(jobType, start) {
  const { type } = jobType;
  const schema = jobType.input || {};
  const required = new Set(schema.required || []);
  const form = el('form', 'panel job-form');
  form.id = `${type}-form`;
  form.dataset.jobType = type;
  form.noValidate = true;
  form.append(el('h2', '', jobType.view?.title || humanize(type)));

  const readers = [];
  for (const [name, field] of Object.entries(schema.properties || {})) {
    const id = `${type}-${name}`;
    const control = fieldControl(id, name, field, required.has(name));
    readers.push({ name, field, required: required.has(name), control });
    if (field.type === 'boolean') {
      const row = el('label', 'check');
      row.htmlFor = id;
      row.append(control, el('span', '', humanize(name)));
      form.append(row);
    } else {
      form.append(fieldLabel(id, name, required.has(name)), control);
    }
  }

  const error = el('p', 'error');
  error.id = `${type}-error`;
  error.setAttribute('role', 'alert');
  error.hidden = true;
  const button = el('button', '', 'Start job');
  button.id = `${type}-start`;
  button.type = 'submit';
  form.append(error, button);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const input = {};
    for (const reader of readers) {
      const value = readControl(reader);
      if (value !== undefined) input[reader.name] = value;
    }
    button.disabled = true;
    showMessage(error, '');
    try {
      await start(type, input, titleOf(readers, input));
    } catch (failure) {
      showMessage(error, failure.message);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

function fieldLabel(id, name, isRequired) {
  const label = el('label', '', humanize(name));
  label.htmlFor = id;
  if (!isRequired) label.append(' ', el('span', 'optional', '(optional)'));
  return label;
}

function fieldControl(id, name, field, isRequired) {
  let control;
  if (field.type === 'boolean') {
    control = el('input');
    control.type = 'checkbox';
    control.checked = field.default === true;
  } else if (field.type === 'integer') {
    control = el('input');
    control.type = 'number';
    control.inputMode = 'numeric';
    control.step = '1';
    if (field.minimum != null) control.min = String(field.minimum);
    if (field.maximum != null) control.max = String(field.maximum);
    // Empty sends nothing, and the hub's default applies: show which.
    control.placeholder = field.default != null ? String(field.default) : field.description || '';
  } else if (Array.isArray(field.enum)) {
    control = el('select');
    if (!isRequired) control.append(option('', field.default ? `default (${field.default})` : '—'));
    for (const choice of field.enum) control.append(option(choice, choice));
    if (isRequired && field.default) control.value = field.default;
  } else {
    control = el(field.maxLength > LONG_TEXT ? 'textarea' : 'input');
    if (control.tagName === 'TEXTAREA') control.rows = 2;
    if (field.maxLength) control.maxLength = field.maxLength;
    control.placeholder = field.description || '';
    if (typeof field.default === 'string') control.value = field.default;
  }
  control.id = id;
  control.name = name;
  if (field.description) control.title = field.description;
  return control;
}

function option(value, text) {
  const node = el('option', '', text);
  node.value = value;
  return node;
}

/** The value to send, or undefined to leave the field out (the hub's default applies). */
function readControl({ field, required, control }) {
  if (field.type === 'boolean') return control.checked;
  if (field.type === 'integer') {
    // Text that is not a number reads as '': send null so that the hub says what is wrong.
    if (control.validity.badInput) return null;
    return control.value.trim() === '' ? undefined : Number(control.value);
  }
  // A required field goes as typed, empty too: the hub says it is missing.
  return control.value === '' && !required ? undefined : control.value;
}

/** What the job's card is called: the first required text, else the first text given. */
function titleOf(readers, input) {
  const texts = readers.filter((r) => r.field.type === 'string' && typeof input[r.name] === 'string');
  const pick = texts.find((r) => r.required && input[r.name].trim()) || texts.find((r) => input[r.name].trim());
  return pick ? input[pick.name].trim() : '';
}
