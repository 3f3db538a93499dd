// The dispatch queue (GET /ops/dispatch): counts and oldest age of its open states. Read again
// after events that move it, and every few seconds for the ages.

import { get } from './api.js';
import { byId, duration, h, say } from './dom.js';

const ROWS = [
  ['Inputs waiting for a batch', (d) => d.inputs.pending],
  ['Batches waiting for a worker', (d) => d.batches.pending],
  ['Batches being answered', (d) => d.batches.leased],
];

let timer = null;

export function initDispatch() {
  load();
  setInterval(() => {
    if (!document.hidden) load();
  }, 5000);
}

/** Reads the queue again soon (events come in bursts). */
export function refreshDispatchSoon() {
  clearTimeout(timer);
  timer = setTimeout(load, 250);
}

async function load() {
  const status = byId('dispatch-status');
  let d;
  try {
    d = (await get('/ops/dispatch')).data;
  } catch (e) {
    say(status, `Cannot read the queue: ${e.message}`, 'error');
    return;
  }
  say(status, `Mode ${d.mode}; read at ${new Date(d.at).toLocaleTimeString()}.`);
  byId('dispatch-rows').replaceChildren(
    ...ROWS.map(([label, pick]) => {
      const b = pick(d);
      const extra = b.delayed ? ` (${b.delayed} waiting to retry)` : '';
      return h(
        'tr',
        {},
        h('th', { scope: 'row', text: label }),
        h('td', { class: 'num', text: `${b.count}${extra}` }),
        h('td', { class: 'num', text: b.oldest_age_ms == null ? '—' : duration(b.oldest_age_ms) }),
      );
    }),
  );
}
