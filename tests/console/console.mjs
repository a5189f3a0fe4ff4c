// Drives the web console in headless Chromium for tests/console.rs (which starts the server and
// the simulated fleet, and sets the environment below). Each step asserts on what the page
// shows; the first failure ends the script with exit code 1, a message and a screenshot.
// Prints `fleet: start` once it has seen the fleet before convergence (the test then lets the
// simulated devices run), `policy: break` and `policy: repair` (the test adds and removes an
// invalid policy file).
//
// Environment: POMONA_CONSOLE_URL (https://…/ui), POMONA_ADMIN_TOKEN, POMONA_CHROMIUM,
// POMONA_NODE_MODULES (holding playwright-core), POMONA_SCREENSHOTS (a directory),
// POMONA_DEVICE_COUNT, POMONA_DEVICE_SERIAL and POMONA_DEVICE_UDID (the device to search for,
// open and lock), POMONA_LOST_UDID and POMONA_LOST_LOCATION (`latitude,longitude`: the device
// to put in Lost Mode and locate, and where it is).

import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (tests/console.rs sets it)`);
  return value;
};

const require = createRequire(path.join(env('POMONA_NODE_MODULES'), 'index.js'));
const { chromium } = require('playwright-core');

const url = env('POMONA_CONSOLE_URL');
const origin = new URL(url).origin;
const adminToken = env('POMONA_ADMIN_TOKEN');
const shots = env('POMONA_SCREENSHOTS');
const deviceCount = Number(env('POMONA_DEVICE_COUNT'));
const serial = env('POMONA_DEVICE_SERIAL');
const udid = env('POMONA_DEVICE_UDID');
const lostUdid = env('POMONA_LOST_UDID');
const [lostLatitude, lostLongitude] = env('POMONA_LOST_LOCATION').split(',').map(Number);

/** Waits of the page: generous, the machine may be busy building. */
const WAIT = 60_000;

const problems = [];
/** Errors the current step expects (the refused sign-in's 401), by pattern. */
let expected = [];
const started = Date.now();

function step(name) {
  console.log(`step (${((Date.now() - started) / 1000).toFixed(1)} s): ${name}`);
}

function unexpected(kind, text) {
  if (expected.some((pattern) => pattern.test(text))) return;
  problems.push(`${kind}: ${text}`);
}

const browser = await chromium.launch({
  executablePath: env('POMONA_CHROMIUM'),
  // Chromium's sandbox cannot start as root (CI containers).
  args: process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : [],
});
const context = await browser.newContext({
  ignoreHTTPSErrors: true, // the test server's certificate is self-signed
  viewport: { width: 1280, height: 900 },
});
const page = await context.newPage();
page.setDefaultTimeout(WAIT);
page.on('console', (m) => {
  if (m.type() === 'error' || m.type() === 'warning') unexpected(`console ${m.type()}`, m.text());
});
page.on('pageerror', (e) => unexpected('page error', String(e)));
page.on('requestfailed', (r) => unexpected('request failed', `${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
page.on('response', (r) => {
  if (r.status() >= 400) unexpected('response', `${r.status()} ${r.request().method()} ${r.url()}`);
});
const posted = [];
const apiRequests = [];
page.on('request', (r) => {
  if (r.method() !== 'GET') posted.push(`${r.method()} ${r.url().slice(origin.length)} ${r.postData() || ''}`);
  if (r.url().startsWith(`${origin}/api/v1/`)) {
    apiRequests.push({ method: r.method(), url: new URL(r.url()), body: r.postData(), headers: r.headers() });
  }
});

/** Fails unless every admin API request the page made is an operation of the OpenAPI
 * document: its method and path, its query parameters, its JSON body's fields. */
async function checkAgainstOpenApi() {
  const response = await context.request.get(`${origin}/api/v1/openapi.json`);
  assert.equal(response.status(), 200);
  const openapi = await response.json();
  const resolve = (schema) => (schema.$ref
    ? openapi.components.schemas[schema.$ref.replace('#/components/schemas/', '')] : schema);
  const operations = Object.entries(openapi.paths).flatMap(([template, item]) =>
    Object.entries(item).map(([method, operation]) => ({
      method: method.toUpperCase(),
      template,
      pattern: new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`),
      operation,
    })));
  const seen = new Set();
  for (const request of apiRequests) {
    const path = request.url.pathname.slice('/api/v1'.length);
    const match = operations.find((o) => o.method === request.method && o.pattern.test(path));
    assert.ok(match, `${request.method} ${path} is not an operation of the OpenAPI document`);
    seen.add(`${match.method} ${match.template}`);
    assert.match(request.headers.authorization || '', /^Bearer \S+$/, `${request.method} ${path} has a bearer token`);
    const parameters = (match.operation.parameters || []).filter((p) => p.in === 'query').map((p) => p.name);
    for (const name of request.url.searchParams.keys()) {
      assert.ok(parameters.includes(name), `${request.method} ${path}: query parameter ${name} is not documented`);
    }
    if (request.body) {
      const schema = resolve(match.operation.requestBody.content['application/json'].schema);
      for (const field of Object.keys(JSON.parse(request.body))) {
        assert.ok(field in schema.properties, `${request.method} ${path}: body field ${field} is not documented`);
      }
    }
  }
  return [...seen].sort();
}

async function shot(name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

/** The text of each row of the first table under `selector`, cells joined by `|`. */
async function rows(selector) {
  return page.$$eval(`${selector} table tbody tr`, (trs) =>
    trs.map((tr) => [...tr.children].map((c) => c.textContent.trim()).join('|')));
}

/** Waits until `check` holds for the rows of the table under `selector`; they are returned. */
async function waitForRows(selector, check, what) {
  const deadline = Date.now() + WAIT;
  let last = [];
  while (Date.now() < deadline) {
    last = await rows(selector);
    if (check(last)) return last;
    await page.waitForTimeout(250);
  }
  throw new Error(`${what}: not shown in ${WAIT / 1000} s; the rows were:\n${last.join('\n')}`);
}

/** The element that has focus: its id, else its tag and text. */
async function focused() {
  return page.evaluate(() => {
    const e = document.activeElement;
    return e ? (e.id || `${e.tagName.toLowerCase()}:${e.textContent.trim().slice(0, 30)}`) : '';
  });
}

/** Presses Tab until the element with `id` has focus (at most `limit` times); the path taken. */
async function tabTo(id, limit = 40) {
  const path = [];
  for (let i = 0; i < limit; i += 1) {
    await page.keyboard.press('Tab');
    const now = await focused();
    path.push(now);
    if (now === id) {
      const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
      assert.notEqual(outline, 'none', `#${id} shows no focus outline`);
      return path;
    }
  }
  throw new Error(`Tab never reached #${id}; focus went: ${path.join(' → ')}`);
}

try {
  step('the console page and its headers');
  const response = await page.goto(url);
  assert.equal(response.status(), 200);
  const csp = response.headers()['content-security-policy'] || '';
  assert.match(csp, /script-src 'self'/, 'a Content-Security-Policy limits scripts to the server');
  assert.doesNotMatch(csp, /unsafe-inline/);
  assert.equal(response.headers()['x-content-type-options'], 'nosniff');
  await page.waitForSelector('#view-sign-in:not([hidden])');
  assert.equal(await page.title(), 'Sign in · Pomona');
  assert.equal(await focused(), 'token', 'the token field has focus');
  const label = await page.$eval('label[for=token]', (l) => l.textContent);
  assert.equal(label, 'Admin token');

  step('a wrong token is refused with a clear message');
  expected = [/status of 401/, /^401 GET .*\/api\/v1\/status$/];
  await page.fill('#token', 'not-the-admin-token');
  await page.click('#sign-in-button');
  await page.waitForSelector('#sign-in-error:has-text("Sign-in refused")');
  const refusal = await page.textContent('#sign-in-error');
  assert.match(refusal, /not valid for this server/, refusal);
  assert.doesNotMatch(refusal, /not-the-admin-token/, 'the message does not repeat the token');
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'nothing kept after a refusal');
  assert.ok(await page.isHidden('#nav'), 'no navigation before sign-in');
  await shot('01-sign-in-refused');
  await page.waitForTimeout(200); // the refused request's console message arrives late
  expected = [];

  step('the right token signs in (Enter in the field)');
  await page.fill('#token', adminToken);
  await page.press('#token', 'Enter');
  await page.waitForSelector('#view-overview:not([hidden])');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('pomona.admin-token')), adminToken);
  assert.equal(await page.inputValue('#token'), '', 'the token leaves the form');
  assert.equal(await page.textContent('#announce'), 'Signed in.');

  step('the overview before the devices have run: targeted, nothing verified yet');
  // Name, kind, targeted, verified, pending, failed, removing, rollout.
  await waitForRows('#profiles', (r) =>
    r.includes(`office-wifi|Profile|${deviceCount}|0|${deviceCount}|0|0|0 of ${deviceCount} verified`)
    && r.includes('phone-baseline|Restrictions|3|0|3|0|0|0 of 3 verified'),
  'every profile targeted and pending, none verified');
  const policy = await page.textContent('#policy');
  assert.match(policy, /Revision/);
  assert.match(policy, /Sourcedir /, `the policy's source: ${policy}`);
  const groups = await rows('#groups');
  assert.deepEqual(groups, ['everyone|5', 'phones|3']);
  assert.equal(await page.$$eval('#profiles progress', (p) => p.length), 2, 'a bar per profile');
  await shot('02-overview-pending');
  console.log('fleet: start');

  step('the overview follows the fleet converging (polling)');
  await waitForRows('#profiles', (r) =>
    r.includes(`office-wifi|Profile|${deviceCount}|${deviceCount}|0|0|0|${deviceCount} of ${deviceCount} verified`)
    && r.includes('phone-baseline|Restrictions|3|3|0|0|0|3 of 3 verified'),
  'every profile verified');
  await waitForRows('#actions', (r) => r.some((row) => row.startsWith('restart-ipad|') && row.endsWith('|1 of 1 finished')),
    'the declared restart finished');
  const bar = await page.$eval('#profiles progress', (p) => [p.value, p.max, p.getAttribute('aria-label')]);
  assert.deepEqual(bar, [deviceCount, deviceCount, `${deviceCount} of ${deviceCount} verified`]);
  await shot('03-overview-converged');

  step('a refused policy change shows every problem; the revision in force stays');
  const revision = await page.textContent('#policy dd');
  console.log('policy: break');
  await page.waitForSelector('#refused-change');
  const refusedProblems = await page.$$eval('#refused-change li', (li) => li.map((l) => l.textContent));
  assert.equal(refusedProblems.length, 2, `both misspelt fields: ${refusedProblems.join('\n')}`);
  assert.ok(refusedProblems[0].includes('groupz') && refusedProblems[1].includes('payloadz'), refusedProblems.join('\n'));
  assert.equal(await page.textContent('#policy dd'), revision, 'the revision in force is unchanged');
  await shot('03b-policy-refused');
  console.log('policy: repair');
  await page.waitForSelector('#refused-change', { state: 'detached' });

  step('a reload keeps the session (sessionStorage of the tab); keyboard from the top of the page');
  await page.reload();
  await page.waitForSelector('#view-overview:not([hidden])');
  const toNav = await tabTo('nav-devices');
  assert.deepEqual(toNav.slice(0, 3), ['a:Skip to content', 'nav-overview', 'nav-devices'], toNav.join(' → '));
  await tabTo('sign-out', 3);
  await page.focus('a.skip');
  await page.keyboard.press('Enter');
  assert.equal(await focused(), 'main', 'the skip link moves focus to the content');
  assert.equal(await page.evaluate(() => location.hash), '#/overview', 'and keeps the view');
  await page.focus('#nav-devices');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#view-devices:not([hidden])');
  assert.equal(await page.getAttribute('#nav-devices', 'aria-current'), 'page');

  step('keyboard: the search controls, each with a label');
  await page.focus('#nav-devices');
  const toSearch = await tabTo('search-button', 12);
  for (const id of ['search-text', 'search-platform', 'search-state', 'search-group']) {
    assert.ok(toSearch.includes(id), `Tab passes #${id}: ${toSearch.join(' → ')}`);
    const named = await page.$eval(`#${id}`, (e) => e.labels.length === 1 && e.labels[0].textContent.trim().length > 0);
    assert.ok(named, `#${id} has a label`);
  }
  const listed = await waitForRows('#device-list', (r) => r.length === deviceCount, 'every device listed');
  assert.equal(listed.length, deviceCount);
  assert.match(await page.textContent('#devices-summary'), new RegExp(`Devices 1–${deviceCount}\\.`));

  step('search by platform and by group');
  await page.selectOption('#search-platform', 'macOS');
  await page.click('#search-button');
  await waitForRows('#device-list', (r) => r.length === 1 && r[0].startsWith('MacBook Air 4|'), 'the Mac alone');
  await page.selectOption('#search-platform', '');
  await page.selectOption('#search-group', 'phones');
  await page.click('#search-button');
  await waitForRows('#device-list', (r) => r.length === 3, 'the three phones');
  await page.selectOption('#search-group', '');

  step('search by serial number, typed');
  await page.click('#search-text');
  await page.keyboard.type(serial.toLowerCase().slice(0, serial.length - 1));
  await page.keyboard.press('Enter');
  const found = await waitForRows('#device-list', (r) => r.length === 1, `one device for ${serial}`);
  assert.ok(found[0].includes(serial), `the device with serial ${serial}: ${found[0]}`);
  assert.equal(await page.textContent('#announce'), '1 device shown.');
  await shot('04-search');

  step('the device page');
  await page.click('#device-list table tbody a');
  await page.waitForSelector('#view-device:not([hidden])');
  await page.waitForSelector(`#device-title:has-text("${serial}")`);
  assert.equal(await focused(), 'device-title', 'a new view puts focus on its heading');
  const factsText = await page.textContent('#device-facts');
  assert.ok(factsText.includes(udid), `the UDID among the facts: ${factsText}`);
  assert.match(factsText, /Stateenrolled/);
  const profiles = await waitForRows('#device-profiles', (r) => r.length === 2, 'two profiles on the device');
  assert.ok(profiles.every((row) => row.includes('|verified|')), `each profile verified: ${profiles}`);
  assert.deepEqual(await page.$$eval('#device-groups li', (li) => li.map((l) => l.textContent)), ['everyone', 'phones']);
  const commands = await rows('#device-commands');
  assert.ok(commands.some((row) => row.startsWith('InstallProfile|acknowledged')), `commands: ${commands}`);
  assert.ok(commands.some((row) => row.startsWith('ProfileList|acknowledged')), `commands: ${commands}`);
  assert.equal((await rows('#device-certificates')).length, 1, 'its identity certificate');
  assert.match(await page.textContent('#device-push'), /Push tokenyes/);
  await shot('05-device');

  step('Erase stays disabled until the serial number is typed');
  await page.click('#action-erase');
  await page.waitForSelector('#confirm[open]');
  assert.equal(await page.textContent('#confirm-title'), 'Erase the device');
  assert.equal(await focused(), 'field-confirm', 'the confirmation field has focus');
  assert.ok(await page.isDisabled('#confirm-ok'), 'Erase is disabled before typing');
  await page.keyboard.type('WRONG-SERIAL');
  assert.ok(await page.isDisabled('#confirm-ok'), 'Erase is disabled with another serial');
  await page.fill('#field-confirm', serial.slice(0, -1));
  assert.ok(await page.isDisabled('#confirm-ok'), 'Erase is disabled with part of the serial');
  await shot('06-erase-disabled');
  await page.fill('#field-confirm', serial);
  assert.ok(await page.isEnabled('#confirm-ok'), 'Erase is enabled once the serial is typed');
  await page.keyboard.press('Escape');
  await page.waitForSelector('#confirm', { state: 'hidden' });
  assert.equal(await focused(), 'action-erase', 'focus returns to the button that opened the dialog');
  assert.ok(!posted.some((p) => p.includes('"Erase"')), `no Erase was sent: ${posted}`);

  step('Lock through the page, acknowledged by the device');
  await page.click('#action-lock');
  await page.waitForSelector('#confirm[open]');
  assert.equal(await page.$('#field-pin'), null, 'no PIN asked of an iPhone');
  await page.fill('#field-message', 'Please call IT');
  await page.click('#confirm-ok');
  await page.waitForSelector('#confirm', { state: 'hidden' });
  await page.waitForSelector('#announce:has-text("Lock started")');
  const lock = posted.find((p) => p.includes('/actions'));
  assert.ok(lock && lock.includes('"action":"Lock"') && lock.includes('"message":"Please call IT"'), `the request: ${lock}`);
  await waitForRows('#device-action-list', (r) => r.some((row) => row.startsWith('Lock|api|Acknowledged')), 'the Lock acknowledged');
  await waitForRows('#device-commands', (r) => r.some((row) => row.startsWith('DeviceLock|acknowledged')), 'DeviceLock acknowledged');
  await shot('07-locked');

  step('Lost Mode, then Locate, on another device');
  await page.goto(`${url}#/device/${encodeURIComponent(lostUdid)}`);
  await page.waitForSelector(`#device-facts:has-text("${lostUdid}")`);
  await page.click('#action-lost-mode');
  await page.waitForSelector('#confirm[open]');
  await page.click('#confirm-ok');
  assert.equal(await page.textContent('#confirm-error'), 'Give a message or a phone number.');
  await page.fill('#field-message', 'This iPhone is lost');
  await page.fill('#field-phoneNumber', '+31 20 555 0100');
  await page.click('#confirm-ok');
  await page.waitForSelector('#confirm', { state: 'hidden' });
  await page.waitForSelector('#announce:has-text("EnableLostMode started")');
  await waitForRows('#device-action-list', (r) => r.some((row) => row.startsWith('EnableLostMode|api|Acknowledged')),
    'Lost Mode acknowledged');
  await page.click('#action-locate');
  await page.waitForSelector('#confirm[open]');
  assert.equal(await focused(), 'confirm-cancel', 'a dialog without fields focuses Cancel');
  await page.click('#confirm-ok');
  await page.waitForSelector('#confirm', { state: 'hidden' });
  const located = `Located at ${lostLatitude.toFixed(5)}, ${lostLongitude.toFixed(5)}`;
  await waitForRows('#device-action-list', (r) => r.some((row) => row.startsWith('Locate|api|Acknowledged') && row.includes(located)),
    `the location ${located}`);
  await shot('08-located');

  step('sign out');
  await page.click('#sign-out');
  await page.waitForSelector('#view-sign-in:not([hidden])');
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'the token is forgotten');
  assert.equal(await page.textContent('#announce'), 'Signed out.');
  await shot('09-signed-out');

  step('every request the console made is one the OpenAPI document describes');
  const used = await checkAgainstOpenApi();
  for (const operation of ['GET /status', 'GET /devices', 'GET /devices/{id}', 'GET /devices/{id}/commands',
    'GET /devices/{id}/actions', 'POST /devices/{id}/actions']) {
    assert.ok(used.includes(operation), `the console used ${operation}: ${used}`);
  }
  console.log(`operations used: ${used.join(', ')}`);

  assert.deepEqual(problems, [], `console errors or failed requests:\n${problems.join('\n')}`);
  console.log(`console: every check passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} catch (error) {
  await shot('failure').catch(() => {});
  console.error(`console test failed: ${error.stack || error}`);
  if (problems.length) console.error(`console errors or failed requests seen:\n${problems.join('\n')}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
