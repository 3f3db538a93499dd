// Chats (GET /api/v1/chats) and the selected chat's messages, live from the event stream as they
// are written (message.created, then streamed chunks, then the final text), with a box to send
// a user message and the chat's pending interactive requests.

import { Feed, get, post } from './api.js';
import { byId, clock, h, say } from './dom.js';
import { renderRequests } from './requests.js';

let selected = null;
/** Message elements of the selected chat, by message id. */
const shown = new Map();
let typingTimer = null;
let onEvent = () => {};

/** Starts the chat list, the event stream and the send box; `events()` hears every event. */
export function initChats(events) {
  onEvent = events;
  byId('send-form').addEventListener('submit', send);
  byId('send-text').addEventListener('keydown', (e) => {
    // Enter sends, Shift+Enter starts a new line.
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      byId('send-form').requestSubmit();
    }
  });
  byId('chats-refresh').addEventListener('click', loadChats);
  const status = byId('events-status');
  const handlers = {};
  for (const type of [
    'chat.created', 'chat.updated', 'chat.archived', 'chat.unarchived', 'chat.read', 'chat.unread',
    'chat.typing', 'chat.user_typing', 'message.created', 'message.streaming.chunk',
    'message.streaming.complete', 'request.created', 'request.resolved', 'request.cancelled',
  ]) {
    handlers[type] = (env) => handle(type, env.payload || {});
  }
  new Feed('/api/v1/events/stream', handlers, {
    onOpen: (reopened) => {
      say(status, 'Live', 'ok');
      // Whatever was written while the stream was down is read back.
      if (reopened) {
        loadChats();
        if (selected) loadChat(selected);
      }
    },
    onDown: () => say(status, 'Event stream interrupted; reconnecting…', 'error'),
  });
  loadChats();
}

let chatsTimer = null;
/** Reads the chat list again soon (events come in bursts). */
function refreshChatsSoon() {
  clearTimeout(chatsTimer);
  chatsTimer = setTimeout(loadChats, 300);
}

let listed = 0;

async function loadChats() {
  const list = byId('chat-list');
  // Reads may overlap: only the latest one is shown.
  const turn = (listed += 1);
  let chats;
  try {
    chats = (await get('/api/v1/chats?limit=50')).data || [];
  } catch (e) {
    say(byId('events-status'), `Cannot list the chats: ${e.message}`, 'error');
    return;
  }
  if (turn !== listed) return;
  const items = chats.map((c) =>
    h(
      'li',
      {},
      h(
        'button',
        {
          type: 'button',
          class: 'chat-item',
          dataset: { chatId: c.id },
          'aria-current': c.id === selected ? 'true' : null,
          on: { click: () => openChat(c.id, true) },
        },
        h('span', { class: 'chat-name', text: c.title }),
        h('span', { class: 'chat-meta', text: (c.agent_ids || []).join(', ') }),
        c.pending_requests_count > 0 ? h('span', { class: 'badge', text: `${c.pending_requests_count} waiting` }) : null,
        c.last_message_preview ? h('span', { class: 'chat-preview', text: c.last_message_preview }) : null,
      ),
    ),
  );
  list.replaceChildren(...items);
  byId('chats-empty').hidden = items.length > 0;
}

/** Shows chat `id`; with `focus`, moves the keyboard to its message box. */
export async function openChat(id, focus = false) {
  selected = id;
  for (const b of byId('chat-list').querySelectorAll('.chat-item')) {
    if (b.dataset.chatId === id) b.setAttribute('aria-current', 'true');
    else b.removeAttribute('aria-current');
  }
  byId('chat-view').hidden = false;
  byId('send-text').disabled = false;
  byId('send-button').disabled = false;
  // A chat new to this page (such as a just started agent's) is listed at once.
  const known = byId('chat-list').querySelector(`[data-chat-id="${CSS.escape(id)}"]`);
  await Promise.all([loadChat(id), known ? null : loadChats()]);
  if (focus) byId('send-text').focus();
}

async function loadChat(id) {
  const title = byId('chat-title');
  try {
    const [chat, msgs] = await Promise.all([
      get(`/api/v1/chats/${encodeURIComponent(id)}`),
      get(`/api/v1/chats/${encodeURIComponent(id)}/messages?limit=100`),
    ]);
    if (selected !== id) return;
    title.textContent = chat.title;
    byId('chat-agents').textContent = `with ${(chat.agent_ids || []).join(', ')}`;
    byId('messages').replaceChildren();
    shown.clear();
    // Newest first from the API; oldest first on the page.
    for (const m of (msgs.data || []).slice().reverse()) show(m);
    await loadRequests();
  } catch (e) {
    say(byId('send-error'), `Cannot read the chat: ${e.message}`, 'error');
  }
}

async function loadRequests() {
  const id = selected;
  if (!id) return;
  try {
    const res = await get(`/api/v1/chats/${encodeURIComponent(id)}/requests`);
    if (selected !== id) return;
    renderRequests(byId('requests'), res.data || [], () => {
      loadRequests();
      refreshChatsSoon();
    });
  } catch (e) {
    say(byId('send-error'), `Cannot read the chat's requests: ${e.message}`, 'error');
  }
}

/** Adds or updates a message (a stored message, or one made from an event). */
function show(m) {
  let li = shown.get(m.id);
  const ol = byId('messages');
  if (!li) {
    li = h(
      'li',
      { class: 'message', dataset: { id: m.id, role: m.role } },
      h('div', { class: 'message-head' }, h('span', { class: 'sender', text: m.sender_id }), ' ', h('time', { datetime: m.created_at || '', text: clock(m.created_at) })),
      h('div', { class: 'message-text' }),
    );
    shown.set(m.id, li);
    const atBottom = ol.scrollTop + ol.clientHeight >= ol.scrollHeight - 8;
    ol.append(li);
    if (atBottom) ol.scrollTop = ol.scrollHeight;
  }
  li.dataset.state = m.stream_state;
  const text = m.content_final ?? m.content_partial ?? '';
  li.querySelector('.message-text').textContent = text;
  return li;
}

function scrollMessages() {
  const ol = byId('messages');
  ol.scrollTop = ol.scrollHeight;
}

function handle(type, p) {
  onEvent(type, p);
  if (type.startsWith('chat.') && type !== 'chat.typing' && type !== 'chat.user_typing') refreshChatsSoon();
  if (p.chatId !== selected) {
    if (type === 'message.created' || type.startsWith('request.')) refreshChatsSoon();
    return;
  }
  switch (type) {
    case 'message.created':
      show({
        id: p.messageId,
        role: p.role,
        sender_id: p.senderId,
        stream_state: p.streamState,
        content_final: p.contentFinal,
        created_at: p.createdAt,
      });
      scrollMessages();
      refreshChatsSoon();
      break;
    case 'message.streaming.chunk': {
      const li = shown.get(p.messageId);
      if (!li) break;
      li.querySelector('.message-text').append(p.deltaText || '');
      scrollMessages();
      break;
    }
    case 'message.streaming.complete': {
      const li = shown.get(p.messageId);
      if (!li) break;
      li.dataset.state = p.streamState;
      if (p.streamState === 'complete') li.querySelector('.message-text').textContent = p.finalText ?? '';
      typing('');
      refreshChatsSoon();
      break;
    }
    case 'chat.typing':
      typing(`${p.agentId} is typing…`);
      break;
    case 'request.created':
    case 'request.resolved':
    case 'request.cancelled':
      loadRequests();
      refreshChatsSoon();
      break;
    default:
      break;
  }
}

function typing(text) {
  const el = byId('chat-typing');
  el.textContent = text;
  clearTimeout(typingTimer);
  if (text) typingTimer = setTimeout(() => (el.textContent = ''), 6000);
}

async function send(ev) {
  ev.preventDefault();
  const box = byId('send-text');
  const err = byId('send-error');
  const content = box.value.trim();
  if (!selected) return;
  if (!content) {
    say(err, 'Write a message first.', 'error');
    return;
  }
  const button = byId('send-button');
  button.disabled = true;
  try {
    const m = await post(`/api/v1/chats/${encodeURIComponent(selected)}/messages`, {
      role: 'user',
      senderId: 'user:primary',
      content,
    });
    say(err, '');
    box.value = '';
    if (m && m.chat_id === selected) show(m);
    scrollMessages();
  } catch (e) {
    say(err, e.message, 'error');
  } finally {
    button.disabled = false;
    box.focus();
  }
}
