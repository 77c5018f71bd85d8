// Switchyard's dashboard: one page, no build step. Everything it shows comes from the gateway's
// JSON API (/api/...), with the admin key when auth is on (asked once, kept for this tab, sent
// as a bearer token), and live changes come from one event stream (/api/events).
"use strict";

const KEY_STORE = "switchyard.key";
const MARKED = "#/flows?h=~marked";  // mitmweb's flow list with the marked (retried, failed) flows highlighted
// Error classes that keep an account out until the user acts (shown in red).
const NEEDS_THE_USER = new Set(["auth", "forbidden", "client_outdated", "invalid_grant", "validation_required"]);
const PAGES = {};
const state = {
  accounts: null, requests: [], lastId: 0, nextBefore: null, overview: null, mitmweb: null,
  filters: {status: "", account: "", model: "", protocol: ""}, choices: null,
  usage: {range: "24h", by: "model"}, config: null, connect: null,
};
const ui = {open: {}, checks: {}, busy: {}, cards: new Map(), highlight: null};
let currentPage = null;

// --- small helpers ------------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const $ = (sel, root = document) => root.querySelector(sel);
const num = (x) => (x === null || x === undefined ? "–" : Number(x).toLocaleString());
const ms = (x) => (x === null || x === undefined ? "–" : `${Math.round(x).toLocaleString()} ms`);
const COMPACT = new Intl.NumberFormat(undefined, {notation: "compact", maximumFractionDigits: 1});
const big = (x) => (x === null || x === undefined ? "–" : x >= 10000 ? COMPACT.format(x) : Number(x).toLocaleString());
const pct = (x) => `${Math.round(x * 100)}%`;
const sleep = (t) => new Promise((r) => setTimeout(r, t));

function clock(ts) {
  const d = new Date(ts * 1000), today = new Date();
  const time = d.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit"});
  return d.toDateString() === today.toDateString() ? time : `${d.toLocaleDateString([], {month: "short", day: "numeric"})} ${time}`;
}
function span(seconds) {
  let s = Math.max(0, Math.round(seconds));
  if (s >= 86400) return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  if (s >= 3600) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}
const now = () => Date.now() / 1000;

function flash(text, bad = false) {
  const el = $("#flash");
  el.textContent = text;
  el.className = bad ? "flash bad" : "flash";
  el.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { el.hidden = true; }, bad ? 15000 : 6000);
}

// --- the API ------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.field = error.field || null;
    this.fields = error.fields || {};
  }
}

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? {authorization: `Bearer ${key}`} : {};
}

async function request(method, path, body, accept = "json") {
  for (;;) {
    const init = {method, headers: authHeaders(), cache: "no-store"};
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    if (r.status === 401) {
      await askKey(sessionStorage.getItem(KEY_STORE) ? "That key was refused." : null);
      continue;
    }
    if (accept === "text" && r.ok) return r.text();
    if (accept === "blob" && r.ok) return r.blob();
    const data = await r.json().catch(() => null);
    if (!r.ok) throw new ApiError(r.status, data);
    return data;
  }
}
const api = {
  get: (p) => request("GET", p),
  text: (p) => request("GET", p, undefined, "text"),
  blob: (p) => request("GET", p, undefined, "blob"),
  post: (p, b = {}) => request("POST", p, b),
  patch: (p, b) => request("PATCH", p, b),
  del: (p) => request("DELETE", p),
};

let keyWaiters = null;
function askKey(problem) {
  if (keyWaiters) return new Promise((r) => keyWaiters.push(r));
  keyWaiters = [];
  const dialog = $("#key-dialog"), input = $("#key-input"), error = $("#key-error");
  error.hidden = !problem;
  error.textContent = problem || "";
  input.value = "";
  return new Promise((resolve) => {
    keyWaiters.push(resolve);
    dialog.addEventListener("close", () => {
      sessionStorage.setItem(KEY_STORE, input.value.trim());
      const waiting = keyWaiters;
      keyWaiters = null;
      waiting.forEach((r) => r());
    }, {once: true});
    dialog.showModal();
    input.focus();
  });
}

function confirmAction(title, text, ok = "Remove") {
  const dialog = $("#confirm-dialog");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = ok;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), {once: true});
    dialog.showModal();
  });
}

// --- routing --------------------------------------------------------------------------------------
function route() {
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const name = PAGES[path] ? path : "overview";
  const params = new URLSearchParams(query || "");
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === name);
  if (currentPage !== null && currentPage !== name) $("#flash").hidden = true;
  currentPage = name;
  document.title = `${name[0].toUpperCase()}${name.slice(1)} · Switchyard`;
  const main = $("#main");
  main.replaceChildren();
  ui.cards.clear();
  PAGES[name].show(main, params);
}

function rerender(...names) {
  if (names.includes(currentPage) && PAGES[currentPage].update) PAGES[currentPage].update();
}

// --- live updates -----------------------------------------------------------------------------------
async function live() {
  let delay = 1000;
  for (;;) {
    try {
      const r = await fetch(`/api/events?after=${state.lastId}`, {headers: authHeaders(), cache: "no-store"});
      if (r.status === 401) { await askKey("That key was refused."); continue; }
      if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
      setLive(true);
      delay = 1000;
      const reader = r.body.getReader(), decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, {stream: true});
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          onEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (e) {
      delay = Math.min(delay * 2, 15000);
    }
    setLive(false);
    await sleep(delay);
  }
}

function setLive(on) {
  const el = $("#live");
  el.classList.toggle("on", on);
  el.textContent = on ? "live" : "reconnecting";
}

function onEvent(block) {
  let name = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) name = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (!data) return;
  const payload = JSON.parse(data);
  if (name === "hello" || name === "accounts") {
    state.accounts = payload.accounts || payload;
    rerender("accounts", "overview");
    if (name === "accounts") refreshOverview();
  } else if (name === "requests") {
    addRequests(payload);
  }
}

function addRequests(rows) {
  const known = new Set(state.requests.map((r) => r.id));
  const fresh = rows.filter((r) => !known.has(r.id));
  if (!fresh.length) return;
  for (const row of fresh) state.lastId = Math.max(state.lastId, row.id);
  state.requests = [...fresh.reverse(), ...state.requests].slice(0, 500);
  PAGES.requests.fresh = new Set(fresh.map((r) => r.id));
  rerender("requests");
  refreshOverview();
  if (currentPage === "usage") PAGES.usage.later();
}

let overviewTimer = null;
function refreshOverview() {
  if (currentPage !== "overview" || overviewTimer) return;
  overviewTimer = setTimeout(async () => {
    overviewTimer = null;
    state.overview = await api.get("/api/overview").catch(() => state.overview);
    rerender("overview");
  }, 1500);
}

// Countdowns (cooldowns, quota resets) tick once a second while the tab is visible; when one
// ends, the accounts are read again (a cooldown that ends changes no file: nothing is pushed).
setInterval(() => {
  if (document.hidden) return;
  let ended = false;
  for (const el of document.querySelectorAll("[data-until]")) {
    const left = Number(el.dataset.until) - now();
    if (left <= 0 && !el.dataset.ended) { el.dataset.ended = "1"; ended = true; }
    el.textContent = left > 0 ? span(left) : "now";
  }
  if (ended) api.get("/api/accounts").then((rows) => { state.accounts = rows; rerender("accounts", "overview"); }).catch(() => {});
}, 1000);

function countdown(until) {
  return h("span", {class: "countdown", dataset: {until: String(until)}}, span(until - now()));
}

// --- Overview ---------------------------------------------------------------------------------------
PAGES.overview = {
  async show(main) {
    this.main = main;
    main.append(h("p", {class: "muted"}, "Loading…"));
    state.overview = await api.get("/api/overview");
    if (!state.accounts) state.accounts = await api.get("/api/accounts");
    this.update();
  },
  update() {
    const o = state.overview;
    if (!o || currentPage !== "overview") return;
    const main = this.main;
    const counts = {ready: 0, cooling: 0, disabled: 0};
    for (const a of state.accounts || []) counts[a.status] += 1;
    const period = (title, t) => h("div", {class: "panel"},
      h("h2", {}, title),
      h("div", {class: "stats"},
        stat(num(t.requests), "requests"),
        stat(num(t.errors), "errors", t.errors ? "bad" : ""),
        stat(big(t.input_tokens), "tokens in"),
        stat(big(t.output_tokens), "tokens out"),
        stat(ms(t.p50_latency_ms), "latency p50"),
        stat(ms(t.p95_latency_ms), "latency p95")));
    const next = h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "family"), h("th", {}, "newest model"), h("th", {}, "next request goes to"))),
      h("tbody", {}, o.next.length ? o.next.map((n) => h("tr", {dataset: {family: n.family}},
        h("td", {}, n.family), h("td", {class: "mono"}, n.model),
        h("td", {}, n.account ? h("a", {href: `#/accounts?id=${encodeURIComponent(n.account_id)}`}, n.account)
          : n.cooling_until ? h("span", {class: "badge cooling"}, "all cooling · ", countdown(n.cooling_until))
          : h("span", {class: "badge bad"}, "no account")))) : h("tr", {}, h("td", {colspan: 3, class: "muted"}, "No models yet: add an account."))));
    const recent = state.requests.slice(0, 6);
    main.replaceChildren(
      h("div", {class: "toolbar"}, h("h1", {}, "Overview"), h("span", {class: "muted"}, `Switchyard ${o.version} · ${o.base_url}`)),
      h("div", {class: "grid cols-2"}, period("Last hour", o.requests.hour), period("Last 24 hours", o.requests.day)),
      h("div", {class: "grid cols-2"},
        h("div", {class: "panel"}, h("h2", {}, "Accounts"),
          h("div", {class: "counts"},
            h("a", {class: "count ready", href: "#/accounts"}, h("div", {class: "value", id: "count-ready"}, counts.ready), "ready"),
            h("a", {class: "count cooling", href: "#/accounts"}, h("div", {class: "value", id: "count-cooling"}, counts.cooling), "cooling"),
            h("a", {class: "count disabled", href: "#/accounts"}, h("div", {class: "value", id: "count-disabled"}, counts.disabled), "disabled"))),
        h("div", {class: "panel"}, h("h2", {}, "Inspect every flow"),
          o.mitmweb ? h("p", {}, h("a", {href: o.mitmweb + MARKED, target: "_blank", rel: "noopener noreferrer"}, "Open mitmweb ↗"),
            h("span", {class: "muted"}, " — each flow's comment names its account, model, attempts and tokens; retried and failed flows are highlighted."))
            : h("p", {class: "muted"}, "mitmweb is not running. Start the gateway with ", h("code", {}, "switchyard run --web"),
              " to see every request and answer live."))),
      h("div", {class: "panel"}, h("h2", {}, "Who serves next"), next),
      h("div", {class: "panel"}, h("h2", {}, "Latest requests"),
        recent.length ? requestTable(recent, false) : h("p", {class: "muted"}, "No requests yet."),
        h("p", {}, h("a", {href: "#/requests"}, "All requests →"))),
    );
  },
};

function stat(value, label, tone = "") {
  return h("div", {class: `stat ${tone}`}, h("span", {class: "value"}, value), h("span", {class: "label"}, label));
}

// --- Accounts ---------------------------------------------------------------------------------------
PAGES.accounts = {
  async show(main, params) {
    this.main = main;
    const added = params.get("signed_in"), failed = params.get("login_error");
    if (added) { flash(`Signed in as ${added}: the account is in the pool.`); ui.highlight = params.get("id"); }
    if (failed) flash(`Sign-in failed: ${failed}`, true);
    if (params.get("id")) ui.highlight = params.get("id");
    if (added || failed) history.replaceState(null, "", "#/accounts");
    main.append(this.toolbar(), h("div", {id: "add-form-slot"}), h("div", {id: "account-list"}, h("p", {class: "muted"}, "Loading…")));
    state.accounts = await api.get("/api/accounts");
    this.update();
  },
  toolbar() {
    const file = h("input", {type: "file", id: "import-file", hidden: true, accept: ".json,.txt,text/plain,application/json", onchange: (e) => this.importFile(e.target)});
    return h("div", {class: "toolbar"},
      h("h1", {}, "Accounts"),
      h("button", {class: "primary google", id: "google-sign-in", onclick: (e) => this.signIn(e.target)}, "Sign in with Google"),
      h("button", {id: "add-key", onclick: () => this.toggleAddForm()}, "Add API key"),
      h("button", {id: "import", onclick: () => file.click()}, "Import file"), file,
      h("button", {id: "refresh-all", onclick: (e) => this.refreshAll(e.target)}, "Refresh all"));
  },
  update() {
    const list = $("#account-list");
    if (!list || !state.accounts) return;
    if (!state.accounts.length) {
      ui.cards.clear();
      list.replaceChildren(h("div", {class: "panel"}, h("p", {}, "No accounts yet. Sign in with Google, add an API key, or import an export of refresh tokens.")));
      return;
    }
    const cards = state.accounts.map((a) => {
      const shown = JSON.stringify(a) + JSON.stringify(ui.checks[a.id] || null) + (ui.open[a.id] || "") + (ui.busy[a.id] || "");
      const old = ui.cards.get(a.id);
      if (old && (old.shown === shown || (ui.open[a.id] && old.el.contains(document.activeElement)))) return old.el;
      const el = accountCard(a);
      ui.cards.set(a.id, {el, shown});
      return el;
    });
    list.replaceChildren(...cards);
    if (ui.highlight) {
      const el = list.querySelector(`[data-account="${CSS.escape(ui.highlight)}"]`);
      if (el) { el.classList.add("highlight"); el.scrollIntoView({block: "center"}); }
      ui.highlight = null;
    }
  },
  async act(id, work, busy) {
    ui.busy[id] = busy;
    this.update();
    try {
      return await work();
    } catch (e) {
      flash(e.message, true);
    } finally {
      delete ui.busy[id];
      state.accounts = await api.get("/api/accounts").catch(() => state.accounts);
      this.update();
    }
  },
  async signIn(button) {
    button.disabled = true;
    try {
      const {url} = await api.post("/api/accounts/login", {origin: location.origin});
      location.assign(url);
    } catch (e) {
      flash(e.message, true);
      button.disabled = false;
    }
  },
  toggleAddForm() {
    const slot = $("#add-form-slot");
    if (slot.firstChild) { slot.replaceChildren(); return; }
    const field = (name, label, input) => h("label", {class: "field"}, label, input, h("p", {class: "field-error", dataset: {for: name}, hidden: true}));
    const form = h("form", {class: "panel", id: "add-key-form"},
      h("h2", {}, "Add an API key account"),
      h("div", {class: "form-row"},
        field("kind", "Kind", h("select", {name: "kind"}, ["gemini", "openai", "anthropic"].map((k) => h("option", {value: k}, k)))),
        field("api_key", "API key", h("input", {name: "api_key", type: "password", autocomplete: "off", size: 32})),
        field("base_url", h("span", {}, "Base URL ", h("span", {class: "hint"}, "(optional)")), h("input", {name: "base_url", size: 34, placeholder: "https://api.openai.com/v1"})),
        field("models", h("span", {}, "Models ", h("span", {class: "hint"}, "(globs, comma-separated)")), h("input", {name: "models", size: 18, placeholder: "gpt-*"})),
        field("priority", "Priority", h("input", {name: "priority", type: "number", value: 0})),
        field("label", "Label", h("input", {name: "label", size: 14})),
        h("button", {class: "primary", type: "submit"}, "Add")),
    );
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const data = Object.fromEntries(new FormData(form));
      data.priority = data.priority === "" ? 0 : Number(data.priority);
      showErrors(form, {});
      try {
        const row = await api.post("/api/accounts", data);
        slot.replaceChildren();
        flash(`Added ${row.kind} account ${row.name}.`);
        ui.highlight = row.id;
        state.accounts = await api.get("/api/accounts");
        this.update();
      } catch (err) {
        showErrors(form, err.field ? {[err.field]: err.message} : err.fields, err.message);
      }
    });
    slot.replaceChildren(form);
  },
  async importFile(input) {
    const file = input.files[0];
    input.value = "";
    if (!file) return;
    try {
      const result = await api.post("/api/accounts/import", {text: await file.text()});
      flash(`Imported ${result.added} Google account${result.added === 1 ? "" : "s"}` + (result.skipped ? `, ${result.skipped} already present` : "") + ".");
      state.accounts = await api.get("/api/accounts");
      this.update();
    } catch (e) {
      flash(`${file.name}: ${e.message}`, true);
    }
  },
  async refreshAll(button) {
    button.disabled = true;
    try {
      const {results} = await api.post("/api/accounts/refresh");
      const failed = results.filter((r) => !r.ok);
      flash(failed.length ? `${failed.length} of ${results.length} could not refresh: ${failed[0].error}` : `Refreshed ${results.length} accounts.`, failed.length > 0);
      state.accounts = await api.get("/api/accounts");
      this.update();
    } catch (e) {
      flash(e.message, true);
    } finally {
      button.disabled = false;
    }
  },
};

function accountCard(a) {
  const page = PAGES.accounts;
  const busy = ui.busy[a.id];
  const statusBadge = a.status === "cooling"
    ? h("span", {class: "badge cooling"}, `cooling (${a.cooldowns["*"].error_class}) · `, countdown(a.cooldowns["*"].until))
    : h("span", {class: `badge ${a.status}`}, a.status);
  const meta = [a.label && a.email ? a.email : null, `id ${a.id}`, `priority ${a.priority}`,
    a.max_concurrent ? `max ${a.max_concurrent} at a time` : null, a.in_flight ? `${a.in_flight} in flight` : null,
    a.project ? `project ${a.project}` : null, a.kind !== "google" ? `key ${a.secret}` : null].filter(Boolean).join(" · ");
  const button = (action, label, onclick, cls = "small") => h("button", {class: cls, dataset: {action}, disabled: Boolean(busy), onclick}, label);
  const actions = h("div", {class: "actions"},
    busy ? h("span", {class: "muted small"}, `${busy}…`) : null,
    a.enabled ? button("disable", "Disable", () => page.act(a.id, () => api.post(`/api/accounts/${a.id}/disable`), "disabling"))
      : button("enable", "Enable", () => page.act(a.id, () => api.post(`/api/accounts/${a.id}/enable`), "enabling")),
    button("refresh", "Refresh", () => page.act(a.id, () => api.post(`/api/accounts/${a.id}/refresh`), "refreshing")),
    button("check", "Check", () => page.act(a.id, async () => { ui.checks[a.id] = await api.post(`/api/accounts/${a.id}/check`); }, "checking")),
    button("edit", "Edit", () => { ui.open[a.id] = ui.open[a.id] ? null : "edit"; page.update(); }),
    button("remove", "Remove", async () => {
      if (!await confirmAction(`Remove ${a.name}?`, "The account leaves the pool and its credentials are deleted from this machine.")) return;
      page.act(a.id, async () => { await api.del(`/api/accounts/${a.id}`); flash(`Removed ${a.name}.`); }, "removing");
    }, "small danger"));
  const card = h("section", {class: `account${a.enabled ? "" : " is-disabled"}`, dataset: {account: a.id, status: a.status}},
    h("div", {class: "account-head"},
      h("span", {class: "badge kind"}, a.kind), h("span", {class: "name"}, a.name), statusBadge,
      h("span", {class: "meta"}, meta), actions));
  const quota = Object.entries(a.quota || {});
  const cooling = Object.entries(a.cooldowns || {}).filter(([m]) => m !== "*");
  if (quota.length || cooling.length) {
    const models = [...new Set([...quota.map(([m]) => m), ...cooling.map(([m]) => m)])].sort();
    card.append(h("div", {class: "quotas"}, models.map((m) => quotaRow(m, (a.quota || {})[m], (a.cooldowns || {})[m]))));
  } else if (a.kind !== "google" && a.models.length) {
    card.append(h("p", {class: "muted small"}, `serves ${a.models.join(", ")}`));
  }
  if (!a.enabled && a.disabled_reason) {
    card.append(h("div", {class: "problem"}, h("div", {}, `Disabled: ${a.disabled_reason}`), a.next_step ? h("div", {class: "next"}, `Next: ${a.next_step}`) : null));
  } else if (a.last_error && (a.next_step || now() - a.last_error.at < 3600)) {
    const e = a.last_error;
    const serious = a.status !== "ready" || NEEDS_THE_USER.has(e.error_class);
    card.append(h("div", {class: `problem${serious ? " bad" : ""}`},
      h("div", {}, h("strong", {}, `At ${clock(e.at)} the account ${e.plain}`), ` (${e.error_class}${e.status ? " " + e.status : ""}${e.model && e.model !== "*" ? ", " + e.model : ""}): ${e.message.slice(0, 240)}`),
      a.next_step ? h("div", {class: "next"}, `Next: ${a.next_step}`) : null,
      a.validation_url ? h("div", {}, h("a", {href: a.validation_url, target: "_blank", rel: "noopener noreferrer"}, "Open the verification page ↗")) : null));
  }
  if (ui.open[a.id] === "edit") card.append(editForm(a));
  if (ui.checks[a.id]) card.append(checkReport(a.id, ui.checks[a.id]));
  return card;
}

function quotaRow(model, q, cd) {
  const left = q && q.remaining !== null && q.remaining !== undefined ? q.remaining : null;
  let bar = null;
  if (left !== null) {
    bar = h("div", {class: `quota-bar${left === 0 ? " empty" : left < 0.2 || q.protected ? " low" : ""}`, dataset: {model}});
    const fill = h("span");
    fill.style.width = `${Math.round(left * 100)}%`;
    bar.append(fill);
  }
  const notes = [];
  if (cd) notes.push(h("span", {class: "badge cooling"}, `${cd.error_class} · `, countdown(cd.until)));
  if (q && q.reset_at && left !== null && left < 1) notes.push(h("span", {}, ` resets ${clock(q.reset_at)} (in `, countdown(q.reset_at), ")"));
  if (q && q.protected) notes.push(h("span", {}, " · kept for last"));
  return h("div", {class: "quota", dataset: {model}},
    h("span", {class: "model", title: (q && q.display_name) || model}, model),
    h("span", {class: "left"}, left === null ? "–" : pct(left)),
    bar,
    notes.length ? h("div", {class: "reset"}, notes) : null);
}

function editForm(a) {
  const form = h("form", {class: "subform form-row", dataset: {form: "edit"}},
    h("label", {class: "field"}, "Priority", h("input", {name: "priority", type: "number", value: a.priority}), h("p", {class: "field-error", dataset: {for: "priority"}, hidden: true})),
    h("label", {class: "field"}, h("span", {}, "Max concurrent ", h("span", {class: "hint"}, "(0: no limit)")),
      h("input", {name: "max_concurrent", type: "number", min: 0, value: a.max_concurrent || 0}), h("p", {class: "field-error", dataset: {for: "max_concurrent"}, hidden: true})),
    h("label", {class: "field"}, "Label", h("input", {name: "label", value: a.label}), h("p", {class: "field-error", dataset: {for: "label"}, hidden: true})),
    h("button", {class: "primary", type: "submit"}, "Save"),
    h("button", {type: "button", onclick: () => { ui.open[a.id] = null; PAGES.accounts.update(); }}, "Cancel"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    const body = {priority: Number(data.priority), max_concurrent: Number(data.max_concurrent), label: data.label};
    try {
      await api.patch(`/api/accounts/${a.id}`, body);
      ui.open[a.id] = null;
      state.accounts = await api.get("/api/accounts");
      PAGES.accounts.update();
    } catch (err) {
      showErrors(form, err.field ? {[err.field]: err.message} : err.fields, err.message);
    }
  });
  return form;
}

function checkReport(id, report) {
  return h("div", {class: "subform", dataset: {check: id}},
    h("h3", {}, `Check: ${report.ok ? "can serve" : "cannot serve"} `,
      h("button", {class: "small", onclick: () => { delete ui.checks[id]; PAGES.accounts.update(); }}, "Close")),
    h("ul", {class: "steps"}, report.steps.map((s) => [
      h("li", {}, h("span", {class: s.ok ? "ok" : "fail"}, s.ok ? "ok   " : "FAIL "), h("strong", {}, s.name), " ", s.detail),
      s.next ? h("li", {class: "next"}, `next: ${s.next}`) : null,
    ])));
}

function showErrors(root, fields, fallback) {
  for (const el of root.querySelectorAll(".field-error[data-for]")) {
    const key = el.dataset.for;
    const found = Object.entries(fields || {}).filter(([k]) => k === key || k.startsWith(key + "."));
    el.textContent = found.map(([k, v]) => (k === key ? v : `${k.slice(key.length + 1)}: ${v}`)).join("; ");
    el.hidden = !found.length;
  }
  const shown = [...root.querySelectorAll(".field-error[data-for]")].some((el) => !el.hidden);
  if (fallback && !shown) flash(fallback, true);
}

// --- Usage ----------------------------------------------------------------------------------------------
PAGES.usage = {
  show(main) {
    this.main = main;
    const u = state.usage;
    const seg = (name, options) => h("div", {class: "segmented", dataset: {control: name}}, options.map(([value, label]) =>
      h("button", {class: u[name] === value ? "on" : "", dataset: {value}, onclick: () => { u[name] = value; route(); }}, label)));
    main.append(
      h("div", {class: "toolbar"}, h("h1", {}, "Usage"),
        seg("range", [["24h", "24 h"], ["7d", "7 d"], ["30d", "30 d"]]),
        seg("by", [["model", "by model"], ["account", "by account"]]),
        h("span", {class: "spacer"}),
        h("button", {id: "csv", onclick: () => this.csv()}, "Download CSV")),
      h("div", {class: "panel", id: "usage-totals"}, h("p", {class: "muted"}, "Loading…")),
      h("div", {class: "panel"}, h("h2", {}, "Tokens"), h("div", {class: "chart-box", id: "chart-tokens"})),
      h("div", {class: "grid cols-2"},
        h("div", {class: "panel"}, h("h2", {}, "Requests and errors"), h("div", {class: "chart-box", id: "chart-requests"})),
        h("div", {class: "panel"}, h("h2", {}, "Latency and time to first byte"), h("div", {class: "chart-box", id: "chart-latency"}))),
      h("div", {class: "panel"}, h("h2", {}, `By ${u.by}`), h("div", {id: "usage-table"})));
    this.load();
  },
  later() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => { if (currentPage === "usage") this.load(); }, 3000);
  },
  async load() {
    const u = state.usage, q = `range=${u.range}&by=${u.by}`;
    const since = u.range;
    const charts = ["tokens", "requests", "latency"].map(async (name) => {
      const box = $(`#chart-${name}`);
      const width = Math.max(320, Math.round(box ? box.clientWidth : 960));
      const svg = await api.text(`/api/usage/${name}.svg?${q}&width=${width}`);
      const doc = new DOMParser().parseFromString(svg, "image/svg+xml");
      if (box) box.replaceChildren(document.importNode(doc.documentElement, true));
    });
    const report = await api.get(`/api/stats?since=${since}&by=${u.by}`);
    const t = report.totals;
    const totals = $("#usage-totals"), table = $("#usage-table");
    if (!totals) return;
    totals.replaceChildren(h("div", {class: "stats"},
      stat(num(t.requests), "requests"), stat(num(t.errors), "errors"), stat(num(t.retried), "retried"),
      stat(big(t.input_tokens), "tokens in"), stat(big(t.output_tokens), "tokens out"), stat(big(t.cached_tokens), "cached"),
      stat(ms(t.p50_latency_ms), "latency p50"), stat(ms(t.p95_latency_ms), "latency p95"), stat(ms(t.avg_ttfb_ms), "first byte avg")));
    const key = u.by === "account" ? (r) => r.account || r.account_id || "(none)" : (r) => r.model || "(none)";
    table.replaceChildren(report.rows.length ? h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, u.by), ...["requests", "errors", "retried", "tokens in", "tokens out", "avg latency", "avg first byte"].map((c) => h("th", {class: "num"}, c)))),
      h("tbody", {}, report.rows.map((r) => h("tr", {}, h("td", {class: u.by === "model" ? "mono" : ""}, key(r)),
        h("td", {class: "num"}, num(r.requests)), h("td", {class: "num"}, num(r.errors)), h("td", {class: "num"}, num(r.retried)),
        h("td", {class: "num"}, num(r.input_tokens)), h("td", {class: "num"}, num(r.output_tokens)),
        h("td", {class: "num"}, ms(r.avg_latency_ms)), h("td", {class: "num"}, ms(r.avg_ttfb_ms))))))
      : h("p", {class: "muted"}, "No requests in this range."));
    await Promise.all(charts);
  },
  async csv() {
    const blob = await api.blob(`/api/requests.csv?since=${state.usage.range}`);
    const a = h("a", {href: URL.createObjectURL(blob), download: `switchyard-requests-${state.usage.range}.csv`});
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  },
};

// --- Requests ---------------------------------------------------------------------------------------------
PAGES.requests = {
  fresh: new Set(),
  async show(main) {
    this.main = main;
    const f = state.filters;
    const select = (name, label, options) => h("label", {class: "field"}, label,
      h("select", {name, onchange: (e) => { f[name] = e.target.value; this.load(); }},
        h("option", {value: ""}, "all"), options.map(([value, text]) => h("option", {value, selected: f[name] === value}, text))));
    const choices = state.choices = await api.get("/api/requests/choices?since=30d").catch(() => ({accounts: [], models: [], protocols: [], error_classes: []}));
    const accounts = new Map(choices.accounts.map((a) => [a.id, a.name]));
    for (const a of state.accounts || []) if (!accounts.has(a.id)) accounts.set(a.id, a.name);
    main.append(
      h("div", {class: "toolbar"}, h("h1", {}, "Requests"),
        select("status", "Status", [["ok", "answered"], ["error", "failed"], ...choices.error_classes.map((c) => [c, c])]),
        select("account", "Account", [...accounts].map(([id, name]) => [id, name])),
        select("model", "Model", choices.models.map((m) => [m, m])),
        select("protocol", "Protocol", choices.protocols.map((p) => [p, p]))),
      h("div", {class: "panel", id: "request-list"}, h("p", {class: "muted"}, "Loading…")));
    await this.load();
  },
  async load() {
    const q = new URLSearchParams(Object.entries(state.filters).filter(([, v]) => v));
    q.set("limit", "100");
    const page = await api.get(`/api/requests?${q}`);
    this.rows = page.rows;
    this.nextBefore = page.next_before;
    if (page.mitmweb) state.mitmweb = page.mitmweb;
    this.fresh = new Set();
    this.update();
  },
  matches(row) {
    const f = state.filters;
    if (f.account && row.account_id !== f.account) return false;
    if (f.model && row.model !== f.model && row.requested_model !== f.model) return false;
    if (f.protocol && row.protocol !== f.protocol) return false;
    if (f.status === "ok" && row.error_class) return false;
    if (f.status === "error" && !row.error_class) return false;
    if (f.status && !["ok", "error"].includes(f.status) && String(row.status) !== f.status && row.error_class !== f.status) return false;
    return true;
  },
  update() {
    const box = $("#request-list");
    if (!box || !this.rows) return;
    const known = new Set(this.rows.map((r) => r.id));
    const incoming = state.requests.filter((r) => !known.has(r.id) && r.id > (this.rows[0] ? this.rows[0].id : 0) && this.matches(r));
    this.rows = [...incoming, ...this.rows];
    const more = this.nextBefore ? h("button", {id: "more", onclick: () => this.more()}, "Older requests") : null;
    box.replaceChildren(this.rows.length ? requestTable(this.rows, true, this.fresh) : h("p", {class: "muted"}, "No requests match."));
    if (more) box.append(more);
  },
  async more() {
    const q = new URLSearchParams(Object.entries(state.filters).filter(([, v]) => v));
    q.set("before", this.nextBefore);
    q.set("limit", "100");
    const page = await api.get(`/api/requests?${q}`);
    this.rows = [...this.rows, ...page.rows];
    this.nextBefore = page.next_before;
    this.update();
  },
};

function requestTable(rows, full, fresh = new Set()) {
  const head = ["time", "protocol", "model", "account", "status", "attempts", "tokens in", "tokens out", "latency", "first byte"];
  return h("table", {class: "requests"},
    h("thead", {}, h("tr", {}, head.map((c, i) => h("th", {class: i >= 5 ? "num" : ""}, c)), full ? h("th", {}, "") : null)),
    h("tbody", {}, rows.map((r) => {
      const asked = r.requested_model && r.model && r.requested_model !== r.model ? ` (asked ${r.requested_model})` : "";
      const status = r.error_class ? h("span", {class: "badge bad"}, `${r.status || "–"} ${r.error_class}`) : h("span", {class: "badge ok"}, r.status);
      return h("tr", {class: fresh.has(r.id) ? "new" : "", dataset: {requestId: String(r.id), account: r.account_id || ""}},
        h("td", {}, clock(r.at)), h("td", {}, r.protocol + (r.stream ? " · stream" : "")),
        h("td", {class: "model mono"}, (r.model || r.requested_model || "–") + asked),
        h("td", {class: "acct"}, r.account || r.account_id || "–"), h("td", {}, status),
        h("td", {class: r.attempts > 1 ? "num retried" : "num", title: r.attempts > 1 ? "retried on another account before the first byte" : null}, r.attempts), h("td", {class: "num"}, num(r.input_tokens)), h("td", {class: "num"}, num(r.output_tokens)),
        h("td", {class: "num"}, ms(r.latency_ms)), h("td", {class: "num"}, ms(r.ttfb_ms)),
        full ? h("td", {}, r.mitmweb_url ? h("a", {href: r.mitmweb_url, target: "_blank", rel: "noopener noreferrer", class: "flow-link"}, "flow ↗") : null) : null);
    })));
}

// --- Connect ------------------------------------------------------------------------------------------------
PAGES.connect = {
  async show(main) {
    const c = state.connect = await api.get("/api/connect");
    const key = sessionStorage.getItem(KEY_STORE);
    const fill = (text) => (c.key_placeholder && key ? text.split(c.key_placeholder).join(key) : text);
    main.append(
      h("div", {class: "toolbar"}, h("h1", {}, "Connect a client")),
      h("div", {class: "panel"},
        h("dl", {class: "kv"},
          h("dt", {}, "Base URL"), h("dd", {}, c.base_url, h("span", {class: "hint"}, "  (OpenAI-style clients add /v1)")),
          h("dt", {}, "Key"), h("dd", {}, c.auth_required ? (key ? "the key you entered (in the snippets below)" : c.key_placeholder) : "not needed on this machine (any text works)"),
          h("dt", {}, "Models"), h("dd", {}, h("div", {class: "models-list"}, c.models.length ? c.models.map((m) => h("span", {class: "badge"}, m)) : "none yet: add an account")))),
      h("div", {class: "grid"}, c.clients.map((client) => h("div", {class: "panel", dataset: {client: client.id}},
        h("h2", {}, client.name),
        client.snippets.map((s) => {
          const text = fill(s.text);
          return h("div", {class: "snippet"}, h("div", {class: "where"}, s.title),
            h("pre", {}, h("code", {}, text)),
            h("button", {class: "small copy", onclick: (e) => copy(text, e.target)}, "Copy"));
        })))));
  },
};

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) {
    const area = h("textarea", {}, text);
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

// --- Settings -----------------------------------------------------------------------------------------------
const SETTINGS = [
  ["Routing", [
    ["routing.scheduling", "Scheduling", "select", ["balance", "cache_first", "performance_first"], "balance: least loaded for its quota; cache_first: a conversation stays on its account; performance_first: lowest expected wait"],
    ["routing.sticky_ttl", "Sticky TTL (seconds)", "int", null, "how long a conversation stays on its account (cache_first)"],
    ["routing.max_attempts", "Max attempts", "int", null, "accounts tried per request before the first byte (1–20)"],
    ["proxy.request_timeout", "Request timeout (seconds)", "float", null, "the whole upstream exchange"],
  ]],
  ["Quota protection", [
    ["quota.protect_below", "Protect below (%)", "float", null, "an account with less quota left for a model serves it only when no other can"],
    ["quota.protect_models", "Per-model thresholds (%)", "map", "number", "model or glob → percent; the most specific wins"],
    ["quota.refresh_interval", "Quota refresh (seconds)", "float", null, "between quota fetches per Google account; 0: only on demand"],
  ]],
  ["Model mapping", [
    ["model_mapping", "Model mapping", "map", "text", "what clients ask for (exact or * glob) → the model to route; the most specific wins"],
  ]],
  ["Gateway", [
    ["monitor.max_flows", "mitmweb flows kept", "int", null, "the oldest finished flows go first"],
    ["usage.retention_days", "Usage ledger retention (days)", "int", null, ""],
    ["proxy.port", "Port", "int", null, ""],
  ]],
];

PAGES.settings = {
  async show(main) {
    this.main = main;
    state.config = await api.get("/api/config");
    this.render();
  },
  render() {
    const c = state.config, main = this.main;
    const form = h("form", {id: "settings-form"});
    const sections = SETTINGS.map(([title, fields]) => h("div", {class: "panel"}, h("h2", {}, title),
      fields.map(([key, label, type, extra, hint]) => settingField(key, label, type, extra, hint, c.fields[key]))));
    const v = c.values;
    const info = h("div", {class: "panel"}, h("h2", {}, "Set in config.toml"), h("dl", {class: "kv"},
      h("dt", {}, "auth_mode"), h("dd", {}, `${v.proxy.auth_mode}`),
      h("dt", {}, "allow_lan_access"), h("dd", {}, String(v.proxy.allow_lan_access)),
      h("dt", {}, "api_key"), h("dd", {}, v.proxy.api_key),
      h("dt", {}, "Cloud Code endpoints"), h("dd", {}, v.upstreams.antigravity.endpoints.join(", ")),
      h("dt", {}, "OAuth client"), h("dd", {}, v.upstreams.antigravity.client_id || "(from the environment)"),
      h("dt", {}, "client_version"), h("dd", {}, v.upstreams.antigravity.client_version)),
      h("p", {class: "hint"}, "These change only in the file (some are security settings); a restart applies them."));
    form.append(h("div", {class: "settings-grid"}, sections, info),
      h("div", {class: "toolbar"}, h("button", {class: "primary", type: "submit", id: "save-settings"}, "Save"),
        h("span", {class: "muted", id: "settings-note"}, "Saved to config.toml; settings marked “at once” apply from the next request.")));
    form.addEventListener("submit", (e) => { e.preventDefault(); this.save(form); });
    main.replaceChildren(h("div", {class: "toolbar"}, h("h1", {}, "Settings")), form);
  },
  async save(form) {
    const changes = {};
    for (const [key, field] of Object.entries(state.config.fields)) {
      const value = readField(form, key, field);
      if (value !== undefined && JSON.stringify(value) !== JSON.stringify(field.value)) changes[key] = value;
    }
    showErrors(form, {});
    if (!Object.keys(changes).length) { flash("Nothing changed."); return; }
    try {
      state.config = await api.patch("/api/config", changes);
      this.render();
      const pending = Object.entries(state.config.fields).filter(([, f]) => f.pending).map(([k]) => k);
      flash(pending.length ? `Saved. ${pending.join(", ")} take${pending.length === 1 ? "s" : ""} effect after a restart.` : "Saved and applied.");
    } catch (e) {
      showErrors(form, e.fields, e.message);
    }
  },
};

function settingField(key, label, type, extra, hint, field) {
  let input;
  if (type === "select") input = h("select", {name: key}, extra.map((o) => h("option", {value: o, selected: field.value === o}, o)));
  else if (type === "map") input = pairsEditor(key, field.value || {}, extra);
  else input = h("input", {name: key, type: "number", step: type === "int" ? "1" : "any", value: field.value});
  const when = field.applies === "live" ? h("span", {class: "badge ok"}, "at once") : h("span", {class: "badge warn"}, "after a restart");
  return h("div", {class: "setting", dataset: {setting: key}},
    h("label", {class: "field"}, h("span", {}, label, " ", when, field.pending ? h("span", {class: "badge bad"}, " restart needed") : null), input),
    hint ? h("div", {class: "hint"}, hint) : null,
    h("p", {class: "field-error", dataset: {for: key}, hidden: true}));
}

function pairsEditor(key, value, kind) {
  const box = h("div", {class: "pairs", dataset: {map: key, kind}});
  const add = (k = "", v = "") => box.insertBefore(h("div", {class: "pair"},
    h("input", {class: "k", placeholder: key === "model_mapping" ? "gpt-4o*" : "claude-opus-*", value: k}),
    h("input", {class: "v", placeholder: kind === "number" ? "25" : "gemini-3-flash", value: v}),
    h("button", {type: "button", class: "small", onclick: (e) => e.target.parentElement.remove()}, "×")), box.lastChild);
  box.append(h("button", {type: "button", class: "small", onclick: () => add()}, "Add a row"));
  for (const [k, v] of Object.entries(value)) add(k, String(v));
  return box;
}

function readField(form, key, field) {
  const box = form.querySelector(`[data-map="${key}"]`);
  if (box) {
    const out = {};
    for (const pair of box.querySelectorAll(".pair")) {
      const k = pair.querySelector(".k").value.trim(), v = pair.querySelector(".v").value.trim();
      if (!k) continue;
      out[k] = box.dataset.kind === "number" && v !== "" && !isNaN(Number(v)) ? Number(v) : v;
    }
    return out;
  }
  const input = form.querySelector(`[name="${key}"]`);
  if (!input) return undefined;
  if (input.tagName === "SELECT") return input.value;
  return input.value === "" ? "" : Number(input.value);
}

// --- start --------------------------------------------------------------------------------------------------
async function start() {
  window.addEventListener("hashchange", route);
  try {
    const page = await api.get("/api/requests?limit=50");
    state.requests = page.rows;
    state.lastId = page.rows.length ? page.rows[0].id : 0;
    state.mitmweb = page.mitmweb;
    const link = $("#mitmweb-link");
    if (page.mitmweb) { link.href = page.mitmweb + MARKED; link.hidden = false; }
  } catch (e) {
    flash(e.message, true);
  }
  route();
  live();
}

document.addEventListener("DOMContentLoaded", start);
