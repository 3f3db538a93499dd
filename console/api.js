// Calls to agentd: the API key (asked once, kept in this tab's sessionStorage), JSON requests
// whose failures read the envelope of whichever API answered, and event streams that come back
// after a drop.

const KEY = 'agentd.key';

/** The key this tab uses ('' for none). */
export function key() {
  return sessionStorage.getItem(KEY) || '';
}

export function setKey(k) {
  if (k) sessionStorage.setItem(KEY, k);
  else sessionStorage.removeItem(KEY);
}

/** A failed call: the HTTP status (0 when agentd could not be reached) and the parsed body. */
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

let unauthorized = () => {};

/** What to do when agentd answers 401 (the key is missing, wrong, or was changed). */
export function onUnauthorized(fn) {
  unauthorized = fn;
}

/**
 * The message of an error answer, whichever family it is in: the supervisor's
 * `{code, msg, data: {detail}}`, the chat API's `{error: {code, message, details}}`, or the front
 * doors' `{success: false, error: {...}}`.
 */
function describe(status, body, text) {
  if (body && typeof body === 'object') {
    if (body.error && typeof body.error === 'object') {
      const e = body.error;
      let m = e.message || e.code || `HTTP ${status}`;
      const fields = e.details && e.details.fieldErrors;
      if (fields && typeof fields === 'object') {
        const parts = Object.entries(fields).map(([f, errs]) => `${f}: ${[].concat(errs).join(', ')}`);
        if (parts.length) m += ` (${parts.join('; ')})`;
      } else if (e.details && typeof e.details.field === 'string') {
        m += ` (${e.details.field})`;
      }
      return m;
    }
    if ('msg' in body && 'code' in body) {
      const detail = body.data && typeof body.data === 'object' ? body.data.detail : null;
      return detail ? `${body.msg}: ${detail}` : body.msg;
    }
  }
  return text ? `HTTP ${status}: ${text.slice(0, 200)}` : `HTTP ${status}`;
}

/** Calls agentd; the parsed JSON answer (null when empty), or throws an ApiError. */
export async function call(method, path, body) {
  const headers = { accept: 'application/json' };
  const k = key();
  if (k) headers.authorization = `Bearer ${k}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `agentd cannot be reached (${e.message})`, null);
  }
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!res.ok) {
    if (res.status === 401) unauthorized();
    throw new ApiError(res.status, describe(res.status, json, text), json);
  }
  return json;
}

export const get = (path) => call('GET', path);
export const post = (path, body = {}) => call('POST', path, body);

/** `path` with the key as `?token=`: EventSource cannot send headers. */
function withToken(path) {
  const k = key();
  if (!k) return path;
  return `${path}${path.includes('?') ? '&' : '?'}token=${encodeURIComponent(k)}`;
}

/**
 * An event stream that reopens itself after a drop (with a growing pause, up to 10 s). It is
 * reopened fresh rather than by EventSource's own retry: that retry sends the id of the last
 * event, and agentd refuses ids of ephemeral events (typing, chunks). `onOpen(reopened)` runs
 * each time it opens, so the caller can read again what it may have missed.
 */
export class Feed {
  constructor(path, handlers, { onOpen = () => {}, onDown = () => {}, retry = () => true } = {}) {
    this.path = path;
    this.handlers = handlers;
    this.onOpen = onOpen;
    this.onDown = onDown;
    this.retry = retry;
    this.es = null;
    this.timer = null;
    this.pause = 500;
    this.opened = false;
    this.closed = false;
    this.open();
  }

  open() {
    if (this.closed) return;
    const es = new EventSource(withToken(this.path));
    this.es = es;
    es.onopen = () => {
      this.pause = 500;
      const reopened = this.opened;
      this.opened = true;
      this.onOpen(reopened);
    };
    es.onerror = () => {
      es.close();
      if (this.closed) return;
      this.onDown();
      if (!this.retry()) {
        this.close();
        return;
      }
      this.timer = setTimeout(() => this.open(), this.pause);
      this.pause = Math.min(this.pause * 2, 10000);
    };
    for (const [name, fn] of Object.entries(this.handlers)) {
      es.addEventListener(name, (e) => {
        let data = null;
        try {
          data = JSON.parse(e.data);
        } catch {
          return;
        }
        fn(data);
      });
    }
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.es) this.es.close();
  }
}
