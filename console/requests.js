// Interactive requests of a chat (choice, text_input, form), each as a form that resolves it
// with the payload its type takes (POST /api/v1/requests/{id}/resolve).

import { post } from './api.js';
import { h, say } from './dom.js';

let uid = 0;
const nextId = (p) => `${p}-${(uid += 1)}`;

/**
 * Shows `requests` (pending ones, oldest first) in `container`; `done()` is called after one
 * is resolved or dismissed.
 */
export function renderRequests(container, requests, done) {
  // A form the user is filling in stays as it is when the list is read again.
  const keep = new Map([...container.children].map((el) => [el.dataset.requestId, el]));
  const forms = requests.map((r) => keep.get(r.id) || requestForm(r, done));
  container.replaceChildren(...forms);
}

function requestForm(r, done) {
  const alert = h('p', { class: 'error', role: 'alert' });
  const body = r.body ? h('p', { class: 'request-body', text: r.body }) : null;
  let controls;
  let payload;
  let submitLabel = 'Send answer';
  const cfg = r.config || {};

  if (r.type === 'choice') {
    const options = cfg.options || [];
    const max = cfg.maxSelections ?? 1;
    const min = cfg.minSelections ?? 0;
    if (max === 1) {
      // One pick: a button per option answers at once.
      controls = h(
        'div',
        { class: 'options', role: 'group', 'aria-label': r.title },
        options.map((o) =>
          h('button', {
            type: 'submit',
            name: 'option',
            value: o.id,
            class: o.variant ? `variant-${o.variant}` : '',
            text: o.label,
          }),
        ),
      );
      payload = (form, submitter) => ({ selectedOptionIds: [submitter.value] });
      submitLabel = null;
    } else {
      controls = h(
        'div',
        { class: 'options' },
        options.map((o) => {
          const id = nextId('opt');
          return h('div', { class: 'check' }, h('input', { type: 'checkbox', id, value: o.id }), h('label', { for: id, text: o.label }));
        }),
        h('p', { class: 'hint', text: `Pick ${min === max ? max : `${min} to ${max}`}.` }),
      );
      payload = (form) => {
        const ids = [...form.querySelectorAll('input[type=checkbox]:checked')].map((c) => c.value);
        if (ids.length < min || ids.length > max) throw new Error(`Pick ${min === max ? max : `between ${min} and ${max}`} options.`);
        return { selectedOptionIds: ids };
      };
    }
  } else if (r.type === 'text_input') {
    const id = nextId('text');
    const v = cfg.validation || {};
    controls = [
      h('label', { for: id, text: 'Your answer' }),
      h('input', {
        id,
        type: 'text',
        required: true,
        placeholder: cfg.placeholder || null,
        minlength: v.minLength ?? null,
        maxlength: v.maxLength ?? null,
      }),
    ];
    payload = (form) => ({ text: form.querySelector(`#${id}`).value });
  } else if (r.type === 'form') {
    const fields = (cfg.fields || []).map((f) => formField(f));
    controls = fields.map((f) => f.el);
    payload = () => {
      const values = {};
      for (const f of fields) {
        const v = f.value();
        if (v !== undefined) values[f.name] = v;
      }
      return { values };
    };
    submitLabel = cfg.submitLabel || 'Submit';
  } else {
    controls = h('p', { class: 'hint', text: `This console cannot answer a ${r.type} request.` });
    payload = null;
  }

  const form = h(
    'form',
    { class: 'request card', dataset: { requestId: r.id, type: r.type }, 'aria-label': `Request: ${r.title}` },
    h(
      'fieldset',
      {},
      h('legend', { text: r.title }),
      body,
      controls,
      h(
        'div',
        { class: 'actions' },
        submitLabel && payload ? h('button', { type: 'submit', text: submitLabel }) : null,
        h('button', { type: 'button', class: 'quiet', text: 'Dismiss', on: { click: () => cancel(r, alert, done) } }),
      ),
      alert,
    ),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!payload) return;
    let body_;
    try {
      body_ = payload(form, ev.submitter);
    } catch (e) {
      say(alert, e.message, 'error');
      return;
    }
    const buttons = form.querySelectorAll('button');
    buttons.forEach((b) => (b.disabled = true));
    try {
      await post(`/api/v1/requests/${encodeURIComponent(r.id)}/resolve`, body_);
      say(alert, '');
      form.remove();
      done();
    } catch (e) {
      say(alert, e.message, 'error');
      buttons.forEach((b) => (b.disabled = false));
    }
  });
  return form;
}

async function cancel(r, alert, done) {
  try {
    await post(`/api/v1/requests/${encodeURIComponent(r.id)}/cancel`);
    done();
  } catch (e) {
    say(alert, e.message, 'error');
  }
}

/** One field of a `form` request: its element, and how to read its value. */
function formField(f) {
  const id = nextId('field');
  const label = h('label', { for: id, text: `${f.label || f.name}${f.required ? ' (required)' : ''}` });
  const required = Boolean(f.required);
  const text = (el) => () => {
    const v = el.value;
    return v === '' && !required ? undefined : v;
  };
  switch (f.type) {
    case 'textarea': {
      const el = h('textarea', { id, rows: 3, required });
      return { name: f.name, el: h('div', { class: 'field' }, label, el), value: text(el) };
    }
    case 'date': {
      const el = h('input', { id, type: 'date', required });
      return { name: f.name, el: h('div', { class: 'field' }, label, el), value: text(el) };
    }
    case 'select': {
      const el = h(
        'select',
        { id, required },
        h('option', { value: '', text: required ? 'Choose…' : '(none)' }),
        (f.options || []).map((o) => h('option', { value: o, text: o })),
      );
      return { name: f.name, el: h('div', { class: 'field' }, label, el), value: text(el) };
    }
    case 'multiselect': {
      const boxes = (f.options || []).map((o) => {
        const oid = nextId('ms');
        return { value: o, el: h('div', { class: 'check' }, h('input', { type: 'checkbox', id: oid, value: o }), h('label', { for: oid, text: o })) };
      });
      const el = h('fieldset', { class: 'field' }, h('legend', { text: `${f.label || f.name}${required ? ' (required)' : ''}` }), boxes.map((b) => b.el));
      return {
        name: f.name,
        el,
        value: () => {
          const picked = boxes.filter((b) => b.el.querySelector('input').checked).map((b) => b.value);
          return picked.length === 0 && !required ? undefined : picked;
        },
      };
    }
    case 'checkbox': {
      const el = h('input', { id, type: 'checkbox' });
      return { name: f.name, el: h('div', { class: 'field check' }, el, label), value: () => el.checked };
    }
    default: {
      const el = h('input', { id, type: 'text', required });
      return { name: f.name, el: h('div', { class: 'field' }, label, el), value: text(el) };
    }
  }
}
