// One worker's log, live: its recent lines, then each new line as the worker writes it
// (GET /ops/workers/{channel}/logs?follow).

import { Feed } from './api.js';
import { byId, say } from './dom.js';
import { hasWorker } from './workers.js';

/** Lines kept on the page; older ones are dropped from the top. */
const MAX_LINES = 1000;

let feed = null;

/** Follows the log of `channel` (in place of the one followed before). */
export function openLog(channel) {
  if (feed) feed.close();
  const pre = byId('log-lines');
  const status = byId('logs-status');
  byId('logs-channel').textContent = `of ${channel}`;
  pre.replaceChildren();
  let ended = false;
  const path = `/ops/workers/${encodeURIComponent(channel)}/logs?follow&lines=200`;
  feed = new Feed(
    path,
    {
      tail: (d) => {
        pre.replaceChildren();
        add(pre, d.lines);
      },
      lines: (d) => add(pre, d.lines),
      lagged: (d) => add(pre, [`[console] ${d.missed_writes} writes were skipped (this page fell behind)`]),
      end: () => {
        ended = true;
        say(status, `The worker of ${channel} is gone; its log stops here.`);
      },
    },
    {
      onOpen: () => say(status, 'Following', 'ok'),
      onDown: () => {
        if (!ended) say(status, 'Interrupted; reconnecting…', 'error');
      },
      // Once the worker is gone there is nothing to follow.
      retry: () => !ended && hasWorker(channel),
    },
  );
  byId('logs').scrollIntoView({ block: 'nearest' });
}

function add(pre, lines) {
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
  for (const line of lines || []) {
    const div = document.createElement('div');
    div.className = line.startsWith('--- agentd: ') ? 'line note' : 'line';
    div.textContent = line;
    pre.append(div);
  }
  while (pre.childElementCount > MAX_LINES) pre.firstElementChild.remove();
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}
