// Orchestra's dashboard script: live updates, the checkpoint editor, small helpers.
//
// Pages are rendered on the server. This script listens to the event stream and,
// when something happens, asks the same page for its live regions (?partial=1)
// and patches them in place. A checkpoint the person is working on is never
// replaced under their hands: its node is kept across refreshes, and if it was
// resolved elsewhere it stays, marked, with the person's text. Every string the
// script compares against (event types, statuses) comes from the page's data
// blob, never from literals here. Agent text is only ever set as textContent;
// the only HTML inserted comes from the server's own templates.
(() => {
  'use strict';

  const DATA = JSON.parse(document.getElementById('orchestra-data').textContent);
  const EVENTS = DATA.vocabulary.events;
  const PROGRESS_KEEP = 200;

  // -- small helpers ---------------------------------------------------------

  // The CSRF token comes with the page (the session's own; the session cookie
  // itself is HttpOnly and the API token is never in a cookie).
  function jsonHeaders(extra) {
    return Object.assign(
      { 'Content-Type': 'application/json', Accept: 'application/json' },
      { [DATA.csrfHeader]: DATA.csrf },
      extra || {},
    );
  }

  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return `k${Date.now().toString(36)}${Math.random().toString(36).slice(2)}`;
  }

  // fetch → {ok, status, data}; never throws (a network failure is status 0).
  // A URLSearchParams body is posted as a form (the page's own form routes).
  async function call(method, url, body, headers) {
    const form = body instanceof URLSearchParams;
    const head = jsonHeaders(headers);
    if (form) head['Content-Type'] = 'application/x-www-form-urlencoded';
    try {
      const response = await fetch(url, {
        method,
        headers: head,
        body: body === undefined || form ? body : JSON.stringify(body),
        credentials: 'same-origin',
      });
      let data = null;
      const text = await response.text();
      try { data = text ? JSON.parse(text) : null; } catch (_) { data = { raw: text }; }
      return { ok: response.ok, status: response.status, data };
    } catch (_) {
      return { ok: false, status: 0, data: null };
    }
  }

  function errorMessage(result) {
    if (result.status === 0) return 'Could not reach the server. Check the connection and try again.';
    const err = result.data && result.data.error;
    if (err && err.message) return err.message;
    if (result.status >= 500) return `The server had a problem (${result.status}). It has been logged; try again.`;
    return `The request failed (${result.status}).`;
  }

  let toastTimer = null;
  function toast(message) {
    const el = document.getElementById('toast');
    if (!el) return;
    el.textContent = message;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, 8000);
  }

  function setConnection(message, signIn) {
    const el = document.getElementById('connection');
    if (!el) return;
    el.replaceChildren();
    el.hidden = !message;
    if (!message) return;
    el.append(document.createTextNode(message));
    if (signIn) {
      const link = document.createElement('a');
      link.href = `/login?next=${encodeURIComponent(location.pathname + location.search)}`;
      link.textContent = ' Sign in again';
      el.append(link);
    }
  }

  // -- times -------------------------------------------------------------------

  function span(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${String(s % 60).padStart(2, '0')} s`;
    const h = Math.floor(m / 60);
    if (h < 48) return `${h} h ${String(m % 60).padStart(2, '0')} min`;
    return `${Math.floor(h / 24)} d ${h % 24} h`;
  }

  function ago(ms) {
    const s = Math.floor(ms / 1000);
    if (s < 10) return 'just now';
    if (s < 60) return `${s} s ago`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ago`;
    const h = Math.floor(m / 60);
    if (h < 48) return `${h} h ago`;
    return `${Math.floor(h / 24)} days ago`;
  }

  function updateTimes(root) {
    const now = Date.now();
    for (const el of root.querySelectorAll('time[data-time]')) {
      const at = Date.parse(el.getAttribute('datetime'));
      if (Number.isNaN(at)) continue;
      const kind = el.dataset.time;
      if (!el.dataset.titled) {
        el.title = new Date(at).toLocaleString();
        el.dataset.titled = '1';
      }
      if (kind === 'ago') el.textContent = ago(now - at);
      else if (kind === 'waited') el.textContent = `for ${span(now - at)}`;
      else if (kind === 'elapsed') el.textContent = span(now - at);
      else if (kind === 'due') {
        // A deadline's countdown; once it passes the note says so (the server acts).
        const left = at - now;
        el.textContent = left > 0 ? `in ${span(left)}` : `overdue by ${span(-left)}`;
        const note = el.closest('[data-deadline]');
        if (note) note.toggleAttribute('data-overdue', left <= 0);
      }
      else if (kind === 'until') el.textContent = at > now ? `in ${span(at - now)}` : 'now';
    }
  }

  // -- copy buttons ------------------------------------------------------------

  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return;
    }
    const area = document.createElement('textarea');
    area.value = text;
    area.setAttribute('readonly', '');
    area.className = 'offscreen';
    document.body.append(area);
    area.select();
    document.execCommand('copy');
    area.remove();
  }

  document.addEventListener('click', async (event) => {
    const button = event.target.closest('[data-copy]');
    if (!button) return;
    const source = document.getElementById(button.dataset.copy);
    if (!source) return;
    const text = 'value' in source ? source.value : source.textContent;
    try {
      await copyText(text);
      const label = button.textContent;
      button.textContent = 'Copied';
      setTimeout(() => { button.textContent = label; }, 1500);
    } catch (_) {
      toast('Copying failed; select the text and copy it by hand.');
    }
  });

  // -- the checkpoint panel ----------------------------------------------------

  function parts(panel) {
    return {
      content: panel.querySelector('[data-content]'),
      original: panel.querySelector('[data-original]'),
      notes: panel.querySelector('[data-notes]'),
      inputs: [...panel.querySelectorAll('input[data-input-for]')],
      message: panel.querySelector('[data-message]'),
      buttons: [...panel.querySelectorAll('button[data-action]')],
    };
  }

  // Line comments typed but not sent yet.
  function commentBodies(panel) {
    const form = panel.querySelector('form.resolve');
    if (!form) return [];
    return [...form.elements].filter((el) => el.name === 'comment_body' && el.value.trim());
  }

  function isDirty(panel) {
    const p = parts(panel);
    if (panel.dataset.resolvedByMe) return false;
    const edited = p.content && p.original && p.content.value !== p.original.value;
    const typed = p.inputs.some((field) => field.value.trim() !== '');
    const commented = commentBodies(panel).length > 0;
    return Boolean(edited || typed || commented || (p.notes && p.notes.value.trim()));
  }

  function showMessage(panel, kind, nodes) {
    const box = parts(panel).message;
    if (!box) return;
    box.className = `message ${kind}`;
    box.replaceChildren(...nodes);
    box.hidden = nodes.length === 0;
  }

  function updateButtons(panel) {
    const p = parts(panel);
    const hasContent = Boolean(p.content && p.content.value.trim());
    const locked = Boolean(panel.dataset.busy || panel.dataset.stale || panel.dataset.resolvedByMe);
    for (const button of p.buttons) {
      button.disabled = locked || (button.hasAttribute('data-requires-content') && !hasContent);
    }
    const edited = Boolean(p.content && p.original && p.content.value !== p.original.value);
    const note = panel.querySelector('[data-dirty-note]');
    const revert = panel.querySelector('[data-revert]');
    if (note) note.hidden = !edited;
    if (revert) revert.hidden = !edited;
  }

  function actionLabel(panel, name) {
    const button = parts(panel).buttons.find((b) => b.dataset.action === name);
    return button ? button.textContent.trim() : name;
  }

  function resolutionNodes(panel, resolution, fallback) {
    const nodes = [];
    const strong = (text) => { const el = document.createElement('strong'); el.textContent = text; return el; };
    if (resolution) {
      nodes.push(
        document.createTextNode('Someone else decided first: '),
        strong(resolution.resolved_by),
        document.createTextNode(' chose '),
        strong(`“${actionLabel(panel, resolution.action)}”`),
      );
      const at = Date.parse(resolution.resolved_at);
      if (!Number.isNaN(at)) nodes.push(document.createTextNode(` (${ago(Date.now() - at)})`));
      nodes.push(document.createTextNode('. '));
    } else {
      nodes.push(document.createTextNode(`${fallback} `));
    }
    nodes.push(document.createTextNode('Your text is kept here; copy it if you still need it. '));
    const dismiss = document.createElement('button');
    dismiss.type = 'button';
    dismiss.className = 'link';
    dismiss.textContent = 'Show the current state';
    dismiss.addEventListener('click', () => {
      const kept = panel.closest('[data-keep-key]') || panel;
      panel.dataset.resolvedByMe = '1'; // nothing of it needs keeping any more
      kept.remove();
      scheduleRefresh(0);
    });
    nodes.push(dismiss);
    return nodes;
  }

  function markStale(panel, resolution, fallback) {
    panel.dataset.stale = '1';
    panel.classList.add('stale');
    const badge = panel.querySelector('.checkpoint-head .badge');
    if (badge) {
      badge.textContent = 'decided elsewhere';
      badge.className = 'badge tone-muted';
      badge.removeAttribute('data-status');
    }
    updateButtons(panel);
    showMessage(panel, 'conflict', resolutionNodes(panel, resolution, fallback));
  }

  // A panel that vanished from a refresh while holding the person's text.
  async function resolvedElsewhere(panel) {
    if (panel.dataset.stale) return;
    panel.dataset.stale = '1';
    const result = await call('GET', `/api/checkpoints/${encodeURIComponent(panel.dataset.checkpointId)}`);
    const resolution = result.ok && result.data ? result.data.resolution : null;
    markStale(panel, resolution, 'This checkpoint is no longer waiting for a decision.');
  }

  async function resolve(panel, button) {
    const p = parts(panel);
    const label = button.textContent.trim();
    if (button.hasAttribute('data-destructive')
        && !window.confirm(`${label}? This cannot be undone.`)) return;
    const needsContent = button.hasAttribute('data-requires-content');
    let edited = null;
    if (p.content) {
      const changed = !p.original || p.content.value !== p.original.value;
      edited = changed || needsContent ? p.content.value : null;
    }
    // The form's own fields (the same the server reads without this script), with the
    // comment rows added under diff lines (they belong to the form by its id).
    const form = panel.querySelector('form.resolve');
    const body = new URLSearchParams();
    for (const [name, value] of new FormData(form)) {
      if (typeof value === 'string') body.append(name, value);
    }
    body.set('action', button.dataset.action);
    if (edited === null) body.delete('edited_content'); else body.set('edited_content', edited);
    if (!panel.dataset.idempotencyKey) panel.dataset.idempotencyKey = newKey();
    panel.dataset.busy = '1';
    updateButtons(panel);
    showMessage(panel, 'info', [document.createTextNode(`Sending “${label}”…`)]);
    const result = await call(
      'POST',
      form.getAttribute('action'),
      body,
      { 'Idempotency-Key': panel.dataset.idempotencyKey },
    );
    delete panel.dataset.busy;
    if (result.ok) {
      panel.dataset.resolvedByMe = '1';
      panel.classList.add('sent');
      updateButtons(panel);
      showMessage(panel, 'good', [document.createTextNode(`Sent: “${label}”. Moving on…`)]);
      scheduleRefresh(0);
      return;
    }
    delete panel.dataset.idempotencyKey;
    if (result.status === 409) {
      const details = (result.data && result.data.error && result.data.error.details) || {};
      markStale(panel, details.resolution || null, errorMessage(result));
      return;
    }
    updateButtons(panel);
    if (result.status === 401) {
      showMessage(panel, 'bad', [document.createTextNode(
        'Your session has ended; your text is kept. Sign in again in another tab, then retry.',
      )]);
      return;
    }
    showMessage(panel, 'bad', [document.createTextNode(errorMessage(result))]);
  }

  async function showTab(panel, tab) {
    const p = parts(panel);
    const tabs = [...panel.querySelectorAll('[data-tab]')];
    for (const t of tabs) t.setAttribute('aria-selected', String(t === tab));
    for (const t of tabs) t.tabIndex = t === tab ? 0 : -1;
    const views = Object.fromEntries(tabs.map((t) => [t.dataset.tab, document.getElementById(t.getAttribute('aria-controls'))]));
    for (const [name, view] of Object.entries(views)) if (view) view.hidden = name !== tab.dataset.tab;
    if (tab.dataset.tab === 'edit') return;
    const target = views[tab.dataset.tab];
    target.replaceChildren(document.createTextNode('Rendering…'));
    const result = await call('POST', '/preview', {
      text: p.content.value,
      original: p.original ? p.original.value : '',
    });
    if (!result.ok) {
      target.replaceChildren(document.createTextNode(errorMessage(result)));
      return;
    }
    // Server-rendered: markdown-it with HTML disabled, diff lines escaped by Jinja.
    target.innerHTML = tab.dataset.tab === 'preview' ? result.data.html : result.data.diff_html;
  }

  function initPanel(panel) {
    if (panel.dataset.bound) return;
    panel.dataset.bound = '1';
    const p = parts(panel);
    if (!panel.querySelector('form.resolve')) return;
    const onEdit = () => { delete panel.dataset.idempotencyKey; updateButtons(panel); };
    if (p.content) p.content.addEventListener('input', onEdit);
    if (p.notes) p.notes.addEventListener('input', onEdit);
    for (const field of p.inputs) field.addEventListener('input', onEdit);
    panel.addEventListener('input', (event) => {
      if (event.target.name === 'comment_body') onEdit();
    });
    panel.addEventListener('click', (event) => {
      const button = event.target.closest('button[data-comment]');
      if (button && panel.contains(button)) openComment(panel, button);
    });
    for (const button of p.buttons) button.addEventListener('click', () => resolve(panel, button));
    const revert = panel.querySelector('[data-revert]');
    if (revert) {
      revert.addEventListener('click', () => {
        p.content.value = p.original.value;
        onEdit();
        p.content.focus();
      });
    }
    const tabs = [...panel.querySelectorAll('[data-tab]')];
    tabs.forEach((tab, i) => {
      tab.tabIndex = i === 0 ? 0 : -1;
      tab.addEventListener('click', () => showTab(panel, tab));
      tab.addEventListener('keydown', (event) => {
        const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
        if (!step) return;
        event.preventDefault();
        const next = tabs[(i + step + tabs.length) % tabs.length];
        next.focus();
        showTab(panel, next);
      });
    });
    panel.addEventListener('keydown', (event) => {
      if (event.key !== 'Enter' || !(event.ctrlKey || event.metaKey)) return;
      const primary = panel.querySelector('button[data-primary]');
      if (!primary || primary.disabled) return;
      event.preventDefault();
      primary.click();
    });
    panel.querySelector('form.resolve').addEventListener('submit', (event) => event.preventDefault());
    updateButtons(panel);
  }

  // -- line comments ----------------------------------------------------------------

  // A comment row under a diff line: its fields belong to the resolve form (form=…), so
  // they are posted with the decision as comment_file / comment_line / comment_body.
  function openComment(panel, button) {
    const row = button.closest('tr[data-line]');
    const table = button.closest('table[data-file]');
    const section = button.closest('[data-comment-form]');
    if (!row || !table || !section || panel.dataset.busy || panel.dataset.resolvedByMe) return;
    const formId = section.dataset.commentForm;
    const file = table.dataset.file;
    const line = row.dataset.line;
    let next = row.nextElementSibling;
    while (next && next.classList.contains('finding-row')) next = next.nextElementSibling;
    const field = (name, value) => {
      const input = document.createElement('input');
      input.type = 'hidden';
      input.name = name;
      input.value = value;
      input.setAttribute('form', formId);
      return input;
    };
    const tr = document.createElement('tr');
    tr.className = 'comment-row';
    const td = document.createElement('td');
    td.colSpan = 5;
    const label = document.createElement('label');
    const id = `c-${newKey()}`;
    label.htmlFor = id;
    label.textContent = `Comment on ${file}, line ${line}`;
    const area = document.createElement('textarea');
    area.id = id;
    area.name = 'comment_body';
    area.rows = 2;
    area.setAttribute('form', formId);
    area.dataset.commentBody = '';
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'link';
    remove.textContent = 'Remove comment';
    remove.addEventListener('click', () => {
      tr.remove();
      delete panel.dataset.idempotencyKey;
      button.focus();
    });
    td.append(label, area, field('comment_file', file), field('comment_line', line), remove);
    tr.append(td);
    row.parentElement.insertBefore(tr, next);
    area.focus();
  }

  // -- everything a fresh piece of page needs -------------------------------------

  function init(root) {
    for (const panel of root.querySelectorAll('article.checkpoint')) initPanel(panel);
    for (const details of root.querySelectorAll('details[data-panel-url]')) initLazyPanel(details);
    const diffForm = root.querySelector('form[data-diff-form]');
    if (diffForm) initDiffForm(diffForm);
    updateTimes(root);
  }

  function initLazyPanel(details) {
    if (details.dataset.bound) return;
    details.dataset.bound = '1';
    details.addEventListener('toggle', async () => {
      if (!details.open || details.dataset.loaded) return;
      details.dataset.loaded = '1';
      const slot = details.querySelector('[data-panel-slot]');
      try {
        const response = await fetch(details.dataset.panelUrl, { credentials: 'same-origin' });
        if (!response.ok) throw new Error(String(response.status));
        const template = document.createElement('template');
        template.innerHTML = await response.text(); // our own server-rendered panel
        slot.replaceChildren(template.content);
        init(slot);
        const first = slot.querySelector('textarea[data-content], button[data-action]');
        if (first) first.focus();
      } catch (_) {
        delete details.dataset.loaded;
        slot.replaceChildren(document.createTextNode('Could not load this checkpoint; close and open it again.'));
      }
    });
  }

  function initDiffForm(form) {
    if (form.dataset.bound) return;
    form.dataset.bound = '1';
    const apply = () => {
      const params = new URLSearchParams(new FormData(form));
      const url = `${location.pathname}?${params}`;
      history.replaceState(null, '', `${url}#versions`);
      DATA.refresh = url;
      scheduleRefresh(0);
    };
    form.addEventListener('change', apply);
    form.addEventListener('submit', (event) => { event.preventDefault(); apply(); });
  }

  // -- workflow-level actions (cancel, retry) ---------------------------------------

  document.addEventListener('click', async (event) => {
    const button = event.target.closest('[data-workflow-action]');
    if (!button) return;
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    const result = await call('POST', button.dataset.workflowAction);
    button.disabled = false;
    if (!result.ok) { toast(errorMessage(result)); return; }
    toast(`${button.textContent.trim()}: done.`);
    scheduleRefresh(0);
  });

  // -- live regions --------------------------------------------------------------

  let refreshTimer = null;
  let refreshing = false;
  let refreshAgain = false;
  let lastEventId = Number(DATA.after || 0);
  let progressBuffer = [];

  function scheduleRefresh(delay) {
    if (refreshTimer !== null) return;
    refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, delay === undefined ? 150 : delay);
  }

  async function refresh() {
    if (refreshing) { refreshAgain = true; return; }
    refreshing = true;
    try {
      const url = new URL(DATA.refresh || location.pathname + location.search, location.href);
      url.searchParams.set('partial', '1');
      const result = await call('GET', url.pathname + url.search);
      if (result.status === 401) {
        setConnection('Your session has ended.', true);
        return;
      }
      if (!result.ok || !result.data || !result.data.regions) {
        setConnection(`Could not refresh the page: ${errorMessage(result)}`);
        return;
      }
      setConnection(null);
      for (const [name, html] of Object.entries(result.data.regions)) {
        const region = document.querySelector(`[data-region="${CSS.escape(name)}"]`);
        if (region) patch(region, html);
      }
      const seen = Number(result.data.last_event_id || 0);
      progressBuffer = progressBuffer.filter((ev) => ev.id > seen);
      for (const ev of progressBuffer) appendProgress(ev);
    } finally {
      refreshing = false;
      if (refreshAgain) { refreshAgain = false; scheduleRefresh(); }
    }
  }

  function patch(region, html) {
    const focused = region.contains(document.activeElement) ? document.activeElement.id : '';
    const openState = new Map(
      [...region.querySelectorAll('details[id]')].map((d) => [d.id, d.open]),
    );
    const kept = new Map(
      [...region.querySelectorAll('[data-keep-key]')].map((n) => [n.dataset.keepKey, n]),
    );
    const homes = new Map([...kept.values()].map((n) => [n, n.parentElement]));
    const template = document.createElement('template');
    template.innerHTML = html; // our own server-rendered fragment
    const fresh = template.content;
    for (const node of fresh.querySelectorAll('[data-keep-key]')) {
      const old = kept.get(node.dataset.keepKey);
      if (old && !node.parentElement?.closest('[data-keep-key]')) node.replaceWith(old);
    }
    region.replaceChildren(fresh);
    // Kept nodes that vanished, still holding the person's unsent text, stay.
    const vanished = [...kept.values()].filter((n) => !n.isConnected);
    const topmost = vanished.filter((n) => !vanished.some((o) => o !== n && o.contains(n)));
    for (const node of topmost.reverse()) {
      const panels = [...node.querySelectorAll('article.checkpoint')];
      if (node.matches('article.checkpoint')) panels.push(node);
      const dirty = panels.filter(isDirty);
      if (!dirty.length) continue;
      const home = homes.get(node);
      const selector = home && home !== region
        ? [home.tagName.toLowerCase(), ...home.classList].map(CSS.escape).join('.') : '';
      const again = selector ? region.querySelector(selector) : null;
      (again || region).prepend(node);
      for (const panel of dirty) resolvedElsewhere(panel);
    }
    for (const details of region.querySelectorAll('details[id]')) {
      if (openState.has(details.id)) details.open = openState.get(details.id);
    }
    init(region);
    if (focused) {
      const again = document.getElementById(focused);
      if (again && again !== document.activeElement) again.focus();
    }
  }

  function appendProgress(ev) {
    const data = ev.data || {};
    const list = document.querySelector(`[data-run-progress="${CSS.escape(String(data.agent_run_id || ''))}"]`);
    if (!list) return;
    for (const line of data.lines || []) {
      const item = document.createElement('li');
      const kind = String(line.kind || '').replace(/[^a-z_-]/gi, '');
      if (kind) item.className = `progress-${kind}`;
      item.textContent = String(line.text || '');
      list.append(item);
    }
    while (list.children.length > PROGRESS_KEEP) list.firstElementChild.remove();
  }

  // -- the inbox count: the badge, the tab title, browser notifications ----------------
  //
  // The count comes from a small JSON endpoint, asked again on every checkpoint event
  // the page's stream brings and when the next snoozed checkpoint comes back. The
  // notifications are opt-in ("Notify me"), remembered in localStorage.

  const BASE_TITLE = document.title;
  const COUNT_URL = '/api/checkpoints/count';
  const NOTIFY_KEY = 'orchestra.notify';
  const INBOX_EVENTS = new Set([
    EVENTS.CHECKPOINT_CREATED, EVENTS.CHECKPOINT_STATUS_CHANGED, EVENTS.CHECKPOINT_SNOOZED,
  ]);
  const COUNTED = DATA.page !== 'login' && DATA.page !== 'error';
  let countTimer = null;
  let wakeTimer = null;
  let counting = false;
  let countAgain = false;

  function showCount(pendingCount, snoozedCount, cap) {
    // Counts stop past the cap (the server says where): "1000+".
    const shown = (n) => (cap && n > cap ? `${cap}+` : String(n));
    const pending = shown(pendingCount);
    const snoozed = shown(snoozedCount);
    document.title = pendingCount > 0 ? `(${pending}) ${BASE_TITLE}` : BASE_TITLE;
    const badge = document.querySelector('[data-region="inbox_count"]');
    if (badge) {
      badge.replaceChildren();
      if (pendingCount > 0) {
        const el = document.createElement('span');
        el.className = 'count';
        el.textContent = pending;
        el.setAttribute('aria-label', `${pending} waiting`);
        badge.append(document.createTextNode(' '), el);
      }
    }
    for (const el of document.querySelectorAll('[data-count="waiting"]')) el.textContent = pending;
    for (const el of document.querySelectorAll('[data-count="snoozed"]')) el.textContent = snoozed;
  }

  function scheduleWake(at) {
    clearTimeout(wakeTimer);
    const ms = at ? Date.parse(at) - Date.now() : NaN;
    if (Number.isNaN(ms)) return;
    // A snoozed checkpoint comes back by a query, not an event: look again then.
    wakeTimer = setTimeout(() => {
      scheduleCount(0);
      if (DATA.page === 'inbox') scheduleRefresh(0);
    }, Math.min(Math.max(ms + 250, 0), 2147483647));
  }

  async function refreshCount() {
    if (counting) { countAgain = true; return; }
    counting = true;
    try {
      const result = await call('GET', COUNT_URL);
      if (!result.ok || !result.data) return;
      const data = result.data;
      showCount(Number(data.pending || 0), Number(data.snoozed || 0), Number(data.capped_at || 0));
      scheduleWake(result.data.next_wake_at);
    } finally {
      counting = false;
      if (countAgain) { countAgain = false; scheduleCount(0); }
    }
  }

  function scheduleCount(delay) {
    if (!COUNTED || countTimer !== null) return;
    countTimer = setTimeout(() => { countTimer = null; refreshCount(); }, delay === undefined ? 150 : delay);
  }

  function notifying() {
    return Boolean(window.Notification) && Notification.permission === 'granted'
      && localStorage.getItem(NOTIFY_KEY) === '1';
  }

  function initNotify() {
    const button = document.querySelector('[data-notify]');
    if (!button || !window.Notification) return;
    const label = () => {
      const on = notifying();
      button.textContent = on ? 'Notifications on' : 'Notify me';
      button.setAttribute('aria-pressed', String(on));
      button.title = on
        ? 'Browser notifications are on while a dashboard tab is open; click to turn them off'
        : 'Get a browser notification when a decision is needed';
    };
    button.hidden = false;
    label();
    button.addEventListener('click', async () => {
      if (notifying()) {
        localStorage.removeItem(NOTIFY_KEY);
        label();
        return;
      }
      let permission = Notification.permission;
      if (permission !== 'granted') permission = await Notification.requestPermission();
      if (permission === 'granted') {
        localStorage.setItem(NOTIFY_KEY, '1');
        toast('You will get a browser notification when a decision is needed (while a dashboard tab is open).');
      } else {
        toast('This browser blocks notifications from this site; allow them in its site settings.');
      }
      label();
    });
  }

  async function notifyCheckpoint(checkpointId) {
    if (!notifying() || !checkpointId) return;
    const result = await call('GET', `/api/checkpoints/${encodeURIComponent(checkpointId)}`);
    const cp = result.ok ? result.data : null;
    if (!cp || cp.status !== DATA.vocabulary.checkpointStatus.PENDING) return;
    try {
      const note = new Notification(`Decision needed: ${cp.title}`, {
        body: cp.summary || cp.instructions.slice(0, 200),
        tag: `orchestra-${cp.id}`, // one per checkpoint, however many tabs are open
      });
      note.addEventListener('click', () => {
        window.focus();
        location.href = `/workflows/${encodeURIComponent(cp.workflow_id)}#decide`;
        note.close();
      });
    } catch (err) {
      // Some browsers (on phones) only notify from a service worker: say so once.
      toast(`Could not show a notification here: ${err.message || err}`);
    }
  }

  // A row's snooze buttons: sent by the script so the page stays where it is.
  document.addEventListener('submit', async (event) => {
    const form = event.target.closest('form[data-snooze]');
    if (!form) return;
    event.preventDefault();
    const body = new URLSearchParams();
    for (const [name, value] of new FormData(form)) {
      if (typeof value === 'string') body.append(name, value);
    }
    const button = event.submitter;
    body.set('until', button ? button.value : '');
    for (const b of form.querySelectorAll('button')) b.disabled = true;
    const result = await call('POST', form.getAttribute('action'), body);
    for (const b of form.querySelectorAll('button')) b.disabled = false;
    if (!result.ok) { toast(errorMessage(result)); scheduleRefresh(0); return; }
    const until = result.data && result.data.snoozed_until;
    toast(until ? `Snoozed until ${new Date(until).toLocaleString()}.` : 'Back in the inbox.');
    const row = form.closest('[data-keep-key]');
    if (row) row.remove();
    scheduleRefresh(0);
    scheduleCount(0);
  });

  // -- the event stream ------------------------------------------------------------

  let source = null;
  let backoff = 1000;
  let lostAt = 0;

  function onEvent(message) {
    const id = Number(message.lastEventId || 0);
    if (id && id <= lastEventId) return; // already seen (a replay after reconnecting)
    if (id) lastEventId = id;
    let ev;
    try { ev = JSON.parse(message.data); } catch (_) { return; }
    if (ev.type === EVENTS.AGENT_PROGRESS) {
      progressBuffer.push(ev);
      if (progressBuffer.length > 1000) progressBuffer = progressBuffer.slice(-500);
      appendProgress(ev);
      return;
    }
    if (INBOX_EVENTS.has(ev.type)) {
      scheduleCount();
      if (ev.type === EVENTS.CHECKPOINT_CREATED) notifyCheckpoint(ev.data && ev.data.checkpoint_id);
    }
    scheduleRefresh();
  }

  function connect() {
    if (!DATA.stream || !window.EventSource) return;
    const url = new URL(DATA.stream, location.href);
    url.searchParams.set('after', String(lastEventId));
    source = new EventSource(url.pathname + url.search);
    for (const type of Object.values(EVENTS)) source.addEventListener(type, onEvent);
    source.addEventListener('message', onEvent);
    source.addEventListener('open', () => {
      backoff = 1000;
      if (lostAt) { lostAt = 0; setConnection(null); scheduleRefresh(0); }
    });
    source.addEventListener('error', () => {
      if (!lostAt) lostAt = Date.now();
      setConnection('Live updates interrupted — reconnecting…');
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        setTimeout(connect, backoff);
        backoff = Math.min(backoff * 2, 30000);
      }
    });
  }

  // -- page start ------------------------------------------------------------------

  function openFromHash() {
    const id = decodeURIComponent(location.hash.slice(1));
    const target = id && document.getElementById(id);
    if (!target) return;
    const details = target.closest('details');
    if (details) details.open = true;
  }

  document.addEventListener('click', (event) => {
    const link = event.target.closest('[data-open]');
    if (!link) return;
    const details = document.getElementById(link.dataset.open);
    if (details) details.open = true;
  });
  window.addEventListener('hashchange', openFromHash);
  window.addEventListener('beforeunload', (event) => {
    if ([...document.querySelectorAll('article.checkpoint')].some(isDirty)) {
      event.preventDefault();
      event.returnValue = '';
    }
  });

  // What works only with this script (comment buttons under diff lines) shows from now.
  document.documentElement.classList.add('js');
  init(document);
  openFromHash();
  setInterval(() => updateTimes(document), 1000);
  initNotify();
  scheduleCount(0);
  // A workflow's page hears only its own workflow's events: ask for the count now and then.
  if (COUNTED && DATA.stream !== '/api/events/stream') setInterval(() => scheduleCount(0), 60000);
  connect();
  window.orchestra = { refresh: () => scheduleRefresh(0), lastEventId: () => lastEventId };
})();
