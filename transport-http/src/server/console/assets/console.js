// The operator's console: polls the mediator for its state, draws the
// node list and the charts, and carries the operator's actions. Payloads
// of test requests are sealed and replies opened here, with WebCrypto, in
// the mediator's sealed format; the node key never leaves the page.
'use strict';

(() => {
  const POLL_MS = 2000;
  // The width of one step of the charts' series, as the server sends them.
  const SERIES_STEP_S = 10;
  // How long the message an action leaves stays, over the polls that follow.
  const FLASH_MS = 10000;
  const $ = (id) => document.getElementById(id);
  const SVG = 'http://www.w3.org/2000/svg';

  let state = JSON.parse($('initial-state').textContent);
  let session = { csrf: null, sender: null, by: '' };
  let timer = null;
  const rows = new Map();

  // ------------------------------------------------------------ helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else node.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) {
      if (c !== null && c !== undefined) node.append(c);
    }
    return node;
  }

  async function api(path, options) {
    const opts = options || {};
    const headers = { accept: 'application/json' };
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    if (opts.method === 'POST' && session.csrf) headers['x-csrf-token'] = session.csrf;
    const response = await fetch('console/' + path, {
      method: opts.method || 'GET',
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      headers,
      credentials: 'same-origin',
      cache: 'no-store',
    });
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (!response.ok) {
      const e = new Error((body && body.error) || (response.status + ' ' + response.statusText));
      e.status = response.status;
      throw e;
    }
    return body;
  }

  function duration(seconds) {
    if (seconds < 60) return Math.floor(seconds) + ' s';
    if (seconds < 3600) return Math.floor(seconds / 60) + ' min';
    if (seconds < 172800) return (seconds / 3600).toFixed(1) + ' h';
    return Math.floor(seconds / 86400) + ' d';
  }

  function ago(ms, now) {
    if (!ms) return '–';
    const s = Math.max(0, (now - ms) / 1000);
    return s < 2 ? 'just now' : duration(s) + ' ago';
  }

  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  }

  // ------------------------------------------------------------- nodes

  const COLUMNS = ['Group', 'Name', 'Health', 'Transport', 'Endpoint', 'Lease left',
    'Last seen', 'In flight', 'Requests', 'Errors', 'Actions'];

  function healthBadge(node) {
    const recent = el('span', { class: 'recent', 'aria-hidden': 'true' });
    for (const outcome of (node.recent || []).slice(0, 8).reverse()) {
      recent.append(el('i', { class: outcome, title: outcome }));
    }
    return el('span', {},
      el('span', { class: 'health ' + node.health, 'data-health': node.health, text: node.health }),
      recent);
  }

  function deregisterButton(node, after) {
    const button = el('button', {
      type: 'button', class: 'danger', 'data-action': 'deregister',
      'aria-label': 'Deregister ' + node.key, text: 'Deregister',
    });
    let armed = null;
    button.addEventListener('click', async () => {
      // A first press arms the button, a second within 5 s acts: a slip
      // of the keyboard does not remove a node.
      if (!armed) {
        button.textContent = 'Confirm';
        button.setAttribute('aria-label', 'Confirm: deregister ' + node.key);
        button.title = 'A running node registers again at its next renewal';
        armed = setTimeout(() => {
          armed = null;
          button.textContent = 'Deregister';
          button.setAttribute('aria-label', 'Deregister ' + node.key);
        }, 5000);
        return;
      }
      clearTimeout(armed);
      armed = null;
      button.disabled = true;
      try {
        await api('api/nodes/' + node.id + '/deregister', { method: 'POST', body: {} });
        // A node that is still running renews its lease and so registers
        // again: say so, rather than let the row come back unexplained.
        flash(node.key + ' deregistered; if it is still running it registers again at its '
          + 'next renewal — stop the node to keep it away');
        if (after) after();
        poll();
      } catch (e) {
        button.disabled = false;
        button.textContent = 'Deregister';
        flash('Could not deregister ' + node.key + ': ' + e.message, true);
      }
    });
    return button;
  }

  function cells(node, now) {
    return [
      el('span', { text: node.group }),
      el('a', { href: '#/node/' + node.id, text: node.name === null ? '(unnamed)' : node.name,
        'aria-label': 'Details of ' + node.key }),
      healthBadge(node),
      el('span', { text: node.transport }),
      el('code', { text: node.endpoint, title: node.endpoint }),
      el('span', { text: duration(node.lease_left_s) }),
      el('span', { text: ago(node.last_seen, now) }),
      el('span', { text: String(node.in_flight) }),
      el('span', { text: String(node.requests) }),
      el('span', { text: String(node.errors) }),
      null,
    ];
  }

  function renderRow(node, now) {
    let tr = rows.get(node.id);
    if (!tr) {
      tr = el('tr', { 'data-id': String(node.id) });
      COLUMNS.forEach((label, i) => {
        const cls = [7, 8, 9].includes(i) ? 'num' : (i === 4 ? 'endpoint' : (i === 2 ? 'health-cell' : null));
        tr.append(el('td', { 'data-label': label, class: cls }));
      });
      tr.lastChild.append(deregisterButton(node));
      rows.set(node.id, tr);
    }
    tr.setAttribute('data-key', node.key);
    const content = cells(node, now);
    content.forEach((c, i) => {
      if (c === null) return;
      const td = tr.children[i];
      // Only what changed is replaced, so keyboard focus stays put.
      const old = td.firstChild;
      if (!old || old.outerHTML !== c.outerHTML) td.replaceChildren(c);
    });
    return tr;
  }

  function renderNodes() {
    const tbody = $('node-rows');
    const wantedGroup = $('filter-group').value;
    const wantedName = $('filter-name').value.trim().toLowerCase();
    const nodes = state.nodes
      .filter((n) => !wantedGroup || n.group === wantedGroup)
      .filter((n) => !wantedName || (n.name || '').toLowerCase().includes(wantedName)
        || n.key.toLowerCase().includes(wantedName))
      .sort((a, b) => a.group.localeCompare(b.group) || (a.name || '').localeCompare(b.name || ''));
    const keep = new Set(nodes.map((n) => n.id));
    for (const [id, tr] of rows) {
      if (!keep.has(id)) { tr.remove(); rows.delete(id); }
    }
    const empty = tbody.querySelector('tr.empty');
    if (empty) empty.remove();
    nodes.forEach((node, i) => {
      const tr = renderRow(node, state.now);
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    if (nodes.length === 0) {
      tbody.append(el('tr', { class: 'empty' }, el('td', { colspan: '11',
        text: state.nodes.length ? 'No node matches the filter.' : 'No node is registered.' })));
    }
    const total = state.nodes.length;
    $('node-count').textContent = nodes.length === total ? '(' + total + ')' : '(' + nodes.length + ' of ' + total + ')';
    $('truncated').hidden = !state.truncated;
    renderGroupChoices();
  }

  function renderInstances() {
    const list = state.instances || [];
    const rows = list.map((i) => el('tr', { class: i.this ? 'this' : null, 'data-instance': i.id },
      el('td', {}, el('code', { text: i.id }), i.this ? el('span', { class: 'count', text: ' (this one)' }) : null),
      el('td', {}, i.peer ? el('code', { text: i.peer }) : el('span', { class: 'note', text: 'takes no forwarded calls' })),
      el('td', {}, el('span', { class: 'health ' + (i.live ? 'ok' : 'unreachable'), text: i.live ? 'live' : 'lease ran out' })),
      el('td', { class: 'num', text: String(i.attached) }),
      el('td', { text: clock(i.started) }),
      el('td', { text: ago(i.heartbeat, state.now) })));
    if (rows.length === 0) {
      rows.push(el('tr', { class: 'empty' }, el('td', { colspan: '6', text: 'This store keeps no instances.' })));
    }
    $('instance-rows').replaceChildren(...rows);
    $('instance-count').textContent = '(' + list.length + ')';
  }

  function renderGroupChoices() {
    const select = $('filter-group');
    const names = new Set(state.nodes.map((n) => n.group));
    for (const g of state.groups) names.add(g.group);
    if (select.value) names.add(select.value);
    const wanted = [''].concat([...names].sort());
    const have = [...select.options].map((o) => o.value);
    if (wanted.join('\n') === have.join('\n')) return;
    const chosen = select.value;
    select.replaceChildren(...wanted.map((g) => el('option', { value: g, text: g || 'all groups' })));
    select.value = chosen;
  }

  // ------------------------------------------------------------ charts

  /** The smallest of 1, 2 or 5 times a power of ten at or above `v`: a
   * scale's top that halves into a readable number. */
  function niceCeil(v) {
    const power = Math.pow(10, Math.floor(Math.log10(v)));
    return [1, 2, 5, 10].map((m) => m * power).find((n) => n >= v * (1 - 1e-9));
  }

  function sparkline(kind, title, values, format, fixedMax) {
    const width = 300;
    const height = 56;
    const present = values.filter((v) => v !== null && v !== undefined);
    const max = fixedMax || niceCeil(Math.max(1e-9, ...present) * 1.15);
    const x = (i) => (i / Math.max(1, values.length - 1)) * width;
    const y = (v) => height - 2 - (v / max) * (height - 4);
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', '0 0 ' + width + ' ' + height);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('role', 'img');
    const last = present.length ? present[present.length - 1] : null;
    const peak = present.length ? Math.max(...present) : null;
    svg.setAttribute('aria-label', title + ': now ' + format(last) + ', peak ' + format(peak));
    const grid = document.createElementNS(SVG, 'line');
    for (const [k, v] of [['x1', 0], ['x2', width], ['y1', height / 2], ['y2', height / 2], ['class', 'grid']]) grid.setAttribute(k, v);
    svg.append(grid);
    // One path per run of values, so a step without data leaves a gap.
    let line = '';
    let area = '';
    let run = [];
    const flush = () => {
      if (!run.length) return;
      // A lone step is drawn one step wide, so it reads as a level rather
      // than a dot.
      if (run.length === 1) run.unshift([run[0][0] - 1, run[0][1]]);
      line += 'M' + run.map(([i, v]) => x(i).toFixed(1) + ' ' + y(v).toFixed(1)).join('L');
      area += 'M' + x(run[0][0]).toFixed(1) + ' ' + height + 'L'
        + run.map(([i, v]) => x(i).toFixed(1) + ' ' + y(v).toFixed(1)).join('L')
        + 'L' + x(run[run.length - 1][0]).toFixed(1) + ' ' + height + 'Z';
      run = [];
    };
    values.forEach((v, i) => { if (v === null || v === undefined) flush(); else run.push([i, v]); });
    flush();
    for (const [cls, d] of [['area', area], ['line', line]]) {
      if (!d) continue;
      const path = document.createElementNS(SVG, 'path');
      path.setAttribute('class', cls);
      path.setAttribute('d', d);
      svg.append(path);
    }
    // The latest value as a dot, so a lone step with data still shows.
    const lastIndex = values.map((v) => v !== null && v !== undefined).lastIndexOf(true);
    if (lastIndex >= 0) {
      const dot = document.createElementNS(SVG, 'circle');
      for (const [k, v] of [['cx', x(lastIndex)], ['cy', y(values[lastIndex])], ['r', 3], ['class', 'dot']]) dot.setAttribute(k, v);
      svg.append(dot);
    }
    // Axes in HTML beside the drawing, which is stretched to its box and
    // would stretch any text drawn in it: the value scale on the left, the
    // time along the bottom.
    const yaxis = el('div', { class: 'yaxis', 'aria-hidden': 'true' },
      el('span', { text: format(max) }), el('span', { text: format(max / 2) }), el('span', { text: format(0) }));
    const minutes = Math.round(((values.length - 1) * SERIES_STEP_S) / 60);
    const xaxis = el('div', { class: 'xaxis', 'aria-hidden': 'true' },
      ...[3, 2, 1].map((part) => el('span', { text: '−' + Math.round((minutes * part) / 3) + ' min' })),
      el('span', { text: 'now' }));
    return el('div', { class: 'chart ' + kind },
      el('div', { class: 'label' }, el('span', { text: title }), el('span', { text: 'now ' + format(last) + ' · peak ' + format(peak) })),
      el('div', { class: 'plot' }, yaxis, svg),
      xaxis);
  }

  const fmtRps = (v) => (v === null ? '–' : (v < 10 ? v.toFixed(1) : Math.round(v)) + '/s');
  const fmtRate = (v) => (v === null ? '–' : (v * 100).toFixed(v < 0.1 && v > 0 ? 1 : 0) + ' %');
  const fmtMs = (v) => (v === null ? '–' : (v >= 1000 ? (v / 1000).toFixed(1) + ' s' : v + ' ms'));

  function groupCharts(group, series, members) {
    const box = el('div', { class: 'chart-group', 'data-group': group },
      el('h3', {}, document.createTextNode(group + ' '),
        el('span', { class: 'count', text: members === null ? '' : '(' + members + (members === 1 ? ' node)' : ' nodes)') })));
    if (!series) {
      box.append(el('p', { class: 'note', text: 'No delivery to this group yet.' }));
      return box;
    }
    box.append(
      sparkline('rps', 'Requests per second', series.rps, fmtRps),
      sparkline('err', 'Error rate', series.error_rate, fmtRate, 1),
      sparkline('p99', 'p99 latency', series.p99_ms, fmtMs));
    return box;
  }

  function renderCharts() {
    const wanted = $('filter-group').value;
    const groups = state.groups.filter((g) => !wanted || g.group === wanted);
    const charts = $('charts');
    charts.replaceChildren(...groups.map((g) => groupCharts(g.group, g.series, g.nodes)));
    if (!groups.length) charts.append(el('p', { class: 'note', text: 'No group to chart yet.' }));
    if (state.more_groups > 0 && !wanted) {
      charts.append(el('p', { class: 'note', text: state.more_groups + ' quieter groups not charted; choose one above.' }));
    }
  }

  // ----------------------------------------------------------- details

  async function renderDetails(id) {
    let data;
    try {
      data = await api('api/nodes/' + encodeURIComponent(id));
    } catch (e) {
      $('details-title').textContent = 'Node ' + id;
      $('details-body').replaceChildren(el('p', { class: 'problem', text: e.status === 404 ? 'This node is no longer registered.' : e.message }));
      return;
    }
    const n = data.node;
    $('details-title').textContent = n.key;
    const facts = el('dl', { class: 'facts' });
    const add = (k, v) => facts.append(el('dt', { text: k }), el('dd', {}, v));
    add('Health', healthBadge(n));
    add('Registration id', el('span', { text: String(n.id) }));
    add('Transport', el('span', { text: n.transport }));
    add('Endpoint', el('code', { text: n.endpoint }));
    add('Registered', el('span', { text: new Date(data.created).toLocaleString() }));
    add('Renewed', el('span', { text: data.updated ? new Date(data.updated).toLocaleString() : '–' }));
    add('Lease left', el('span', { text: duration(n.lease_left_s) + ' (until ' + new Date(n.lease_until).toLocaleString() + ')' }));
    add('Last seen', el('span', { text: ago(n.last_seen, state.now) }));
    add('Last delivery', el('span', { text: ago(n.last_delivery, state.now) }));
    add('In flight', el('span', { text: String(n.in_flight) }));
    add('Requests / errors', el('span', { text: n.requests + ' / ' + n.errors }));
    add('Last outcomes', el('span', { text: (n.recent || []).join(', ') || '–' }));
    const meta = Object.entries(data.meta || {});
    add('Meta', meta.length ? el('code', { text: meta.map(([k, v]) => k + '=' + v).join(' ') }) : el('span', { text: '–' }));
    $('details-body').replaceChildren(
      facts,
      deregisterButton(n, () => { location.hash = ''; }),
      el('h3', { text: 'Group ' + n.group + ', last 15 minutes' }),
      groupCharts(n.group, data.group_series, null));
  }

  function route() {
    const match = /^#\/node\/(\d+)$/.exec(location.hash);
    $('details').hidden = !match;
    $('overview').hidden = !!match;
    if (match) {
      renderDetails(match[1]);
      $('back').focus();
    }
  }

  // ------------------------------------------------------------ polling

  function render() {
    $('updated').textContent = 'updated ' + clock(state.now);
    renderNodes();
    renderInstances();
    renderCharts();
  }

  async function poll() {
    clearTimeout(timer);
    const group = $('filter-group').value;
    try {
      state = await api('api/state' + (group ? '?group=' + encodeURIComponent(group) : ''));
      // A message an action left stays long enough to be read.
      if (Date.now() >= flashUntil) {
        $('conn').textContent = '';
        $('conn').className = 'conn';
      }
      render();
      const match = /^#\/node\/(\d+)$/.exec(location.hash);
      if (match) await renderDetails(match[1]);
    } catch (e) {
      if (e.status === 401) {
        // The session ended (signed out elsewhere, expired): back to sign-in.
        location.replace(location.pathname);
        return;
      }
      $('conn').textContent = 'connection lost, retrying…';
      $('conn').className = 'conn down';
    }
    timer = setTimeout(poll, POLL_MS);
  }

  /** Until when the last action's message is kept over the poll's. */
  let flashUntil = 0;

  function flash(text, bad) {
    flashUntil = Date.now() + FLASH_MS;
    const box = $('conn');
    box.textContent = text;
    box.className = bad ? 'conn down' : 'conn';
  }

  // ------------------------------------------------------------ sealing

  const utf8 = new TextEncoder();
  const fromUtf8 = new TextDecoder('utf-8', { fatal: false });

  function fromBase64(text) {
    const bin = atob(text.replace(/\s+/g, ''));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  }

  function toBase64(bytes) {
    let bin = '';
    for (let i = 0; i < bytes.length; i += 0x8000) {
      bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    }
    return btoa(bin);
  }

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  }

  // The AAD: the label, the sender (empty for none), the target as the
  // mediator writes it and the path without its query, each preceded by
  // its length as a 32-bit big-endian number.
  function aad(from, target, path) {
    const bare = path.split('?')[0];
    return concat(...['mediator/1', from || '', target, bare].map((field) => {
      const bytes = utf8.encode(field);
      const len = new Uint8Array(4);
      new DataView(len.buffer).setUint32(0, bytes.length, false);
      return concat(len, bytes);
    }));
  }

  async function importKey(text) {
    if (!window.crypto || !crypto.subtle) {
      throw new Error('this browser offers WebCrypto only over HTTPS or on localhost');
    }
    let raw;
    try { raw = fromBase64(text.trim()); } catch (_) { throw new Error('the node key is not base64'); }
    if (raw.length !== 32) throw new Error('a node key is 32 bytes; this one is ' + raw.length);
    const gcm = await crypto.subtle.importKey('raw', raw, 'AES-GCM', false, ['encrypt', 'decrypt']);
    // The key id is the key check value: the first 4 bytes of AES of a
    // zero block, which is the first block of AES-CBC over a zero block
    // with a zero IV (WebCrypto offers no bare AES).
    const cbc = await crypto.subtle.importKey('raw', raw, 'AES-CBC', false, ['encrypt']);
    const block = await crypto.subtle.encrypt({ name: 'AES-CBC', iv: new Uint8Array(16) }, cbc, new Uint8Array(16));
    return { gcm, id: new Uint8Array(block).slice(0, 4) };
  }

  async function seal(key, plaintext, ad) {
    const nonce = crypto.getRandomValues(new Uint8Array(12));
    const ct = await crypto.subtle.encrypt({ name: 'AES-GCM', iv: nonce, additionalData: ad, tagLength: 128 }, key.gcm, plaintext);
    return concat(Uint8Array.of(1), key.id, nonce, new Uint8Array(ct));
  }

  async function open(key, sealed, ad) {
    if (sealed.length < 33 || sealed[0] !== 1) throw new Error('not a sealed payload');
    if (!sealed.subarray(1, 5).every((b, i) => b === key.id[i])) throw new Error('sealed under another key');
    const plain = await crypto.subtle.decrypt(
      { name: 'AES-GCM', iv: sealed.subarray(5, 17), additionalData: ad, tagLength: 128 },
      key.gcm, sealed.subarray(17));
    return new Uint8Array(plain);
  }

  async function shownReply(key, node, path, status, body) {
    const bytes = fromBase64(body);
    try {
      const plain = await open(key, bytes, aad(node, session.sender || '', path));
      return { text: fromUtf8.decode(plain), opened: true };
    } catch (e) {
      // Refusals from a node or the mediator come unsealed.
      return { text: fromUtf8.decode(bytes), opened: false, why: e.message || 'does not open' };
    }
  }

  function replyBox(node, status, shown) {
    const ok = status < 400 && shown.opened;
    // A refusal is never sealed, whoever sends it: say so rather than
    // suggest the page failed to open it.
    const how = shown.opened ? ' · opened'
      : status >= 400 ? ' · refused (a refusal comes unsealed)'
        : ' · does not open with this key (' + shown.why + ')';
    return el('div', { class: 'reply' + (ok ? '' : ' failed'), 'data-node': node },
      el('div', {}, el('strong', { text: node }), document.createTextNode(' · status ' + status + how)),
      el('pre', { class: 'reply-text', text: shown.text }));
  }

  async function sendTest(event) {
    event.preventDefault();
    const out = $('send-result');
    const button = event.submitter || $('send-form').querySelector('button');
    button.disabled = true;
    out.replaceChildren(el('p', { text: 'Sending…' }));
    try {
      const target = $('send-target').value.trim();
      const path = $('send-path').value.trim() || '/';
      const key = await importKey($('send-key').value);
      const sealed = await seal(key, utf8.encode($('send-payload').value), aad(session.sender, target, path));
      const answer = await api('api/send', { method: 'POST', body: { target, path, body: toBase64(sealed) } });
      if (answer.kind === 'one') {
        const shown = await shownReply(key, answer.node, path, answer.status, answer.body);
        out.replaceChildren(replyBox(answer.node, answer.status, shown));
      } else {
        const s = answer.summary;
        const boxes = [el('p', { class: 'summary', text: 'asked ' + s.asked + ' · answered ' + s.answered
          + ' · failed ' + s.failed + ' · timed out ' + s.timed_out })];
        for (const entry of answer.entries) {
          if (entry.error) {
            boxes.push(el('div', { class: 'reply failed', 'data-node': entry.node },
              el('strong', { text: entry.node }), document.createTextNode(' · ' + entry.error.kind + ': ' + entry.error.error)));
          } else {
            boxes.push(replyBox(entry.node, entry.status, await shownReply(key, entry.node, path, entry.status, entry.body)));
          }
        }
        out.replaceChildren(...boxes);
      }
    } catch (e) {
      out.replaceChildren(el('p', { class: 'problem', text: e.message }));
    } finally {
      button.disabled = false;
      poll();
    }
  }

  async function mintToken(event) {
    event.preventDefault();
    const out = $('mint-result');
    try {
      const ttl = parseInt($('mint-ttl').value, 10);
      const answer = await api('api/token', { method: 'POST', body: {
        node: $('mint-node').value.trim() || null,
        scope: $('mint-scope').value.trim() || null,
        admin: $('mint-admin').checked,
        ttl_s: Number.isFinite(ttl) ? ttl : null,
      } });
      out.replaceChildren(
        el('p', { text: 'Expires ' + new Date(answer.exp * 1000).toLocaleString()
          + (answer.capped ? ' (cut short: no token outlives the sign-in that mints it)' : '')
          + (answer.sub ? ' · for ' + answer.sub : '') + (answer.scope ? ' · scope ' + answer.scope.join(', ') : '') }),
        el('pre', { id: 'minted-token', text: answer.token, tabindex: '0', 'aria-label': 'The minted token' }));
    } catch (e) {
      out.replaceChildren(el('p', { class: 'problem', text: e.message }));
    }
  }

  async function signOut() {
    try {
      await api('sign-out', { method: 'POST', body: {} });
    } catch (e) {
      if (e.status !== 401) { flash('Could not sign out: ' + e.message, true); return; }
    }
    location.replace(location.pathname);
  }

  // -------------------------------------------------------------- start

  async function start() {
    render();
    try {
      session = await api('api/session');
      const as = session.sender ? 'requests go out as ' + session.sender : 'requests go out without a sender';
      $('who').textContent = 'signed in (' + session.by + ') · ' + as;
      if (!session.csrf) {
        // Basic or bearer in the browser: reading works, acting needs a session.
        for (const id of ['send-form', 'mint-form']) {
          for (const b of $(id).querySelectorAll('button')) b.disabled = true;
        }
        $('sign-out').hidden = true;
      }
    } catch (e) {
      $('who').textContent = '';
    }
    $('sign-out').addEventListener('click', signOut);
    $('send-form').addEventListener('submit', sendTest);
    $('mint-form').addEventListener('submit', mintToken);
    $('filters').addEventListener('submit', (e) => e.preventDefault());
    $('filter-name').addEventListener('input', renderNodes);
    $('filter-group').addEventListener('change', () => { render(); poll(); });
    $('back').addEventListener('click', (e) => { e.preventDefault(); location.hash = ''; });
    window.addEventListener('hashchange', route);
    route();
    timer = setTimeout(poll, POLL_MS);
  }

  start();
})();
