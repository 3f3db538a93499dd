// Graphs and their start form (POST /start), and the live worker list (GET
// /ops/workers/stream) with ping and stop buttons.

import { ApiError, Feed, get, post } from './api.js';
import { byId, bytes, duration, h, say } from './dom.js';

/** Workers by channel, as the feed last described them. */
const workers = new Map();
let hooks = { openChat: () => {}, openLog: () => {} };

/** Starts the graphs, the start form and the worker feed; `given` opens chats and logs. */
export function initWorkers(given) {
  hooks = given;
  loadGraphs();
  byId('start-form').addEventListener('submit', start);
  byId('start-graph').addEventListener('change', describeGraph);
  const status = byId('workers-feed');
  new Feed(
    '/ops/workers/stream',
    {
      snapshot: (d) => {
        workers.clear();
        for (const w of d.workers || []) workers.set(w.channel_name, w);
        render();
      },
      'worker.started': upsert,
      'worker.changed': upsert,
      'worker.restarted': upsert,
      'worker.gone': (w) => {
        workers.delete(w.channel_name);
        render();
      },
    },
    {
      onOpen: () => say(status, 'Live', 'ok'),
      onDown: () => say(status, 'Feed interrupted; reconnecting…', 'error'),
    },
  );
  // Times move on their own; memory and CPU come from /list (they change without an event).
  setInterval(tick, 1000);
  setInterval(refreshUsage, 10000);
}

/** True when `channel` has a worker now. */
export function hasWorker(channel) {
  return workers.has(channel);
}

let graphs = [];

async function loadGraphs() {
  const select = byId('start-graph');
  const out = byId('start-result');
  try {
    const res = await get('/graphs');
    graphs = res.data || [];
  } catch (e) {
    say(out, `Cannot list the graphs: ${e.message}`, 'error');
    return;
  }
  select.replaceChildren(
    ...graphs.map((g) => h('option', { value: g.name, text: g.display_name ? `${g.display_name} (${g.name})` : g.name })),
  );
  describeGraph();
}

function describeGraph() {
  const g = graphs.find((x) => x.name === byId('start-graph').value);
  byId('graph-desc').textContent = g && g.description ? g.description : '';
}

/** The /start body from the form, or a message saying what is wrong with it. */
function startBody() {
  const channel = byId('start-channel').value.trim();
  const graph = byId('start-graph').value;
  if (!graph) return { error: 'Pick a graph.' };
  if (!channel) return { error: 'Give the channel a name.' };
  const body = { request_id: `console-${Date.now().toString(36)}`, channel_name: channel, graph_name: graph };
  const timeout = byId('start-timeout').value.trim();
  if (timeout !== '') {
    const t = Number(timeout);
    if (!Number.isInteger(t) || t < -1) return { error: 'Timeout: a whole number of seconds, -1 for never, or empty.' };
    body.timeout = t;
  }
  const props = byId('start-props').value.trim();
  if (props !== '') {
    let parsed;
    try {
      parsed = JSON.parse(props);
    } catch (e) {
      return { error: `Property overrides are not valid JSON: ${e.message}` };
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
      return { error: 'Property overrides: a JSON object of node names, e.g. {"echo": {"prefix": "> "}}.' };
    }
    body.properties = parsed;
  }
  return { body };
}

async function start(ev) {
  ev.preventDefault();
  const out = byId('start-result');
  const button = byId('start-button');
  const { body, error } = startBody();
  if (error) {
    out.replaceChildren();
    say(out, error, 'error');
    return;
  }
  button.disabled = true;
  say(out, `Starting ${body.graph_name} on ${body.channel_name}…`);
  try {
    const res = await post('/start', body);
    const d = res.data || {};
    say(out, `Started ${d.graph_name} on ${d.channel_name} (pid ${d.pid}).`, 'ok');
    if (d.chat_id) hooks.openChat(d.chat_id);
  } catch (e) {
    say(out, e.message, 'error');
    const output = e instanceof ApiError && e.body && e.body.data && e.body.data.output;
    if (Array.isArray(output) && output.length) {
      out.append(h('pre', { class: 'output', text: output.join('\n') }));
    }
  } finally {
    button.disabled = false;
  }
}

function upsert(w) {
  const old = workers.get(w.channel_name);
  // Usage figures come from /list; a change event without them keeps the last ones.
  if (old) {
    for (const k of ['memory_bytes', 'cpu_seconds']) if (!(k in w) && k in old) w[k] = old[k];
  }
  workers.set(w.channel_name, w);
  render();
}

async function refreshUsage() {
  if (document.hidden || workers.size === 0) return;
  let list;
  try {
    list = (await get('/list')).data || [];
  } catch {
    return;
  }
  for (const e of list) {
    const w = workers.get(e.channel_name);
    if (!w) continue;
    for (const k of ['memory_bytes', 'cpu_seconds']) if (k in e) w[k] = e[k];
  }
  render();
}

function since(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? '' : duration(Date.now() - t);
}

/** The card of one worker, made once per channel and updated in place (focus stays put). */
function card(w) {
  const ch = w.channel_name;
  const field = (name, label) => [h('dt', { text: label }), h('dd', { dataset: { field: name } })];
  const button = (action, label, fn) =>
    h('button', { type: 'button', dataset: { action }, 'aria-label': `${label} ${ch}`, on: { click: fn } }, label);
  return h(
    'li',
    { class: 'card worker', dataset: { channel: ch } },
    h('h3', {}, h('span', { class: 'channel', text: ch }), ' ', h('span', { class: 'badge', dataset: { field: 'state' } })),
    h(
      'dl',
      {},
      field('graph', 'Graph'),
      field('pid', 'PID'),
      field('uptime', 'Up for'),
      field('ping', 'Last ping'),
      field('restarts', 'Restarts'),
      field('timeout', 'Timeout'),
      field('memory', 'Memory'),
      field('cpu', 'CPU'),
    ),
    h(
      'div',
      { class: 'actions' },
      button('ping', 'Ping', () => ping(ch)),
      button('stop', 'Stop', (e) => stop(ch, e.currentTarget)),
      button('log', 'Log', () => hooks.openLog(ch)),
      button('chat', 'Chat', () => {
        const cur = workers.get(ch);
        if (cur && cur.chat_id) hooks.openChat(cur.chat_id, true);
      }),
    ),
  );
}

function set(li, field, text) {
  const el = li.querySelector(`[data-field="${field}"]`);
  if (el && el.textContent !== text) el.textContent = text;
  // A figure agentd does not report is left out rather than shown empty.
  if (el && el.tagName === 'DD') {
    el.hidden = text === '';
    el.previousElementSibling.hidden = text === '';
  }
}

function fill(li, w) {
  li.dataset.state = w.state;
  set(li, 'state', w.state);
  set(li, 'graph', w.graph_name);
  set(li, 'pid', w.pid == null ? '—' : String(w.pid));
  set(li, 'restarts', String(w.restarts));
  set(li, 'timeout', w.timeout === -1 ? 'never' : `${w.timeout} s`);
  set(li, 'memory', Number.isFinite(w.memory_bytes) ? bytes(w.memory_bytes) : '');
  set(li, 'cpu', Number.isFinite(w.cpu_seconds) ? `${w.cpu_seconds.toFixed(2)} s` : '');
  li.querySelector('[data-action="chat"]').hidden = !w.chat_id;
  li.querySelector('[data-action="ping"]').disabled = w.state === 'stopping';
  setTimes(li, w);
}

function setTimes(li, w) {
  set(li, 'uptime', since(w.created_at));
  set(li, 'ping', `${since(w.last_ping_at)} ago`);
}

function render() {
  const list = byId('worker-list');
  const seen = new Set();
  for (const w of [...workers.values()].sort((a, b) => a.channel_name.localeCompare(b.channel_name))) {
    seen.add(w.channel_name);
    let li = [...list.children].find((el) => el.dataset.channel === w.channel_name);
    if (!li) {
      li = card(w);
      list.append(li);
    }
    fill(li, w);
  }
  for (const li of [...list.children]) {
    if (seen.has(li.dataset.channel)) continue;
    // Focus inside a card that goes would be lost to <body>: keep it in the section.
    if (li.contains(document.activeElement)) byId('workers-title').focus();
    li.remove();
  }
  byId('workers-count').textContent = `(${workers.size})`;
  byId('workers-empty').hidden = workers.size > 0;
}

function tick() {
  for (const li of byId('worker-list').children) {
    const w = workers.get(li.dataset.channel);
    if (w) setTimes(li, w);
  }
}

async function ping(channel) {
  const out = byId('worker-action');
  try {
    const res = await post('/ping', { channel_name: channel });
    const t = res.data && res.data.timeout;
    say(out, `Pinged ${channel}${t === -1 ? ' (it never times out)' : ` (stops after ${t} s without a ping)`}.`, 'ok');
  } catch (e) {
    say(out, `Ping ${channel}: ${e.message}`, 'error');
  }
}

async function stop(channel, button) {
  const out = byId('worker-action');
  button.disabled = true;
  say(out, `Stopping ${channel}…`);
  try {
    const res = await post('/stop', { channel_name: channel });
    const d = res.data || {};
    say(out, `Stopped ${channel}: ${d.how}${d.exit_code != null ? ` with code ${d.exit_code}` : ''} in ${d.took_ms} ms.`, 'ok');
  } catch (e) {
    say(out, `Stop ${channel}: ${e.message}`, 'error');
    button.disabled = false;
  }
}
