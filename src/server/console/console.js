// Pomona web console. Plain script, no framework, no build step: it talks only to the admin
// API on this origin (/api/v1, the requests docs/openapi.json describes) with the admin token
// the administrator typed in, kept in sessionStorage (this tab only) until sign-out. Views are
// chosen by the URL's fragment (#/overview, #/devices, #/device/<id>). Everything a device or
// the server reports is put into the page as text (textContent), never as markup.
'use strict';

const TOKEN_KEY = 'pomona.admin-token';
const POLL_MS = 3000;
const PAGE_SIZE = 50;

// ---- small DOM helpers ----------------------------------------------------------------

const $ = (id) => document.getElementById(id);

/** An element with attributes (or properties for `on…` handlers) and children (text or nodes). */
function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else if (name === 'className') node.className = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function replace(container, ...children) {
  container.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
}

/** A table with a caption, column headers (scope=col) and rows of cells (text or nodes). */
function table(caption, headers, rows, numeric = []) {
  return el('table', {},
    el('caption', {}, caption),
    el('thead', {}, el('tr', {}, headers.map((h, i) =>
      el('th', { scope: 'col', className: numeric.includes(i) ? 'number' : null }, h)))),
    el('tbody', {}, rows.map((cells) => el('tr', {}, cells.map((c, i) =>
      i === 0 ? el('th', { scope: 'row' }, c)
        : el('td', { className: numeric.includes(i) ? 'number' : null }, c))))));
}

function facts(dl, pairs) {
  replace(dl, pairs.filter(([, v]) => v !== null && v !== undefined && v !== '')
    .map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
}

function stateText(state) {
  return el('span', { className: `state-${state}` }, String(state).replace(/_/g, ' '));
}

function when(text) {
  if (!text) return '—';
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? text : date.toLocaleString();
}

/** `n` things, in the singular for one. */
function count(n, thing) {
  return `${n} ${thing}${n === 1 ? '' : 's'}`;
}

function yesNo(value) {
  return value ? 'yes' : 'no';
}

/** A bar for `done` of `total`, with the same figures in words for everyone. */
function progress(done, total, words) {
  const label = `${done} of ${total} ${words}`;
  return el('span', { className: 'progress' },
    el('progress', { value: done, max: Math.max(total, 1), 'aria-label': label }),
    el('span', {}, label));
}

/** Announces a status message to screen readers and sighted users alike. */
function announce(message) {
  $('announce').textContent = message;
}

// ---- the admin API --------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, problems) {
    super(message);
    this.status = status;
    this.problems = problems || [];
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** One admin API request; the answer's JSON, or an ApiError with the server's own message. */
async function api(path, { method = 'GET', body, bearer = token() } = {}) {
  const headers = { Accept: 'application/json', Authorization: `Bearer ${bearer}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(`/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (e) {
    throw new ApiError(0, `the server cannot be reached (${e.message})`);
  }
  let json = null;
  try {
    json = await response.json();
  } catch (e) {
    json = null;
  }
  if (!response.ok) {
    const message = (json && json.error) || `${response.status} ${response.statusText}`;
    if (response.status === 401 && bearer === token()) signOut('Your token is no longer accepted: sign in again.');
    throw new ApiError(response.status, message, json && json.problems);
  }
  return json;
}

const enc = encodeURIComponent;

// ---- sign-in ----------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const input = $('token');
  const given = input.value.trim();
  $('sign-in-error').textContent = '';
  if (!given) {
    $('sign-in-error').textContent = 'Type the admin token.';
    return;
  }
  $('sign-in-button').disabled = true;
  try {
    await api('/status', { bearer: given });
    sessionStorage.setItem(TOKEN_KEY, given);
    input.value = '';
    announce('Signed in.');
    if (!location.hash || location.hash === '#/sign-in') location.hash = '#/overview';
    else route();
  } catch (e) {
    $('sign-in-error').textContent = e.status === 401
      ? `Sign-in refused: ${e.message}. Check the token in the server's admin-token file.`
      : `Sign-in failed: ${e.message}`;
    input.focus();
    input.select();
  } finally {
    $('sign-in-button').disabled = false;
  }
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopPolling();
  forgetData();
  announce(message || 'Signed out.');
  route();
}

// ---- views ------------------------------------------------------------------------------

let pollTimer = null;

function stopPolling() {
  if (pollTimer) clearTimeout(pollTimer);
  pollTimer = null;
}

/** Runs `refresh` now and every POLL_MS while the view it belongs to stays shown (and not
 * while the browser tab is in the background: nobody is looking). */
function poll(view, refresh) {
  stopPolling();
  const generation = {};
  poll.current = generation;
  const tick = async () => {
    if (poll.current !== generation) return;
    if (!document.hidden) await refresh();
    if (poll.current === generation && !$(view).hidden) pollTimer = setTimeout(tick, POLL_MS);
  };
  tick();
}

/** What each part of the page last showed (its data as JSON), so that an unchanged answer
 * redraws nothing: a keyboard user's focus and an opened result stay where they are. */
const drawn = {};

/** An element's identity across redraws: its id, its link, or its `data-key`. */
function identify(element) {
  if (!element || element === document.body) return null;
  if (element.id) return `#${CSS.escape(element.id)}`;
  const href = element.getAttribute('href');
  if (href) return `[href="${CSS.escape(href)}"]`;
  const keyed = element.closest('[data-key]');
  if (keyed) return `[data-key="${CSS.escape(keyed.dataset.key)}"] ${element.tagName.toLowerCase()}`;
  return null;
}

/** Draws `data` with `draw` unless it is what `part` shows already; keeps the focused element
 * and the opened results (`details[data-key]`) across the redraw. */
function redraw(part, data, draw) {
  const text = JSON.stringify(data);
  if (drawn[part] === text) return;
  drawn[part] = text;
  const focused = document.activeElement;
  const focusKey = identify(focused);
  const open = [...document.querySelectorAll('details[open][data-key]')].map((d) => d.dataset.key);
  draw();
  for (const key of open) {
    const details = document.querySelector(`details[data-key="${CSS.escape(key)}"]`);
    if (details) details.open = true;
  }
  if (focusKey && !document.contains(focused)) {
    const again = document.querySelector(focusKey);
    if (again) again.focus();
  }
}

/** The parts of the page that show the server's data: emptied at sign-out. */
const DATA_PARTS = ['policy', 'policy-refused', 'profiles', 'actions', 'groups', 'device-list',
  'devices-summary', 'device-facts', 'device-labels', 'device-groups', 'device-push', 'device-profiles',
  'device-action-list', 'device-commands', 'device-certificates'];

function forgetData() {
  for (const part of DATA_PARTS) replace($(part));
  for (const part of Object.keys(drawn)) delete drawn[part];
  shownDevice = null;
}

let shownView = null;

/** Shows one view. When the view changes (not at the first one), focus moves to its heading,
 * so that a screen reader announces where the user is. */
function show(view, heading) {
  const moved = shownView !== null && shownView !== view;
  shownView = view;
  for (const section of document.querySelectorAll('main > section')) section.hidden = section.id !== view;
  const signedIn = Boolean(token());
  $('nav').hidden = !signedIn;
  $('sign-out').hidden = !signedIn;
  for (const link of document.querySelectorAll('#nav a')) {
    const current = (view === 'view-overview' && link.id === 'nav-overview')
      || ((view === 'view-devices' || view === 'view-device') && link.id === 'nav-devices');
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.title = `${heading} · Pomona`;
  if (moved && view !== 'view-sign-in') $(view).querySelector('h1').focus();
}

function route() {
  stopPolling();
  poll.current = null;
  if (!token()) {
    show('view-sign-in', 'Sign in');
    $('token').focus();
    return;
  }
  const hash = location.hash || '#/overview';
  if (hash.startsWith('#/device/')) {
    showDevice(decodeURIComponent(hash.slice('#/device/'.length)));
  } else if (hash.startsWith('#/devices')) {
    showDevices(new URLSearchParams(hash.split('?')[1] || ''));
  } else {
    show('view-overview', 'Fleet overview');
    poll('view-overview', refreshOverview);
  }
}

// ---- overview ---------------------------------------------------------------------------

function kindAndName(key) {
  const slash = key.indexOf('/');
  return slash < 0 ? ['', key] : [key.slice(0, slash), key.slice(slash + 1)];
}

async function refreshOverview() {
  let status;
  try {
    status = await api('/status');
  } catch (e) {
    if (token()) $('overview-error').textContent = `Cannot read the status: ${e.message}`;
    return;
  }
  $('overview-error').textContent = '';
  $('overview-updated').textContent = `Last refreshed ${new Date().toLocaleTimeString()}.`;
  fillGroups(status.groups);
  redraw('overview', status, () => drawOverview(status));
}

function drawOverview(status) {
  const policy = status.policy;
  facts($('policy'), [
    ['Revision', policy.revision || 'none yet'],
    ['Source', policy.source],
    ['Commit', policy.commit],
    ['Last fetched', policy.last_fetch_at && when(policy.last_fetch_at)],
    ['Fetch error', policy.last_fetch_error],
    ['Rollout', `${status.rollout.installing_devices} installing, ${status.rollout.waiting_devices} waiting`
      + (status.rollout.max_devices ? ` (at most ${status.rollout.max_devices} at a time)` : '')],
  ]);
  const refused = [];
  if (policy.last_error && policy.last_error.length) {
    refused.push(el('div', { className: 'refused', id: 'refused-change' },
      el('h3', {}, 'A policy change was refused; the revision above keeps serving'),
      policy.refused_commit ? el('p', {}, `Commit ${policy.refused_commit}`) : null,
      el('ul', {}, policy.last_error.map((p) => el('li', {}, p)))));
  }
  if (policy.warnings && policy.warnings.length) {
    refused.push(el('div', {}, el('h3', {}, 'Warnings'),
      el('ul', {}, policy.warnings.map((w) => el('li', {}, w)))));
  }
  replace($('policy-refused'), refused);

  const profiles = status.profiles;
  replace($('profiles'), profiles.length === 0 ? el('p', {}, 'No profiles are declared.') : [
    table(count(profiles.length, 'profile'),
      ['Profile', 'Kind', 'Targeted', 'Verified', 'Pending', 'Failed', 'Removing', 'Rollout'],
      profiles.map((p) => {
        const [kind, name] = kindAndName(p.profile);
        return [
          name + (p.declared ? '' : ' (no longer declared)'),
          kind,
          p.targeted, p.verified, p.pending, p.failed + p.removal_failed, p.removing,
          progress(p.verified, p.targeted, 'verified'),
        ];
      }), [2, 3, 4, 5, 6]),
    failures(profiles.flatMap((p) => p.failing_devices.map((f) =>
      [p.profile, f.device_id, f.phase, f.reason || '']))),
  ]);

  const actions = status.actions;
  replace($('actions'), actions.length === 0 ? el('p', {}, 'No device actions are declared.') : [
    table(count(actions.length, 'declared action'),
      ['Action', 'Kind', 'Target', 'Targeted', 'Pending', 'Sent', 'Done', 'Failed', 'Not applicable', 'Progress'],
      actions.map((a) => [a.name, a.action, a.target, a.targeted, a.pending, a.sent, a.acknowledged,
        a.failed, a.not_applicable,
        progress(a.acknowledged + a.failed + a.not_applicable, a.targeted, 'finished')]),
      [3, 4, 5, 6, 7, 8]),
    failures(actions.flatMap((a) => a.failing_devices.map((f) =>
      [a.name, f.device_id, f.state, f.reason || '']))),
  ]);

  const groups = status.groups;
  replace($('groups'), groups.length === 0 ? el('p', {}, 'No device groups are declared.')
    : table(count(groups.length, 'group'), ['Group', 'Members'],
      groups.map((g) => [el('a', { href: `#/devices?group=${enc(g.name)}` }, g.name), g.members]), [1]));
}

function failures(rows) {
  if (rows.length === 0) return null;
  return table('Where it failed', ['Of', 'Device', 'Phase or state', 'Reason'],
    rows.map(([of, device, phase, reason]) =>
      [of, el('a', { href: `#/device/${enc(device)}` }, device), phase, reason]));
}

/** The group filter's choices, from the status (kept when they have not changed). */
function fillGroups(groups) {
  const select = $('search-group');
  const names = groups.map((g) => g.name);
  const have = [...select.options].slice(1).map((o) => o.value);
  if (have.join('\n') === names.join('\n')) return;
  const chosen = select.value;
  replace(select, el('option', { value: '' }, 'Any'), names.map((n) => el('option', { value: n }, n)));
  select.value = names.includes(chosen) ? chosen : '';
}

// ---- devices ----------------------------------------------------------------------------

/** The search in force and the cursors of the pages before this one. */
const listing = { params: new URLSearchParams(), after: null, previous: [], next: null };

async function showDevices(params) {
  show('view-devices', 'Devices');
  for (const name of ['q', 'platform', 'state', 'group']) {
    const field = $('search-form').elements[name];
    if (name === 'group' && params.get('group') && ![...field.options].some((o) => o.value === params.get('group'))) {
      field.append(el('option', { value: params.get('group') }, params.get('group')));
    }
    field.value = params.get(name) || '';
  }
  if (listing.params.toString() !== params.toString()) {
    listing.params = params;
    listing.after = null;
    listing.previous = [];
  }
  if ($('search-group').options.length <= 1) {
    api('/status').then((s) => fillGroups(s.groups)).catch(() => {});
  }
  await loadDevices();
}

async function loadDevices() {
  const query = new URLSearchParams();
  for (const [name, value] of listing.params) if (value) query.set(name, value);
  query.set('limit', String(PAGE_SIZE));
  if (listing.after) query.set('after', listing.after);
  $('devices-error').textContent = '';
  let page;
  try {
    page = await api(`/devices?${query}`);
  } catch (e) {
    $('devices-error').textContent = `Cannot list devices: ${e.message}`;
    return;
  }
  listing.next = page.next_after;
  const first = listing.previous.length * PAGE_SIZE + 1;
  const summary = page.devices.length === 0
    ? 'No devices match.'
    : `Devices ${first}–${first + page.devices.length - 1}${page.next_after ? ', more on the next page' : ''}.`;
  $('devices-summary').textContent = summary;
  announce(page.devices.length === 0 ? 'No devices match.' : `${count(page.devices.length, 'device')} shown.`);
  replace($('device-list'), page.devices.length === 0 ? null : table('Matching devices',
    ['Device', 'Serial number', 'Model', 'OS', 'State', 'Last seen'],
    page.devices.map((d) => [
      el('a', { href: `#/device/${enc(d.device_id)}` }, d.device_name || d.device_id),
      d.serial_number || '—',
      d.model_name || d.product_name || d.model || '—',
      d.os_version || '—',
      stateText(d.state),
      when(d.last_seen_at),
    ])));
  $('page-next').disabled = !page.next_after;
  $('page-previous').disabled = listing.previous.length === 0;
  $('page-first').disabled = listing.previous.length === 0;
}

function search(event) {
  event.preventDefault();
  const params = new URLSearchParams();
  const form = $('search-form').elements;
  for (const name of ['q', 'platform', 'state', 'group']) {
    const value = form[name].value.trim();
    if (value) params.set(name, value);
  }
  const hash = `#/devices${params.toString() ? `?${params}` : ''}`;
  listing.params = params;
  listing.after = null;
  listing.previous = [];
  if (location.hash === hash) loadDevices();
  else location.hash = hash;
}

function nextPage() {
  if (!listing.next) return;
  listing.previous.push(listing.after);
  listing.after = listing.next;
  loadDevices();
}

function previousPage() {
  if (listing.previous.length === 0) return;
  listing.after = listing.previous.pop();
  loadDevices();
}

function firstPage() {
  listing.after = null;
  listing.previous = [];
  loadDevices();
}

// ---- one device -------------------------------------------------------------------------

let shownDevice = null;

async function showDevice(id) {
  show('view-device', 'Device');
  if (!shownDevice || shownDevice.device_id !== id) {
    shownDevice = null;
    delete drawn.device;
    $('device-title').textContent = id;
    for (const part of ['device-facts', 'device-labels', 'device-groups', 'device-push', 'device-profiles',
      'device-action-list', 'device-commands', 'device-certificates']) replace($(part));
  }
  poll('view-device', () => refreshDevice(id));
}

async function refreshDevice(id) {
  let device;
  let commands;
  let actions;
  try {
    [device, commands, actions] = await Promise.all([
      api(`/devices/${enc(id)}`),
      api(`/devices/${enc(id)}/commands?limit=50`),
      api(`/devices/${enc(id)}/actions`),
    ]);
  } catch (e) {
    if (token()) $('device-error').textContent = `Cannot read device ${id}: ${e.message}`;
    return;
  }
  if (location.hash !== `#/device/${enc(id)}` && location.hash !== `#/device/${id}`) return;
  $('device-error').textContent = '';
  shownDevice = device;
  redraw('device', [device, commands, actions], () => drawDevice(device, commands, actions));
}

function drawDevice(device, commands, actions) {
  const name = device.device_name || device.serial_number || device.device_id;
  $('device-title').textContent = device.serial_number ? `${name} (${device.serial_number})` : name;
  document.title = `${name} · Pomona`;
  const reported = device.facts || {};
  facts($('device-facts'), [
    ['UDID or EnrollmentID', device.device_id],
    ['Serial number', device.serial_number],
    ['Name', device.device_name],
    ['Model', [device.model_name, device.product_name || device.model].filter(Boolean).join(' · ')],
    ['OS', [device.os_version, device.build_version && `(${device.build_version})`].filter(Boolean).join(' ')],
    ['Supervised', reported.supervised === undefined ? null : yesNo(reported.supervised)],
    ['Enrollment', device.enrollment_type],
    ['State', stateText(device.state)],
    ['Enrolled', when(device.enrolled_at)],
    ['Last seen', when(device.last_seen_at)],
    ['Wiped', device.wiped_at && when(device.wiped_at)],
    ['IMEI', device.imei],
    ['MEID', device.meid],
    ['Facts reported', reported.reported_at && when(reported.reported_at)],
    ['Push topic', device.topic],
    ['Unlock token', yesNo(device.has_unlock_token)],
    ['Awaiting configuration', device.awaiting_configuration ? 'yes' : null],
  ]);
  const labels = Object.entries(device.labels);
  replace($('device-labels'), labels.length === 0 ? el('p', {}, 'None.')
    : el('ul', {}, labels.map(([k, v]) => el('li', {}, el('code', {}, `${k}=${v}`)))));
  replace($('device-groups'), device.groups.length === 0 ? el('p', {}, 'None.')
    : el('ul', {}, device.groups.map((g) => el('li', {}, el('a', { href: `#/devices?group=${enc(g)}` }, g)))));
  const push = device.push;
  facts($('device-push'), [
    ['Push token', yesNo(device.has_push_token)],
    ['Last push', when(push.last_push_at)],
    ['Last result', push.last_result],
    ['Next push', push.next_push_at && when(push.next_push_at)],
    ['Pushes since last seen', push.attempts_since_seen],
    ['Failures in a row', push.consecutive_failures],
    ['Token invalid', push.token_invalid ? `yes, since ${when(push.token_invalid_at)}` : 'no'],
  ]);
  replace($('device-profiles'), device.profiles.length === 0 ? el('p', {}, 'Pomona manages no profile on it.')
    : table(`Profiles reported ${when(device.profiles_reported_at)}`,
      ['Profile', 'Identifier', 'State', 'Attempts', 'Last error'],
      device.profiles.map((p) => [p.profile, p.identifier, stateText(p.state), p.attempts, p.last_error || '']),
      [3]));
  replace($('device-action-list'), actions.actions.length === 0 ? el('p', {}, 'No actions yet.')
    : table('Actions, oldest first', ['Action', 'Source', 'State', 'Detail', 'Result', 'Updated'],
      actions.actions.map((a) => [a.action, a.source, stateText(a.state), a.detail || '',
        actionResult(a), when(a.updated_at)])));
  replace($('device-commands'), commands.commands.length === 0 ? el('p', {}, 'No commands yet.')
    : table('The latest commands, newest first', ['Command', 'Status', 'Queued', 'Completed', 'Fetched', 'Result'],
      commands.commands.map((c) => [c.request_type, stateText(c.status), when(c.created_at),
        when(c.completed_at), c.attempts, commandResult(c)]), [4]));
  replace($('device-certificates'), device.certificates.length === 0 ? el('p', {}, 'None.')
    : table('Identity certificates', ['Serial', 'Subject', 'Valid until', 'In use', 'Revoked'],
      device.certificates.map((c) => [c.serial, c.subject, when(c.not_after), yesNo(c.bound),
        c.revoked_at ? when(c.revoked_at) : 'no'])));
  const enrolled = device.state === 'enrolled';
  for (const id of ['action-lock', 'action-lost-mode', 'action-locate', 'action-erase']) {
    $(id).disabled = !enrolled;
    $(id).title = enrolled ? '' : 'The device is not enrolled: it cannot receive commands.';
  }
}

/** What an action's device answered, in words: a location, or its result as JSON. */
function actionResult(action) {
  const r = action.result;
  if (!r) return '';
  if (typeof r.latitude === 'number' && typeof r.longitude === 'number') {
    const accuracy = typeof r.horizontal_accuracy === 'number' ? ` (±${Math.round(r.horizontal_accuracy)} m)` : '';
    return el('span', { className: 'location' }, `Located at ${r.latitude.toFixed(5)}, ${r.longitude.toFixed(5)}${accuracy}`);
  }
  if (typeof r.message_result === 'string') return r.message_result;
  return resultDetails('Result', r, `action-${action.action_id}`);
}

/** A command's result: the error chain in words when it failed, the whole answer on request. */
function commandResult(command) {
  const r = command.result;
  if (!r) return '';
  const parts = [];
  const chain = Array.isArray(r.ErrorChain) ? r.ErrorChain : [];
  for (const e of chain) {
    parts.push(el('div', { className: 'error' },
      `${e.ErrorDomain || 'error'} ${e.ErrorCode ?? ''}: ${e.USEnglishDescription || e.LocalizedDescription || ''}`));
  }
  parts.push(resultDetails('Answer', r, `command-${command.command_uuid}`));
  return parts;
}

function resultDetails(summary, value, key) {
  return el('details', { 'data-key': key }, el('summary', {}, summary), el('pre', {}, JSON.stringify(value, null, 2)));
}

// ---- device actions, confirmed in a dialog ------------------------------------------------

/** Each action: its title, what it does, its fields and the request it sends. */
const ACTIONS = {
  'action-lock': {
    title: 'Lock the device',
    text: (d) => `Lock ${describe(d)} now. The user needs the passcode (or on a Mac the PIN) to unlock it.`,
    fields: [
      { name: 'message', label: 'Message on the lock screen (optional)' },
      { name: 'phoneNumber', label: 'Phone number on the lock screen (optional)' },
      { name: 'pin', label: 'Six-digit PIN (Macs only)', type: 'password', pattern: '[0-9]{6}', mac: true },
    ],
    button: 'Lock',
    request: (v) => ({ action: 'Lock', message: v.message, phoneNumber: v.phoneNumber, pin: v.pin }),
  },
  'action-lost-mode': {
    title: 'Enable Lost Mode',
    text: (d) => `Put ${describe(d)} in Lost Mode: it locks and shows your message until Lost Mode is disabled. Supervised iPhones and iPads only.`,
    fields: [
      { name: 'message', label: 'Message' },
      { name: 'phoneNumber', label: 'Phone number' },
      { name: 'footnote', label: 'Footnote (optional)' },
    ],
    button: 'Enable Lost Mode',
    check: (v) => (v.message || v.phoneNumber ? null : 'Give a message or a phone number.'),
    request: (v) => ({ action: 'EnableLostMode', message: v.message, phoneNumber: v.phoneNumber, footnote: v.footnote }),
  },
  'action-locate': {
    title: 'Locate the device',
    text: (d) => `Ask ${describe(d)} where it is. Only a device in Lost Mode answers; its location shows under Actions.`,
    fields: [],
    button: 'Locate',
    request: () => ({ action: 'Locate' }),
  },
  'action-erase': {
    title: 'Erase the device',
    text: (d) => `Erase ${describe(d)}: every setting and all data are removed, and it leaves management. This cannot be undone.`,
    fields: [
      { name: 'confirm', label: 'Type the serial number to confirm', confirm: true },
      { name: 'pin', label: 'Six-digit PIN (Macs only)', type: 'password', pattern: '[0-9]{6}', mac: true },
    ],
    button: 'Erase',
    request: (v) => ({ action: 'Erase', confirm: v.confirm, pin: v.pin }),
  },
};

function describe(device) {
  const name = device.device_name || device.device_id;
  return device.serial_number ? `${name} (serial ${device.serial_number})` : name;
}

function isMac(device) {
  return /^(Mac|iMac|VirtualMac)/.test(device.product_name || device.model || '');
}

/** What the administrator must type to erase: the serial number, else the UDID. */
function confirmationOf(device) {
  return device.serial_number || device.device_id;
}

let openAction = null;

function openDialog(event) {
  const device = shownDevice;
  if (!device) return;
  const action = ACTIONS[event.currentTarget.id];
  openAction = { action, device, opener: event.currentTarget };
  $('confirm-title').textContent = action.title;
  $('confirm-text').textContent = action.text(device);
  $('confirm-error').textContent = '';
  const fields = action.fields.filter((f) => !f.mac || isMac(device));
  replace($('confirm-fields'), fields.map((f) => {
    const label = f.confirm
      ? `Type ${device.serial_number ? 'the serial number' : 'the UDID'} ${confirmationOf(device)} to confirm`
      : f.label;
    return el('div', { className: 'field' },
      el('label', { for: `field-${f.name}` }, label),
      el('input', {
        id: `field-${f.name}`, name: f.name, type: f.type || 'text', autocomplete: 'off',
        spellcheck: 'false', pattern: f.pattern, inputmode: f.pattern ? 'numeric' : null,
        oninput: updateConfirmButton,
      }));
  }));
  $('confirm-ok').textContent = action.button;
  updateConfirmButton();
  $('confirm').showModal();
  const first = $('confirm-fields').querySelector('input');
  (first || $('confirm-cancel')).focus();
}

/** The confirm button is enabled only once an erase's typed serial number matches. */
function updateConfirmButton() {
  if (!openAction) return;
  const typed = $('confirm-fields').querySelector('#field-confirm');
  $('confirm-ok').disabled = Boolean(typed) && typed.value.trim() !== confirmationOf(openAction.device);
}

function closeDialog() {
  const opener = openAction && openAction.opener;
  $('confirm').close();
  openAction = null;
  if (opener) opener.focus();
}

async function confirmAction(event) {
  event.preventDefault();
  if (!openAction) return;
  const { action, device } = openAction;
  const values = {};
  for (const input of $('confirm-fields').querySelectorAll('input')) {
    if (!input.checkValidity()) {
      $('confirm-error').textContent = `${input.labels[0].textContent}: ${input.validationMessage}`;
      input.focus();
      return;
    }
    const value = input.value.trim();
    if (value) values[input.name] = value;
  }
  const problem = action.check && action.check(values);
  if (problem) {
    $('confirm-error').textContent = problem;
    return;
  }
  const body = {};
  for (const [k, v] of Object.entries(action.request(values))) if (v !== undefined) body[k] = v;
  $('confirm-ok').disabled = true;
  try {
    const started = await api(`/devices/${enc(device.device_id)}/actions`, { method: 'POST', body });
    closeDialog();
    announce(`${started.action} ${started.state === 'NotApplicable' ? 'cannot run' : 'started'} on ${describe(device)}: ${started.state}${started.detail ? ` (${started.detail})` : ''}.`);
    refreshDevice(device.device_id);
  } catch (e) {
    $('confirm-error').textContent = `Refused: ${e.message}`;
    $('confirm-ok').disabled = false;
  }
}

// ---- start ------------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  // The fragment chooses the view: the skip link moves focus without changing it.
  document.querySelector('.skip').addEventListener('click', (event) => {
    event.preventDefault();
    $('main').focus();
  });
  $('sign-in-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', () => {
    signOut();
    location.hash = '';
  });
  $('search-form').addEventListener('submit', search);
  $('page-next').addEventListener('click', nextPage);
  $('page-previous').addEventListener('click', previousPage);
  $('page-first').addEventListener('click', firstPage);
  for (const id of Object.keys(ACTIONS)) $(id).addEventListener('click', openDialog);
  $('confirm-form').addEventListener('submit', confirmAction);
  $('confirm-cancel').addEventListener('click', closeDialog);
  $('confirm').addEventListener('cancel', () => {
    const opener = openAction && openAction.opener;
    openAction = null;
    if (opener) setTimeout(() => opener.focus(), 0);
  });
  window.addEventListener('hashchange', route);
  route();
});
