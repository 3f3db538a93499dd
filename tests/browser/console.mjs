// Drives the agentd console in Debian's headless Chromium, as a person would: (with a key: a
// wrong one first, then the right one), start the echo agent from the start form, send a
// message with the keyboard, watch the answer stream in, follow the worker's log, ping it,
// start the faq agent and answer its choice question, stop both workers and see them go, then
// check the page on a phone's width and with the keyboard.
//
// Run by tests/console_browser.rs against a real agentd. Environment:
//   AGENTD_URL   the server (required), e.g. http://127.0.0.1:41234
//   AGENTD_KEY   its API key, when it has one
//   CHROMIUM     the browser (default /usr/bin/chromium)
//   SCREENSHOT   where to save a screenshot of the console at work (optional)
//   ARTIFACTS    where to save a screenshot when a step fails (default: the working directory)
//   TAG          a word for channel names and file names (default "run")
// Prints one line per step; exits 1 at the first step that fails.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const url = process.env.AGENTD_URL;
const key = process.env.AGENTD_KEY || '';
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const shot = process.env.SCREENSHOT || '';
const artifacts = process.env.ARTIFACTS || '.';
const tag = process.env.TAG || 'run';
const STEP_TIMEOUT = 20000;

if (!url) {
  console.error('AGENTD_URL is not set');
  process.exit(2);
}

// Without the background-networking flags Chromium tries to reach Google's services, which this
// machine refuses, and waits on them.
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const profile = await mkdtemp(path.join(tmpdir(), 'agentd-console-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: ARGS,
  viewport: { width: 1400, height: 980 },
});
context.setDefaultTimeout(STEP_TIMEOUT);
const page = context.pages()[0] || (await context.newPage());
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(`uncaught: ${e.message}`));
page.on('console', (m) => {
  // A refused call (the key probe's 401) is logged by Chromium as a failed resource: expected.
  if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) pageErrors.push(m.text());
});

let current = '';
async function step(name, fn) {
  current = name;
  const t0 = Date.now();
  await fn();
  console.log(`ok - ${name} (${Date.now() - t0} ms)`);
}

function check(cond, message) {
  if (!cond) throw new Error(message);
}

const worker = (channel) => page.locator(`#worker-list li.worker[data-channel="${channel}"]`);
const echo = `console-echo-${tag}`;
const faq = `console-faq-${tag}`;

async function startFromForm(graph, channel, overrides) {
  await page.getByLabel('Graph').selectOption(graph);
  await page.getByLabel('Channel').fill(channel);
  await page.getByLabel('Timeout in seconds').fill('-1');
  await page.getByLabel('Property overrides (JSON)').fill(overrides);
  await page.getByRole('button', { name: 'Start', exact: true }).click();
  await page.locator('#start-result', { hasText: `Started ${graph} on ${channel}` }).waitFor();
  // The card comes over the live feed (the page is never reloaded).
  await worker(channel).and(page.locator('[data-state="running"]')).waitFor();
  // The chat of the new channel opens by itself.
  await page.locator('#send-text:enabled').waitFor();
}

async function send(text) {
  const box = page.getByLabel('Message', { exact: true });
  await box.fill(text);
  await box.press('Enter');
}

try {
  await step('the console loads', async () => {
    const res = await page.goto(`${url}/console/`);
    check(res && res.ok(), `GET /console/ answered ${res && res.status()}`);
    check((await page.title()) === 'agentd console', `title is ${await page.title()}`);
  });

  if (key) {
    await step('a wrong key is refused', async () => {
      await page.locator('#key-panel').waitFor();
      await page.getByRole('textbox', { name: 'API key' }).fill('not-the-key');
      await page.getByRole('button', { name: 'Use key' }).click();
      await page.locator('#key-error', { hasText: 'refused' }).waitFor();
      check(await page.locator('#main').isHidden(), 'the console opened with a wrong key');
    });
    await step('the right key opens the console', async () => {
      await page.getByRole('textbox', { name: 'API key' }).fill(key);
      await page.getByRole('textbox', { name: 'API key' }).press('Enter');
      await page.locator('#main').waitFor();
      const kept = await page.evaluate(() => sessionStorage.getItem('agentd.key'));
      check(kept === key, 'the key is not kept in sessionStorage');
    });
  } else {
    await step('no key is asked for', async () => {
      await page.locator('#main').waitFor();
      check(await page.locator('#key-panel').isHidden(), 'the key panel shows without a key');
    });
  }

  await step('graphs are listed', async () => {
    await page.locator('#start-graph option[value="echo"]').waitFor({ state: 'attached' });
    await page.locator('#start-graph option[value="faq"]').waitFor({ state: 'attached' });
    await page.locator('#workers-feed', { hasText: 'Live' }).waitFor();
    await page.locator('#events-status', { hasText: 'Live' }).waitFor();
  });

  await step('bad overrides are refused before any call', async () => {
    await page.getByLabel('Property overrides (JSON)').fill('{not json');
    await page.getByLabel('Channel').fill(echo);
    await page.getByRole('button', { name: 'Start', exact: true }).click();
    await page.locator('#start-result', { hasText: 'not valid JSON' }).waitFor();
  });

  await step('an unknown node is refused by agentd, its message shown', async () => {
    await page.getByLabel('Graph').selectOption('echo');
    await page.getByLabel('Property overrides (JSON)').fill('{"nope": {}}');
    await page.getByRole('button', { name: 'Start', exact: true }).click();
    await page.locator('#start-result', { hasText: 'process property json failed' }).waitFor();
    await page.locator('#start-result', { hasText: 'nope' }).waitFor();
  });

  await step('the echo agent starts from the form', async () => {
    await startFromForm('echo', echo, '{"echo": {"chunk_delay_ms": 80}}');
  });

  const said = 'Hello from the browser, streamed back word by word';
  await step('a message sent with Enter comes back streamed', async () => {
    // Every text an agent message shows while it streams, recorded as the page changes.
    await page.evaluate(() => {
      window.partials = [];
      new MutationObserver(() => {
        for (const li of document.querySelectorAll('#messages li[data-role="agent"][data-state="streaming"]')) {
          const t = li.querySelector('.message-text').textContent;
          if (window.partials[window.partials.length - 1] !== t) window.partials.push(t);
        }
      }).observe(document.getElementById('messages'), { subtree: true, childList: true, characterData: true, attributes: true });
    });
    await send(said);
    await page.locator('#messages li[data-role="user"]', { hasText: said }).waitFor();
    const answer = page.locator('#messages li[data-role="agent"][data-state="complete"]');
    await answer.waitFor();
    const text = await answer.locator('.message-text').textContent();
    check(text === said, `the answer reads ${JSON.stringify(text)}`);
    const partials = (await page.evaluate(() => window.partials)).filter((p) => p !== '');
    check(partials.length >= 3, `the answer did not stream in (seen while streaming: ${JSON.stringify(partials)})`);
    for (const p of partials) check(said.startsWith(p), `a partial answer ${JSON.stringify(p)} is not a prefix`);
  });

  await step("the worker's log is followed live", async () => {
    await page.getByRole('button', { name: `Log ${echo}` }).click();
    await page.locator('#logs-status', { hasText: 'Following' }).waitFor();
    await page.locator('#log-lines .note', { hasText: 'ready' }).waitFor();
  });

  await step('ping', async () => {
    await page.getByRole('button', { name: `Ping ${echo}` }).click();
    await page.locator('#worker-action', { hasText: `Pinged ${echo}` }).waitFor();
  });

  await step('the dispatch queue is shown', async () => {
    check((await page.locator('#dispatch-rows tr').count()) === 3, 'the queue table does not have its 3 rows');
    await page.locator('#dispatch-status', { hasText: 'Mode' }).waitFor();
  });

  await step('the faq agent asks a choice question, answered in the page', async () => {
    await startFromForm('faq', faq, '');
    await page.locator('#chat-list .chat-item[aria-current="true"]', { hasText: faq }).waitFor();
    await send('help');
    await page.locator('#messages li[data-role="agent"]', { hasText: 'Happy to help' }).waitFor();
    const form = page.getByRole('form', { name: 'Request: What do you need help with?' });
    await form.waitFor();
    if (shot) await page.screenshot({ path: shot });
    await form.getByRole('button', { name: 'Pricing' }).click();
    await form.waitFor({ state: 'detached' });
    await page.locator('#messages li[data-role="agent"][data-state="complete"]', { hasText: 'free and open source' }).waitFor();
  });

  await step('the log follows another worker', async () => {
    await page.getByRole('button', { name: `Log ${faq}` }).click();
    await page.locator('#logs-channel', { hasText: faq }).waitFor();
    await page.locator('#log-lines .note', { hasText: 'ready' }).waitFor();
  });

  await step('stopped workers leave the page', async () => {
    await page.getByRole('button', { name: `Stop ${echo}` }).click();
    await page.locator('#worker-action', { hasText: `Stopped ${echo}` }).waitFor();
    await worker(echo).waitFor({ state: 'detached' });
    await page.getByRole('button', { name: `Stop ${faq}` }).click();
    await worker(faq).waitFor({ state: 'detached' });
    await page.locator('#logs-status', { hasText: 'is gone' }).waitFor();
    await page.locator('#workers-empty').waitFor();
  });

  await step('readable on a phone: nothing wider than the screen', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    const [scroll, inner] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    check(scroll <= inner, `the page is ${scroll}px wide on a ${inner}px screen`);
  });

  await step('keyboard: the skip link comes first, and focus is visible', async () => {
    // A fresh load (the key is kept for the session), so Tab starts from the top.
    await page.reload();
    await page.locator('#main').waitFor();
    await page.keyboard.press('Tab');
    const first = await page.evaluate(() => document.activeElement?.className);
    check(first === 'skip', `the first Tab lands on ${first}`);
    await page.keyboard.press('Enter');
    await page.keyboard.press('Tab');
    const [name, outline] = await page.evaluate(() => {
      const el = document.activeElement;
      return [el?.id || el?.textContent, el ? getComputedStyle(el).outlineStyle : 'none'];
    });
    check(outline !== 'none', `the focused ${name} shows no outline`);
  });

  await step('no script errors', async () => {
    check(pageErrors.length === 0, pageErrors.join('\n'));
  });
} catch (e) {
  console.log(`not ok - ${current}: ${e.message}`);
  try {
    const where = path.join(artifacts, `console-failure-${tag}.png`);
    await page.screenshot({ path: where, fullPage: true });
    console.log(`screenshot of the failure: ${where}`);
  } catch {
    // The screenshot is a help, not the verdict.
  }
  if (pageErrors.length) console.log(`page errors:\n${pageErrors.join('\n')}`);
  process.exitCode = 1;
} finally {
  await context.close();
  await rm(profile, { recursive: true, force: true });
}
