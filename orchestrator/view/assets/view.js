/* tinyfleet run viewer. Draws a view document (orchestrator/view/document.py): the plan's DAG
   laid out by dagre, a step panel, totals and a timeline; in a served live page it follows the
   run's events over server-sent events. Every string from the run is set with textContent. */
(function () {
  'use strict';
  var MAX_NODES = 400;          // above this many steps the DAG is drawn as groups (skill x state)
  var RENDER_EVERY_MS = 250;    // live redraws at most this often
  var BOOT = JSON.parse(document.getElementById('tf-boot').textContent);
  var TIERS = { trm: '#60a5fa', hrm: '#a78bfa', cfc: '#2dd4bf', ltc: '#38bdf8', 'llm-small': '#fbbf24', llm: '#fbbf24',
    large: '#f87171', exact: '#cbd5e1', bfs: '#cbd5e1', solver: '#cbd5e1', greedy: '#a3e635', classic: '#fdba74' };
  var PALETTE = ['#f9a8d4', '#86efac', '#fde68a', '#c4b5fd', '#93c5fd', '#fca5a5', '#5eead4', '#d9f99d', '#fdba74', '#a5b4fc'];

  var doc = null, details = {}, served = BOOT.mode === 'served';
  var steps = new Map(), order = [];
  var liveTrials = new Map(), segments = [], openSeg = new Map(), escalations = new Map();
  var selected = null, shownTrial = null, layoutKey = '', groupsView = false, seq = 0;
  var dirty = true, lastRender = 0, renderQueued = false;

  function el(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) {
      if (k === 'text') e.textContent = attrs[k];
      else if (k === 'class') e.className = attrs[k];
      else if (k.slice(0, 2) === 'on') e.addEventListener(k.slice(2), attrs[k]);
      else e.setAttribute(k, attrs[k]);
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c == null) continue;
      e.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
    }
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  function num(x, digits) {
    if (x == null || isNaN(x)) return '';
    if (x === 0) return '0';
    if (Math.abs(x) < 0.001 || Math.abs(x) >= 1e6) return Number(x).toExponential(2);
    return Number(x).toFixed(digits == null ? 3 : digits).replace(/\.?0+$/, '');
  }
  function usd(x) { return x ? '$' + num(x, 6) : '$0'; }
  function tierColour(t) {
    if (!t) return '#e2e8f0';
    if (TIERS[t]) return TIERS[t];
    var h = 0;
    for (var i = 0; i < t.length; i++) h = (h * 31 + t.charCodeAt(i)) >>> 0;
    return PALETTE[h % PALETTE.length];
  }
  function stateOf(s) {
    if (s.status === 'verified' || s.status === 'accepted') return s.tier || '?';
    return s.status;
  }

  // ------------------------------------------------------------------ data
  function setDoc(d) {
    var keep = steps;
    if (!doc || doc.run.task_id !== d.run.task_id) {  // another run: nothing carries over
      keep = new Map(); liveTrials.clear(); segments = []; openSeg.clear(); escalations.clear(); selected = null;
    }
    doc = d;
    steps = new Map(); order = [];
    d.steps.forEach(function (s) {
      var old = keep.get(s.id);
      if (old && s.status === 'pending' && old.status !== 'pending') s = Object.assign({}, s, pick(old));
      steps.set(s.id, s); order.push(s.id);
    });
    if (d.details) details = d.details;
    dirty = true; schedule();
  }
  function pick(old) {
    return { status: old.status, tier: old.tier, escalated: old.escalated, tiers: old.tiers, t0: old.t0, t1: old.t1, error: old.error };
  }
  function applyEvent(ev) {
    var s = ev.step_id ? steps.get(ev.step_id) : null, d = ev.data || {};
    if (ev.kind === 'step_dispatched' && s) {
      if (s.status === 'pending') s.t0 = ev.ts;
      s.status = 'running'; s.running_tier = ev.tier;
      if (s.tiers.indexOf(ev.tier) < 0) s.tiers.push(ev.tier);
      closeSeg(ev.step_id, ev.ts);
      openSeg.set(ev.step_id, { step: ev.step_id, tier: ev.tier, t0: ev.ts, t1: null });
    } else if (ev.kind === 'attempt' && s) {
      var list = liveTrials.get(ev.step_id) || [];
      list.push({ tier: ev.tier, worker: d.worker, particle: d.particle, confidence: d.confidence, error: d.error, verdict: null });
      liveTrials.set(ev.step_id, list);
    } else if (ev.kind === 'verdict' && s) {
      var ts = liveTrials.get(ev.step_id) || [];
      for (var i = 0; i < ts.length; i++) if (ts[i].tier === ev.tier && !ts[i].verdict) {
        ts[i].verdict = { ok: d.ok, reason: d.reason, verifier: d.verifier }; break;
      }
    } else if (ev.kind === 'escalation' && s) {
      s.escalated = true;
      escalations.set(ev.step_id, (escalations.get(ev.step_id) || []).concat([d.from_tier + ' \u2192 ' + ev.tier + ': ' + (d.reason || '')]));
    } else if (ev.kind === 'step_done' && s) {
      s.status = d.status; s.tier = ev.tier; s.escalated = !!d.escalated || s.escalated; s.error = d.error; s.t1 = ev.ts;
      if (!s.t0) s.t0 = ev.ts;
      closeSeg(ev.step_id, ev.ts);
    } else if (ev.kind === 'run_done') {
      doc.run.status = d.status; doc.done = true;
      if (d.totals) doc.totals = d.totals;
      if (served) refetch();
    } else if (ev.kind === 'budget_stop') {
      doc.run.stopped_by = d.budget;
    }
    dirty = true;
  }
  function closeSeg(id, ts) {
    var o = openSeg.get(id);
    if (o) { o.t1 = ts; segments.push(o); openSeg.delete(id); }
  }
  function refetch() {
    fetch('run.json').then(function (r) { return r.json(); }).then(function (d) {
      seq = Math.max(seq, d.seq || 0); setDoc(d);
      if (selected) openStep(selected);
    });
  }
  function detailOf(id) {
    if (details[id]) return Promise.resolve(details[id]);
    if (!served) return Promise.resolve(null);
    return fetch('step/' + encodeURIComponent(id)).then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) { if (d && doc.done) details[id] = d; return d; });
  }

  // ------------------------------------------------------------------ header, legend, totals
  function renderHeader() {
    var r = doc.run;
    document.getElementById('tf-run-id').textContent = r.task_id;
    var st = document.getElementById('tf-status');
    var state = doc.done ? r.status : 'running';
    st.textContent = doc.done ? 'finished: ' + r.status + (r.stopped_by ? ' (' + r.stopped_by + ')' : '') : 'running';
    st.setAttribute('data-state', state);
    st.setAttribute('data-done', doc.done ? '1' : '0');
    var seen = (st.getAttribute('data-seen') || '').split(' ').filter(Boolean);  // the states this page has shown, in order
    if (seen[seen.length - 1] !== state) { seen.push(state); st.setAttribute('data-seen', seen.join(' ')); }
    document.getElementById('tf-goal').textContent = r.goal || '';
    var meta = [];
    if (r.planner) meta.push('planner ' + r.planner);
    if (r.executor) meta.push('executor ' + r.executor);
    if (r.error) meta.push('error: ' + r.error);
    document.getElementById('tf-meta').textContent = meta.join('  \u00b7  ');
    document.title = 'tinyfleet run ' + r.task_id + ' (' + (doc.done ? r.status : 'running') + ')';
  }
  function renderLegend(tiers) {
    var box = clear(document.getElementById('tf-legend'));
    tiers.forEach(function (t) {
      box.appendChild(el('span', null, el('span', { class: 'tf-swatch', style: 'background:' + tierColour(t) }), t));
    });
    box.appendChild(el('span', null, el('span', { class: 'tf-swatch', style: 'border:2px dashed #ea580c' }), 'escalated'));
    box.appendChild(el('span', null, el('span', { class: 'tf-swatch', style: 'border:2px solid #dc2626' }), 'failed'));
    box.appendChild(el('span', null, el('span', { class: 'tf-swatch', style: 'border:2px dashed #94a3b8' }), 'pending / skipped'));
  }
  function counts() {
    var c = { steps: 0, verified: 0, accepted: 0, failed: 0, skipped: 0, pending: 0, running: 0, escalated: 0 };
    steps.forEach(function (s) { c.steps++; c[s.status] = (c[s.status] || 0) + 1; if (s.escalated) c.escalated++; });
    return c;
  }
  function renderTotals() {
    var box = clear(document.getElementById('tf-totals'));
    var c = counts(), t = doc.totals;
    box.appendChild(el('strong', { text: 'Totals' }));
    var rows = [['steps', c.steps], ['verified', c.verified], ['accepted', c.accepted], ['failed', c.failed],
      ['skipped', c.skipped], ['escalated', c.escalated]];
    if (!doc.done) rows.push(['running', c.running], ['pending', c.pending]);
    if (t) {
      rows.push(['large-model calls', t.large_model_calls], ['planner calls', t.planner_calls],
        ['tokens in + out', t.tokens_in + ' + ' + t.tokens_out], ['LLM dollars', usd(t.cost_usd)],
        ['CPU seconds (worker + verifier + driver)', num(t.cpu_seconds)], ['CPU dollars', usd(t.cpu_cost_usd)],
        ['total dollars', usd(t.total_cost_usd)], ['cost per thought (per step)', usd(t.cost_per_step_usd)],
        ['particles', t.particles], ['wall seconds', num(t.wall_s)]);
    }
    var tb = el('table', { class: 'tf-table', id: 'tf-totals-table' });
    rows.forEach(function (r) { tb.appendChild(el('tr', null, el('th', { text: r[0] }), el('td', { class: 'tf-num', text: String(r[1]) }))); });
    box.appendChild(el('div', null, tb));
    var tiers = doc.tiers || {};
    var names = Object.keys(tiers);
    if (names.length) {
      var tt = el('table', { class: 'tf-table', id: 'tf-tier-table' },
        el('tr', null, el('th', { text: 'tier' }), el('th', { text: 'settled' }), el('th', { text: 'attempts' }),
          el('th', { text: 'seconds' }), el('th', { text: 'tokens' }), el('th', { text: 'LLM $' }), el('th', { text: 'large calls' })));
      names.forEach(function (n) {
        var r = tiers[n];
        tt.appendChild(el('tr', null, el('td', null, el('span', { class: 'tf-swatch', style: 'background:' + tierColour(n) }), n),
          el('td', { class: 'tf-num', text: r.settled }), el('td', { class: 'tf-num', text: r.attempts }),
          el('td', { class: 'tf-num', text: num(r.worker_s) }), el('td', { class: 'tf-num', text: r.tokens }),
          el('td', { class: 'tf-num', text: usd(r.usd) }), el('td', { class: 'tf-num', text: r.large_calls })));
      });
      box.appendChild(el('div', null, el('h4', { text: 'Cost per thought by tier' }), tt));
    }
  }

  // ------------------------------------------------------------------ the DAG
  function graphModel() {
    groupsView = order.length > MAX_NODES;
    var nodes = [], edges = [];
    if (!groupsView) {
      order.forEach(function (id) { nodes.push({ id: id, w: 120, h: 30 }); });
      order.forEach(function (id) { steps.get(id).deps.forEach(function (d) { if (steps.has(d)) edges.push([d, id, 1]); }); });
      return { nodes: nodes, edges: edges };
    }
    var groups = new Map(), of = new Map();
    order.forEach(function (id) {
      var s = steps.get(id), key = s.skill + '|' + stateOf(s);
      var g = groups.get(key);
      if (!g) { g = { id: key, skill: s.skill, state: stateOf(s), members: [], escalated: 0, w: 190, h: 44 }; groups.set(key, g); nodes.push(g); }
      g.members.push(id); if (s.escalated) g.escalated++;
      of.set(id, key);
    });
    var em = new Map();
    order.forEach(function (id) {
      steps.get(id).deps.forEach(function (d) {
        var a = of.get(d), b = of.get(id);
        if (a && b && a !== b) em.set(a + '\u0000' + b, (em.get(a + '\u0000' + b) || 0) + 1);
      });
    });
    em.forEach(function (n, k) { var p = k.split('\u0000'); edges.push([p[0], p[1], n]); });
    return { nodes: nodes, edges: edges, groups: groups };
  }
  function renderGraph() {
    var m = graphModel();
    var key = m.nodes.map(function (n) { return n.id; }).join('\u0001') + '#' + m.edges.map(function (e) { return e[0] + '>' + e[1]; }).join(',');
    var box = document.getElementById('tf-graph');
    document.getElementById('tf-graph-note').textContent = groupsView
      ? order.length + ' steps, drawn as ' + m.nodes.length + ' groups (skill \u00d7 settling tier or state; over ' + MAX_NODES + ' steps)'
      : order.length + ' steps' + (doc.run.has_plan === false ? ' (no plan recorded: edges unknown)' : '');
    if (key !== layoutKey) {
      layoutKey = key;
      var cw = Math.max(200, box.clientWidth - 4), ch = Math.max(150, box.clientHeight - 4);
      var L = placeAll(m, cw, ch), scale = Math.max(0.6, Math.min(1, cw / L.w, ch / L.h));
      var s = svg('svg', { width: Math.ceil(L.w * scale), height: Math.ceil(L.h * scale), viewBox: '0 0 ' + L.w + ' ' + L.h, id: 'tf-dag' });
      var defs = svg('defs', {}), mk = svg('marker', { id: 'tf-arrow', viewBox: '0 0 10 10', refX: '10', refY: '5', markerWidth: '6', markerHeight: '6', orient: 'auto' });
      mk.appendChild(svg('path', { d: 'M0,0L10,5L0,10z', fill: '#94a3b8' })); defs.appendChild(mk); s.appendChild(defs);
      L.edges.forEach(function (pts) {
        var dstr = 'M' + pts.map(function (p) { return p.x.toFixed(1) + ',' + p.y.toFixed(1); }).join('L');
        s.appendChild(svg('path', { d: dstr, class: 'tf-edge', 'marker-end': 'url(#tf-arrow)' }));
      });
      m.nodes.forEach(function (n) {
        var p = L.pos[n.id], grp = svg('g', { class: 'tf-node', transform: 'translate(' + (p.x - n.w / 2) + ',' + (p.y - n.h / 2) + ')' });
        grp.setAttribute(groupsView ? 'data-group' : 'data-step', n.id);
        grp.appendChild(svg('rect', { width: n.w, height: n.h, rx: 5 }));
        grp.appendChild(svg('text', { x: 6, y: groupsView ? 17 : 19 }));
        if (groupsView) grp.appendChild(svg('text', { x: 6, y: 34 }));
        grp.addEventListener('click', function () { groupsView ? openGroup(n.id) : openStep(n.id); });
        s.appendChild(grp);
      });
      clear(box).appendChild(s);
    }
    styleNodes(m);
  }
  // Node centres and edge polylines: dagre lays out the steps that have edges (both ways, the
  // one that fits the box better is kept); steps with no edge at all (a batch's items) are
  // packed in rows below it, in plan order.
  function placeAll(m, cw, ch) {
    var linked = new Set();
    m.edges.forEach(function (e) { linked.add(e[0]); linked.add(e[1]); });
    var joined = { nodes: m.nodes.filter(function (n) { return linked.has(n.id); }), edges: m.edges };
    var alone = m.nodes.filter(function (n) { return !linked.has(n.id); });
    var pos = {}, edges = [], w = 0, h = 0;
    if (joined.nodes.length) {
      var g = null, fit = -1;
      ['LR', 'TB'].forEach(function (dir) {
        var x = layout(joined, dir), f = Math.min(1, cw / (x.graph().width || 1), ch / (x.graph().height || 1));
        if (f > fit + 0.05) { g = x; fit = f; }
      });
      g.nodes().forEach(function (id) { var p = g.node(id); pos[id] = { x: p.x, y: p.y }; });
      g.edges().forEach(function (e) { var pts = g.edge(e).points || []; if (pts.length) edges.push(pts); });
      w = g.graph().width || 0; h = g.graph().height || 0;
    }
    if (alone.length) {
      var nw = alone[0].w, nh = alone[0].h, gap = 8, cols = Math.max(1, Math.floor((Math.max(cw, w) - 12) / (nw + gap)));
      alone.forEach(function (n, i) {
        pos[n.id] = { x: 12 + (i % cols) * (nw + gap) + nw / 2, y: h + 12 + Math.floor(i / cols) * (nh + gap) + nh / 2 };
      });
      w = Math.max(w, 12 + Math.min(cols, alone.length) * (nw + gap));
      h = h + 12 + Math.ceil(alone.length / cols) * (nh + gap) + 4;
    }
    return { pos: pos, edges: edges, w: Math.max(w, 60), h: Math.max(h, 40) };
  }
  function layout(m, dir) {
    var g = new dagre.graphlib.Graph();
    g.setGraph({ rankdir: dir, nodesep: dir === 'LR' ? 10 : 14, ranksep: dir === 'LR' ? 46 : 36, marginx: 12, marginy: 12 });
    g.setDefaultEdgeLabel(function () { return {}; });
    m.nodes.forEach(function (n) { g.setNode(n.id, { width: n.w, height: n.h }); });
    m.edges.forEach(function (e) { g.setEdge(e[0], e[1]); });
    dagre.layout(g);
    return g;
  }
  function styleNodes(m) {
    var tiers = new Set();
    document.querySelectorAll('#tf-dag .tf-node').forEach(function (node) {
      var rect = node.firstChild, texts = node.querySelectorAll('text'), cls = ['tf-node'], st, tier, esc, label;
      if (groupsView) {
        var g = m.groups.get(node.getAttribute('data-group'));
        st = g.state === 'pending' || g.state === 'running' || g.state === 'failed' || g.state === 'skipped' ? g.state : 'settled';
        tier = st === 'settled' ? g.state : null; esc = g.escalated > 0;
        texts[0].textContent = g.skill;
        texts[1].textContent = g.state + ' \u00b7 ' + g.members.length + ' steps' + (g.escalated ? ' \u00b7 ' + g.escalated + ' escalated' : '');
      } else {
        var s = steps.get(node.getAttribute('data-step'));
        st = s.status; tier = s.tier || s.running_tier; esc = s.escalated;
        label = s.id.length > 17 ? s.id.slice(0, 16) + '\u2026' : s.id;
        texts[0].textContent = label + (esc ? ' \u2191' : '') + (st === 'failed' ? ' \u2717' : '');
        node.setAttribute('data-status', st); node.setAttribute('data-tier', s.tier || '');
        node.setAttribute('data-escalated', esc ? '1' : '0');
        var title = node.querySelector('title') || node.appendChild(svg('title', {}));
        title.textContent = s.id + ' (' + s.skill + '): ' + st + (s.tier ? ' at ' + s.tier : '') + (esc ? ', escalated via ' + s.tiers.join(' \u2192 ') : '');
      }
      if (tier && (st === 'verified' || st === 'accepted' || st === 'settled' || st === 'running')) tiers.add(tier);
      if (esc) cls.push('tf-escalated');
      if (st === 'failed') cls.push('tf-failed');
      if (st === 'pending') cls.push('tf-pending');
      if (st === 'skipped') cls.push('tf-skipped');
      if (st === 'running') cls.push('tf-running');
      if (!groupsView && node.getAttribute('data-step') === selected) cls.push('tf-selected');
      node.setAttribute('class', cls.join(' '));
      rect.setAttribute('fill', st === 'failed' ? '#fee2e2' : tierColour(tier));
    });
    renderLegend(Array.from(tiers).sort());
  }

  // ------------------------------------------------------------------ the step panel
  function openGroup(key) {
    var m = graphModel(), g = m.groups && m.groups.get(key), panel = clear(document.getElementById('tf-panel'));
    if (!g) return;
    panel.appendChild(el('h2', { text: g.skill + ' \u00b7 ' + g.state }));
    panel.appendChild(el('p', { text: g.members.length + ' steps' + (g.escalated ? ', ' + g.escalated + ' escalated' : '') + '. Click one to open it (first 500 listed; search by id above).' }));
    var list = el('div', { class: 'tf-group-list' });
    g.members.slice(0, 500).forEach(function (id) { list.appendChild(el('a', { text: id, onclick: function () { openStep(id); } })); });
    panel.appendChild(list);
  }
  function openStep(id) {
    var s = steps.get(id);
    if (!s) return;
    selected = id; shownTrial = null;
    document.querySelectorAll('#tf-dag .tf-selected').forEach(function (n) { n.classList.remove('tf-selected'); });
    var node = document.querySelector('#tf-dag [data-step="' + CSS.escape(id) + '"]');
    if (node) node.classList.add('tf-selected');
    detailOf(id).then(function (d) { if (selected === id) drawPanel(s, d || {}); });
  }
  function kv(label, value) { return el('div', null, el('strong', { text: label + ': ' }), String(value)); }
  function drawPanel(s, d) {
    var panel = clear(document.getElementById('tf-panel'));
    panel.setAttribute('data-step', s.id);
    panel.appendChild(el('h2', { text: s.id }));
    panel.appendChild(kv('skill', s.skill));
    panel.appendChild(kv('status', s.status + (s.tier ? ' at tier ' + s.tier : '') + (s.resumed ? ' (from the journal)' : '')));
    if (s.tiers && s.tiers.length) panel.appendChild(kv('tiers tried', s.tiers.join(' \u2192 ') + (s.escalated ? '  (escalated)' : '')));
    if (s.deps && s.deps.length) panel.appendChild(kv('waits for', s.deps.join(', ')));
    if (s.t1 && s.t0) panel.appendChild(kv('seconds', num(s.t1 - s.t0)));
    if (s.error) panel.appendChild(el('div', { class: 'tf-err', text: 'error: ' + s.error }));
    (escalations.get(s.id) || []).forEach(function (e) { panel.appendChild(el('div', { class: 'tf-warn', text: 'escalation: ' + e })); });
    var trials = (d.trials && d.trials.length) ? d.trials : (liveTrials.get(s.id) || []);
    panel.appendChild(el('h3', { text: 'Attempts (' + trials.length + ')' }));
    var head = ['#', 'tier', 'conf.', 'rec. steps', 'particles', 'seconds', 'tokens', '$'];
    var tb = el('table', { class: 'tf-table', id: 'tf-attempts' }, el('tr', null));
    head.forEach(function (h) { tb.firstChild.appendChild(el('th', { text: h })); });
    trials.forEach(function (t, i) {
      var v = t.verdict, ok = v ? v.ok : (t.error ? false : null);
      var info = t.info || {}, ck = t.checkpoint || Object.keys(info).filter(function (k) { return k === 'size' || k === 'frame' || k === 'model'; })
        .map(function (k) { return k + ' ' + info[k]; }).join(', ');
      var reason = v ? v.reason : (t.error || '');
      var row = el('tr', { class: 'tf-attempt', 'data-ok': String(ok), 'data-tier': t.tier || '' },
        el('td', { text: i + 1 }), el('td', null, el('span', { class: 'tf-swatch', style: 'background:' + tierColour(t.tier) }), t.tier || ''),
        el('td', { class: 'tf-num', text: num(t.confidence) }),
        el('td', { class: 'tf-num', text: t.recursion_steps == null ? '' : t.recursion_steps }),
        el('td', { class: 'tf-num', text: t.particles == null ? '' : t.particles }),
        el('td', { class: 'tf-num', text: num(t.seconds) }),
        el('td', { class: 'tf-num', text: t.tokens == null ? '' : t.tokens }), el('td', { class: 'tf-num', text: t.usd == null ? '' : usd(t.usd) }));
      var verdict = v ? (v.ok ? 'ok' : 'rejected') + (v.verifier && v.verifier !== 'none' ? ' by ' + v.verifier : '') + (v.judgement ? ' (a judgement)' : '') : (t.error ? 'no answer' : 'no verifier');
      var why = el('tr', { class: 'tf-attempt-why', 'data-ok': String(ok) },
        el('td', null), el('td', { colspan: String(head.length - 1) }, el('strong', { text: verdict + ': ' }),
          el('span', { class: 'tf-reason', text: reason || '(no reason given)' }),
          el('span', { class: 'tf-hint', text: 'worker ' + (t.worker || '?') + (ck ? ' \u00b7 checkpoint ' + ck : '') })));
      [row, why].forEach(function (r) {
        r.addEventListener('click', function () {
          shownTrial = i;
          tb.querySelectorAll('.tf-shown').forEach(function (x) { x.classList.remove('tf-shown'); });
          row.classList.add('tf-shown');
          drawPayload(s, d, t);
        });
      });
      tb.appendChild(row); tb.appendChild(why);
    });
    panel.appendChild(tb);
    if (!trials.length) panel.appendChild(el('p', { class: 'tf-hint', text: s.status === 'pending' ? 'not started yet' : 'no attempts recorded' }));
    panel.appendChild(el('div', { id: 'tf-payload' }));
    drawPayload(s, d, null);
  }

  // ------------------------------------------------------------------ payloads per skill
  function drawPayload(s, d, trial) {
    var box = clear(document.getElementById('tf-payload'));
    var inp = d.inputs, out = trial ? trial.output : d.output;
    var tests = null;
    var src = trial ? [trial] : (d.trials || []);
    for (var i = src.length - 1; i >= 0; i--) if (src[i].verdict && src[i].verdict.details && src[i].verdict.details.tests) { tests = src[i].verdict.details.tests; break; }
    var label = trial ? 'Output of attempt ' + (shownTrial + 1) + ' (' + (trial.tier || '') + ')' : 'Output (settled)';
    var r = renderer(s.skill, inp, out);
    box.appendChild(el('h3', { text: 'Inputs' }));
    box.appendChild(inp == null ? el('p', { class: 'tf-hint', text: 'not recorded' }) : r.input(inp));
    box.appendChild(el('h3', { text: label }));
    box.appendChild(out == null ? el('p', { class: 'tf-hint', text: 'none' }) : r.output(inp, out));
    if (tests) box.appendChild(testList(tests));
    box.appendChild(el('details', null, el('summary', { text: 'raw JSON' }), pre({ inputs: inp, output: out })));
  }
  function pre(v) {
    var t = typeof v === 'string' ? v : JSON.stringify(v, null, 1);
    if (t && t.length > 20000) t = t.slice(0, 20000) + '\n\u2026 (' + t.length + ' characters)';
    return el('pre', { text: t == null ? '' : t });
  }
  function renderer(skill, inp, out) {
    var o = out || {}, i = inp || {};
    if (skill === 'sudoku.solve' || Array.isArray(i.puzzle)) return { input: function (x) { return sudoku(x.puzzle); }, output: function (x, y) { return sudoku(x && x.puzzle, y.solution); } };
    if (skill === 'maze.route' || (Array.isArray(i.grid) && typeof i.grid[0] === 'string' && Array.isArray(o.path)))
      return { input: function (x) { return maze(x.grid, null); }, output: function (x, y) { return maze(x && x.grid, y.path); } };
    if (skill === 'series.forecast' || (Array.isArray(i.values) && Array.isArray(o.mean)))
      return { input: function (x) { return forecast(x.values, null); }, output: function (x, y) { return forecast(x && x.values, y); } };
    if (skill === 'code.function' || typeof i.signature === 'string')
      return { input: function (x) { return el('div', null, pre(x.signature || ''), el('p', { text: x.doc || '' }), el('strong', { text: 'tests' }), pre(x.tests || '')); },
        output: function (x, y) { return pre(y.code || y); } };
    return { input: function (x) { return pre(x); }, output: function (x, y) { return pre(y); } };
  }
  function sudoku(puzzle, solution) {
    var grid = solution || puzzle;
    if (!Array.isArray(grid)) return pre(grid);
    var n = grid.length, bh = n === 6 ? 2 : Math.round(Math.sqrt(n)), bw = n === 6 ? 3 : bh;
    var t = el('table', { class: 'tf-sudoku' });
    grid.forEach(function (row, r) {
      var tr = el('tr');
      row.forEach(function (v, c) {
        var given = puzzle && puzzle[r] && puzzle[r][c], cls = [];
        if (given) cls.push('tf-given'); else if (solution) cls.push('tf-filled');
        if (solution && given && given !== v) cls.push('tf-bad');
        if ((c + 1) % bw === 0 && c + 1 < n) cls.push('tf-br');
        if ((r + 1) % bh === 0 && r + 1 < n) cls.push('tf-bb');
        tr.appendChild(el('td', { class: cls.join(' '), text: v ? v : '' }));
      });
      t.appendChild(tr);
    });
    return t;
  }
  function maze(grid, path) {
    if (!Array.isArray(grid)) return pre(path ? { path: path } : grid);
    var on = new Set((path || []).map(function (p) { return p[0] + ',' + p[1]; }));
    var w = grid[0].length, box = el('div', { class: 'tf-maze', style: 'grid-template-columns: repeat(' + w + ', 12px)' });
    grid.forEach(function (row, r) {
      for (var c = 0; c < w; c++) {
        var ch = row[c], cls = ch === '#' ? 'w' : ch === 'S' ? 's' : ch === 'G' ? 'g' : on.has(r + ',' + c) ? 'p' : '';
        box.appendChild(el('div', { class: cls }));
      }
    });
    var wrap = el('div', null, box);
    if (path) wrap.appendChild(el('div', { class: 'tf-hint', text: path.length ? (path.length - 1) + ' moves' : 'no path' }));
    return wrap;
  }
  function forecast(values, f) {
    values = values || [];
    var total = values.length;
    if (f && f.mean && values.length > Math.max(48, 3 * f.mean.length)) values = values.slice(-Math.max(48, 3 * f.mean.length));
    var mean = (f && f.mean) || [], lo = (f && f.p10) || mean, hi = (f && f.p90) || mean;
    var n = values.length + mean.length, W = 460, H = 170, pad = 24;
    var all = values.concat(lo, hi).filter(function (x) { return typeof x === 'number'; });
    var ymin = Math.min.apply(null, all.concat([0])), ymax = Math.max.apply(null, all.concat([1]));
    function X(i) { return pad + (W - 2 * pad) * i / Math.max(1, n - 1); }
    function Y(v) { return H - pad - (H - 2 * pad) * (v - ymin) / Math.max(1e-9, ymax - ymin); }
    function line(arr, off) { return arr.map(function (v, i) { return (i ? 'L' : 'M') + X(i + off).toFixed(1) + ',' + Y(v).toFixed(1); }).join(''); }
    var s = svg('svg', { width: W, height: H, class: 'tf-forecast' });
    s.appendChild(svg('line', { x1: pad, x2: W - pad, y1: H - pad, y2: H - pad, stroke: '#94a3b8' }));
    if (mean.length) {
      var off = values.length, band = line(hi, off) + lo.slice().reverse().map(function (v, i) { return 'L' + X(off + lo.length - 1 - i).toFixed(1) + ',' + Y(v).toFixed(1); }).join('') + 'Z';
      s.appendChild(svg('path', { d: band, fill: '#bfdbfe', stroke: 'none', class: 'tf-band' }));
      s.appendChild(svg('path', { d: line(mean, off), fill: 'none', stroke: '#2563eb', 'stroke-width': 2, class: 'tf-mean' }));
      s.appendChild(svg('line', { x1: X(off - 0.5), x2: X(off - 0.5), y1: pad / 2, y2: H - pad, stroke: '#cbd5e1', 'stroke-dasharray': '3 3' }));
    }
    s.appendChild(svg('path', { d: line(values, 0), fill: 'none', stroke: '#475569', 'stroke-width': 1.2 }));
    var lbl = svg('text', { x: pad, y: 12, 'font-size': 11, fill: '#475569' });
    lbl.textContent = (values.length < total ? 'last ' + values.length + ' of ' : '') + total + ' values' + (mean.length ? ', forecast ' + mean.length + ' ahead (mean, p10\u2013p90 band)' : '') + '; y ' + num(ymin, 2) + '\u2026' + num(ymax, 2);
    s.appendChild(lbl);
    return s;
  }
  function testList(tests) {
    var ul = el('ul', { class: 'tf-tests' });
    tests.forEach(function (t) { ul.appendChild(el('li', { class: t.ok ? 'ok' : 'bad', text: t.name + (t.error ? ': ' + t.error : '') })); });
    return el('div', null, el('h3', { text: 'Tests (' + tests.filter(function (t) { return t.ok; }).length + '/' + tests.length + ' passed)' }), ul);
  }

  // ------------------------------------------------------------------ the timeline
  function renderTimeline() {
    var cv = document.getElementById('tf-timeline'), note = document.getElementById('tf-timeline-note');
    var segs = [], now = Date.now() / 1000;
    var live = segments.length || openSeg.size;
    if (live) {
      segs = segments.concat(Array.from(openSeg.values()).map(function (o) { return { step: o.step, tier: o.tier, t0: o.t0, t1: now, open: true }; }));
      note.textContent = 'one bar per step per tier it ran at, from the run\u2019s events; lanes are tiers (pools)';
    } else {
      order.forEach(function (id) {
        var s = steps.get(id);
        if (s.t0 && s.t1 && !s.resumed) segs.push({ step: id, tier: s.tier || s.tiers[s.tiers.length - 1] || s.status, t0: s.t0, t1: s.t1 });
      });
      note.textContent = 'one bar per step, start to finish, in the lane of the tier that settled it (per-tier times are only in a live page)';
    }
    var lanes = Array.from(new Set(segs.map(function (x) { return x.tier; }))).sort();
    var W = cv.clientWidth || 600, laneH = 18, top = 26, H = top + Math.max(1, lanes.length) * laneH + 18;
    var dpr = window.devicePixelRatio || 1;
    cv.width = W * dpr; cv.height = H * dpr; cv.style.height = H + 'px';
    var ctx = cv.getContext('2d'); ctx.scale(dpr, dpr); ctx.clearRect(0, 0, W, H);
    ctx.font = '11px system-ui, sans-serif';
    if (!segs.length) { ctx.fillStyle = '#64748b'; ctx.fillText('no timed steps yet', 8, 16); return; }
    var t0 = Infinity, t1 = -Infinity;  // a loop, not Math.min.apply: runs have more bars than a call has arguments
    segs.forEach(function (x) { if (x.t0 < t0) t0 = x.t0; if (x.t1 > t1) t1 = x.t1; });
    var span = Math.max(1e-3, t1 - t0), left = 80, right = W - 10;
    function X(t) { return left + (right - left) * (t - t0) / span; }
    // in flight over time (all lanes): a step curve on top
    var ev = [];
    segs.forEach(function (x) { ev.push([x.t0, 1]); ev.push([x.t1, -1]); });
    ev.sort(function (a, b) { return a[0] - b[0] || a[1] - b[1]; });
    var k = 0, peak = 0; ev.forEach(function (e) { k += e[1]; peak = Math.max(peak, k); });
    ctx.fillStyle = '#e0e7ff'; ctx.strokeStyle = '#6366f1'; ctx.beginPath(); ctx.moveTo(X(t0), top - 2); k = 0;
    ev.forEach(function (e) { var y = top - 2 - 18 * k / Math.max(1, peak); ctx.lineTo(X(e[0]), y); k += e[1]; ctx.lineTo(X(e[0]), top - 2 - 18 * k / Math.max(1, peak)); });
    ctx.lineTo(X(t1), top - 2); ctx.closePath(); ctx.fill();
    ctx.fillStyle = '#475569'; ctx.fillText('in flight (peak ' + peak + ')', 4, 14);
    lanes.forEach(function (l, i) {
      var y = top + i * laneH;
      ctx.fillStyle = i % 2 ? '#f8fafc' : '#f1f5f9'; ctx.fillRect(left, y, right - left, laneH);
      ctx.fillStyle = '#334155'; ctx.fillText(l.length > 12 ? l.slice(0, 11) + '\u2026' : l, 4, y + 13);
    });
    segs.forEach(function (x) {
      var i = lanes.indexOf(x.tier), y = top + i * laneH + 3;
      ctx.fillStyle = tierColour(x.tier);
      ctx.fillRect(X(x.t0), y, Math.max(1, X(x.t1) - X(x.t0)), laneH - 6);
    });
    ctx.fillStyle = '#64748b';
    ctx.fillText('0 s', left, H - 4);
    var endLabel = num(span, 3) + ' s';
    ctx.fillText(endLabel, right - ctx.measureText(endLabel).width, H - 4);
  }

  function renderMissing() {
    var ul = clear(document.getElementById('tf-missing-list'));
    (doc.not_recorded || []).forEach(function (t) { ul.appendChild(el('li', { text: t })); });
  }

  // ------------------------------------------------------------------ loop
  function schedule() {
    if (renderQueued) return;
    renderQueued = true;
    var wait = Math.max(0, RENDER_EVERY_MS - (Date.now() - lastRender));
    setTimeout(function () { requestAnimationFrame(render); }, wait);
  }
  function render() {
    renderQueued = false; lastRender = Date.now();
    if (!doc || !dirty) return;
    dirty = false;
    renderHeader(); renderGraph(); renderTotals(); renderTimeline(); renderMissing();
    if (selected && steps.has(selected) && !doc.done) openStep(selected);
    document.body.setAttribute('data-ready', '1');
  }
  function listen() {
    var es = new EventSource('events?after=' + seq);
    es.onmessage = function (m) {
      var msgs = JSON.parse(m.data);
      msgs.forEach(function (msg) {
        seq = Math.max(seq, msg.seq);
        if (msg.type === 'doc') refetch();
        else if (msg.type === 'event') applyEvent(msg.event);
      });
      schedule();
    };
    es.addEventListener('end', function () { es.close(); });
  }
  function search(e) {
    var id = e.target.value.trim();
    if (steps.has(id)) openStep(id);
  }
  document.getElementById('tf-search').addEventListener('change', search);
  document.getElementById('tf-search').addEventListener('keydown', function (e) { if (e.key === 'Enter') search(e); });
  window.addEventListener('resize', function () { dirty = true; schedule(); });
  window.tinyfleetView = { openStep: openStep, steps: steps, get doc() { return doc; } };

  function boot() {  // a live page may open before its run has a plan: ask again until it has
    fetch('run.json').then(function (r) { return r.ok ? r.json() : null; }).then(function (d) {
      if (!d || d.waiting) { document.getElementById('tf-status').textContent = 'waiting for a run'; setTimeout(boot, 300); return; }
      seq = d.seq || 0; setDoc(d);
      if (!d.done) listen();
    }, function () { setTimeout(boot, 1000); });
  }
  if (served) {
    boot();
  } else {
    details = BOOT.details || {};
    setDoc(BOOT.doc);
  }
})();
