// The API docs page: reads /openapi.json (public, and the only thing it fetches) and renders the
// operations grouped by tag, their parameters, bodies and answers, and every schema. Everything
// from the document goes into the page as text (see dom.js).

import { h, byId, say } from './dom.js';

const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

/** `#/components/schemas/Name` -> `Name`. */
function refName(ref) {
  return ref.split('/').pop();
}

/** A schema's type, written short: `Chat`, `string | null`, `array of Message`, `any`. */
function typeOf(schema) {
  if (!schema || Object.keys(schema).length === 0) return 'any';
  if (schema.$ref) return refName(schema.$ref);
  for (const key of ['oneOf', 'anyOf', 'allOf']) {
    if (Array.isArray(schema[key])) return schema[key].map(typeOf).join(key === 'allOf' ? ' & ' : ' | ');
  }
  const types = Array.isArray(schema.type) ? schema.type : [schema.type ?? 'any'];
  return types.map((t) => (t === 'array' ? `array of ${typeOf(schema.items)}` : t)).join(' | ');
}

/** The type as text, with a link when it names a schema. */
function typeNode(schema) {
  const text = typeOf(schema);
  const ref = schema?.$ref ?? schema?.items?.$ref;
  if (ref) return h('a', { class: 'type', href: `#schema-${refName(ref)}`, text });
  return h('span', { class: 'type', text });
}

/** Limits worth showing beside a type. */
function limits(schema = {}) {
  const out = [];
  for (const [k, label] of [['minimum', 'min'], ['maximum', 'max'], ['minLength', 'min length'],
    ['maxLength', 'max length'], ['minItems', 'min items']]) {
    if (schema[k] !== undefined) out.push(`${label} ${schema[k]}`);
  }
  return out.length ? ` (${out.join(', ')})` : '';
}

function propertyTable(schema) {
  const props = Object.entries(schema.properties ?? {});
  if (!props.length) return h('p', { class: 'desc', text: `${typeOf(schema)}${limits(schema)}` });
  const required = new Set(schema.required ?? []);
  return h('table', {},
    h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'Field' }),
      h('th', { scope: 'col', text: 'Type' }), h('th', { scope: 'col', text: 'Meaning' }))),
    h('tbody', {}, props.map(([name, p]) => h('tr', {},
      h('th', { scope: 'row' }, h('code', { text: name }),
        required.has(name) ? h('span', { class: 'required', text: ' required' }) : null),
      h('td', {}, typeNode(p), limits(p)),
      h('td', { class: 'desc', text: p.description ?? '' })))));
}

function parameters(op) {
  const params = op.parameters ?? [];
  if (!params.length) return null;
  return [h('h3', { text: 'Parameters' }), h('table', {},
    h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'Name' }), h('th', { scope: 'col', text: 'In' }),
      h('th', { scope: 'col', text: 'Type' }), h('th', { scope: 'col', text: 'Meaning' }))),
    h('tbody', {}, params.map((p) => h('tr', {},
      h('th', { scope: 'row' }, h('code', { text: p.name }),
        p.required ? h('span', { class: 'required', text: ' required' }) : null),
      h('td', { text: p.in }),
      h('td', {}, typeNode(p.schema), limits(p.schema)),
      h('td', { class: 'desc', text: p.description ?? '' })))))];
}

function content(c) {
  return Object.entries(c ?? {}).map(([type, media]) =>
    h('p', {}, h('code', { text: type }), ': ', typeNode(media.schema)));
}

function requestBody(op) {
  if (!op.requestBody) return null;
  return [h('h3', { text: 'Body' }), content(op.requestBody.content)];
}

function responses(op) {
  return [h('h3', { text: 'Answers' }), h('table', {},
    h('tbody', {}, Object.entries(op.responses ?? {}).map(([status, r]) => h('tr', {},
      h('th', { scope: 'row', class: 'num', text: status }),
      h('td', {}, r.description ?? '', content(r.content)))))) ];
}

function authNote(op) {
  const schemes = (op.security ?? []).flatMap((s) => Object.keys(s));
  if (!schemes.length) return 'public';
  const names = { bearer: 'Authorization: Bearer', api_key: 'x-api-key', token: '?token=' };
  return `key: ${schemes.map((s) => names[s] ?? s).join(' or ')}`;
}

function operation(path, method, op) {
  const id = `op-${op.operationId ?? `${method}-${path}`}`;
  return h('details', { class: 'op', id, dataset: { search: `${method} ${path} ${op.summary ?? ''} ${(op.tags ?? []).join(' ')}`.toLowerCase() } },
    h('summary', {},
      h('span', { class: 'method', dataset: { method }, text: method }),
      h('span', { class: 'op-path', text: path }),
      h('span', { class: 'op-summary', text: op.summary ?? '' }),
      h('span', { class: 'auth', text: authNote(op) })),
    h('div', { class: 'op-body' },
      op.description ? h('p', { text: op.description }) : null,
      parameters(op), requestBody(op), responses(op)));
}

function render(doc) {
  byId('about').append(
    h('p', {}, h('strong', { text: `${doc.info.title} ${doc.info.version}` }), ` · OpenAPI ${doc.openapi}`),
    h('p', { text: doc.info.description ?? '' }),
    h('p', { class: 'desc', text: 'With AGENTD_API_KEY set, every operation not marked public needs the key.' }));

  const tags = (doc.tags ?? []).map((t) => t.name);
  const byTag = new Map(tags.map((t) => [t, []]));
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const tag = op.tags?.[0] ?? 'other';
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operation(path, method, op));
    }
  }
  const nav = byId('nav');
  const ops = byId('operations');
  for (const [tag, list] of byTag) {
    if (!list.length) continue;
    const info = (doc.tags ?? []).find((t) => t.name === tag);
    ops.append(h('section', { class: 'panel', id: `tag-${tag}`, 'aria-labelledby': `tag-${tag}-title` },
      h('h2', { id: `tag-${tag}-title`, text: tag }),
      info?.description ? h('p', { class: 'desc', text: info.description }) : null,
      list));
    nav.append(h('li', { class: 'nav-tag' }, h('a', { href: `#tag-${tag}`, text: `${tag} (${list.length})` })));
  }
  nav.append(h('li', { class: 'nav-tag' }, h('a', { href: '#schemas-title', text: 'Schemas' })));

  const schemas = byId('schemas');
  for (const [name, schema] of Object.entries(doc.components?.schemas ?? {}).sort(([a], [b]) => a.localeCompare(b))) {
    schemas.append(h('div', { class: 'schema-block', id: `schema-${name}`, tabindex: '-1' },
      h('h3', {}, h('code', { text: name })),
      schema.description ? h('p', { class: 'desc', text: schema.description }) : null,
      propertyTable(schema)));
  }

  byId('filter').addEventListener('input', (e) => {
    const q = e.target.value.trim().toLowerCase();
    for (const op of ops.querySelectorAll('.op')) op.hidden = q !== '' && !op.dataset.search.includes(q);
  });
  // A link to an operation opens it.
  const open = () => {
    const el = location.hash && document.getElementById(location.hash.slice(1));
    if (el instanceof HTMLDetailsElement) el.open = true;
  };
  window.addEventListener('hashchange', open);
  open();
}

async function main() {
  const status = byId('doc-status');
  try {
    const res = await fetch('/openapi.json');
    if (!res.ok) throw new Error(`/openapi.json answered ${res.status}`);
    const doc = await res.json();
    render(doc);
    const count = Object.values(doc.paths ?? {}).reduce((n, item) => n + METHODS.filter((m) => item[m]).length, 0);
    say(status, `${count} operations`, 'ok');
  } catch (e) {
    say(status, `Cannot show the document: ${e.message}`, 'error');
  }
}

main();
