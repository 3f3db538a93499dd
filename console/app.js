// The console's entry: asks for the API key when agentd wants one, then starts every panel.

import { ApiError, get, key, onUnauthorized, setKey } from './api.js';
import { byId, say } from './dom.js';
import { initChats, openChat } from './chats.js';
import { initDispatch, refreshDispatchSoon } from './dispatch.js';
import { openLog } from './logs.js';
import { initWorkers } from './workers.js';

let started = false;

/** True when agentd takes this tab's key (or needs none); a supervisor route always checks. */
async function keyWorks() {
  try {
    await get('/list');
    return true;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return false;
    throw e;
  }
}

function askForKey(message) {
  byId('main').hidden = true;
  byId('key-panel').hidden = false;
  say(byId('key-error'), message, message ? 'error' : '');
  const input = byId('key-input');
  input.value = '';
  input.focus();
}

function startPanels() {
  byId('key-panel').hidden = true;
  byId('main').hidden = false;
  byId('key-forget').hidden = !key();
  if (started) return;
  started = true;
  initWorkers({ openChat, openLog });
  initChats((type) => {
    if (type === 'message.created' || type.startsWith('request.') || type === 'message.streaming.complete') {
      refreshDispatchSoon();
    }
  });
  initDispatch();
}

async function boot() {
  const conn = byId('conn');
  try {
    if (await keyWorks()) startPanels();
    else askForKey(key() ? 'The saved key was refused; enter it again.' : '');
  } catch (e) {
    say(conn, e.message, 'error');
  }
}

byId('key-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const value = byId('key-input').value.trim();
  if (!value) {
    say(byId('key-error'), 'Enter the key.', 'error');
    return;
  }
  setKey(value);
  try {
    if (await keyWorks()) {
      say(byId('key-error'), '');
      startPanels();
    } else {
      setKey('');
      askForKey('That key was refused (401). Check AGENTD_API_KEY.');
    }
  } catch (e) {
    say(byId('key-error'), e.message, 'error');
  }
});

byId('key-forget').addEventListener('click', () => {
  setKey('');
  window.location.reload();
});

onUnauthorized(() => {
  // Before the panels start, the key form answers for itself.
  if (!started) return;
  say(byId('conn'), 'agentd refused a call: the key is missing or wrong. Forget it and enter it again.', 'error');
  byId('key-forget').hidden = false;
});

boot();
