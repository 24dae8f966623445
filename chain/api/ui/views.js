// The dashboard's views: each fetches the node's JSON and builds the page with DOM calls
// (text only, never HTML from data: paths and addresses come from anyone on chain).
import { lineChart, perPeriod } from "./charts.js";

const COIN = 100000000n;

export class ApiFailure extends Error {
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.code = body.error || "http";
  }
}

// One request to the node. Each carries the header that marks it as the dashboard's (a page
// of another site cannot send it; with the session cookie, which goes along by itself, it
// authorises the actions and the reads of the agents' settings). `body` goes as JSON, `file`
// (a File) as the raw bytes, streamed by the browser.
export async function api(path, { method = "GET", body, file } = {}) {
  const headers = { Accept: "application/json", "X-Blockcoin-Dashboard": "1" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (file !== undefined) headers["Content-Type"] = "application/octet-stream";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: file !== undefined ? file : body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw new ApiFailure(response.status, data);
  return data;
}

// h("td", {class: "mono"}, "text", child, ...): an element with attributes and children.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function coins(units) {
  const n = BigInt(units);
  const sign = n < 0n ? "-" : "";
  const abs = n < 0n ? -n : n;
  const frac = (abs % COIN).toString().padStart(8, "0").replace(/0+$/, "");
  return `${sign}${(abs / COIN).toLocaleString("en")}${frac ? "." + frac : ""} coins`;
}

export function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB", "PB"];
  let v = Number(n);
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return `${i ? v.toFixed(v < 10 ? 2 : 1) : v} ${units[i]}`;
}

const short = (text) => (text && text.length > 20 ? `${text.slice(0, 10)}…${text.slice(-6)}` : text);
const link = (href, text, cls = "mono") => h("a", { href, class: cls }, text);
const blockLink = (id, text) => link(`#/block/${id}`, text ?? short(String(id)));
const principalLink = (p) => (p ? link(`#/principal/${p}`, short(p)) : h("span", { class: "muted" }, "—"));
const coinAxis = (v) => v.toLocaleString("en", { maximumFractionDigits: 8 });
const time = (t) => new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19);

// A figure card; `value` is the raw number the API gave (tests compare it), `text` its display.
function card(label, figure, value, text = value) {
  return h("div", { class: "card" }, h("div", { class: "label" }, label),
    h("div", { class: "value", "data-figure": figure, "data-value": value }, text));
}

// Replace `view`'s content, leaving out the parts a view does not show (null).
function show(view, ...parts) {
  view.replaceChildren(...parts.filter((x) => x !== null && x !== undefined && x !== false));
}

function table(headers, rows, attrs = {}) {
  return h("table", attrs, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, "none"))));
}

function fields(obj) {
  return table(["field", "value"], Object.entries(obj).map(([k, v]) => h("tr", {},
    h("td", {}, k), h("td", { class: "mono", "data-field": k },
      v !== null && typeof v === "object" ? JSON.stringify(v) : String(v)))));
}

function chartBox(name) {
  return h("div", { class: "chart", "data-chart": name });
}

// The outcome of an action, written where the user acted: what was done, or why not.
function outcome(result, run) {
  result.textContent = "…";
  delete result.dataset.outcome;
  return run().then((text) => {
    result.textContent = text;
    result.dataset.outcome = "ok";
  }, (err) => {
    result.textContent = err.status === 401 ? "refused: log in first (unauthorized)" : `refused: ${err.message}`;
    result.dataset.outcome = err.code || "error";
  });
}

// An action form: its fields, a button, and the outcome written next to it (an action
// refused without login says so; nothing else happens). `submit` answers the API's JSON, or
// the text to show. A form being filled in is "dirty": new blocks do not redraw the view until
// it is sent (app.js).
function actionForm(name, inputs, label, submit) {
  const result = h("span", { class: "result", "data-result": name });
  const form = h("form", { class: "action", "data-action": name, oninput: () => { form.dataset.dirty = "1"; } },
    inputs, h("button", { type: "submit" }, label), result);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    outcome(result, async () => {
      const out = await submit(new FormData(form));
      delete form.dataset.dirty;
      return typeof out === "string" ? out : out.id ? `submitted: event ${out.id.slice(0, 16)} pending` : "done";
    });
  });
  return form;
}

// A labelled input.
const field = (label, attrs) => h("label", {}, `${label} `, h("input", { "aria-label": label, ...attrs }));

// --- explorer --------------------------------------------------------------------------------

async function recentBlocks(tip, count) {
  const heights = [];
  for (let x = tip; x >= 0 && heights.length < count; x--) heights.push(x);
  return Promise.all(heights.map((x) => api(`/blocks/${x}`)));
}

function blockRow(b) {
  return h("tr", {}, h("td", {}, blockLink(b.height, String(b.height))), h("td", {}, blockLink(b.hash)),
    h("td", {}, time(b.time)), h("td", {}, b.events.length), h("td", {}, bytes(b.size)));
}

function eventRow(e, height) {
  return h("tr", {}, h("td", {}, link(`#/event/${e.id}`, short(e.id))), h("td", {}, e.kind),
    h("td", {}, principalLink(e.signer || e.recipient)), h("td", {}, height ?? "pending"),
    h("td", {}, e.amount !== undefined ? coins(e.amount) : ""));
}

export function chainCharts(stats, boxes) {
  const pts = stats.points;
  const xs = pts.map((p) => p[0]);
  const col = (name) => stats.fields.indexOf(name);
  const col1 = (name) => pts.map((p) => p[col(name)]);
  lineChart(boxes.circulation, "Coins in circulation", xs, [{ label: "coins", values: col1("circulation").map((v) => v / 1e8) }], coinAxis);
  lineChart(boxes.contract, "Bytes under contract", xs, [{ label: "bytes", values: col1("under_contract") }], bytes);
  lineChart(boxes.proven, "Bytes proven per day (period)", xs, [{ label: "bytes/day", values: perPeriod(pts, col("proven_bytes"), stats.bucket, stats.period_blocks) }], bytes);
  lineChart(boxes.hosts, "Active hosts", xs, [{ label: "hosts", values: col1("active_hosts") }], (v) => String(v));
}

export async function explorer(view) {
  const [status, stats] = await Promise.all([api("/status"), api("/stats/chain")]);
  const blocks = await recentBlocks(status.height, 10);
  const last = stats.points[stats.points.length - 1];
  const at = (name) => last[stats.fields.indexOf(name)];
  const boxes = { circulation: chartBox("circulation"), contract: chartBox("under-contract"), proven: chartBox("proven"), hosts: chartBox("active-hosts") };
  const events = h("tbody", { id: "recent-events" });
  for (const b of blocks) for (const e of b.events) if (events.children.length < 15) events.append(eventRow(e, b.height));
  show(view, 
    h("h1", {}, "Explorer"),
    h("div", { class: "cards" },
      card("Tip height", "tip-height", status.height),
      card("Tip hash", "tip-hash", status.hash, short(status.hash)),
      card("Network", "network", status.network),
      card("Mempool", "mempool", status.mempool),
      card("Peers", "peers", status.peers),
      card("Coins in circulation", "circulation", at("circulation"), coins(at("circulation"))),
      card("Bytes under contract", "under-contract", at("under_contract"), bytes(at("under_contract"))),
      card("Active hosts", "active-hosts", at("active_hosts"))),
    h("h2", {}, "The chain over time"),
    h("div", { class: "charts" }, Object.values(boxes)),
    h("div", { class: "split" },
      h("section", {}, h("h2", {}, "Recent blocks"), table(["height", "hash", "time", "events", "size"], blocks.map(blockRow), { id: "recent-blocks" })),
      h("section", {}, h("h2", {}, "Recent events"), h("table", {}, h("thead", {}, h("tr", {}, ["id", "kind", "by", "block", "amount"].map((x) => h("th", {}, x)))), events))));
  chainCharts(stats, boxes);
  return {
    height: status.height,
    onEvent: (e) => { events.prepend(eventRow(e, null)); while (events.children.length > 15) events.lastChild.remove(); },
  };
}

export async function block(view, id) {
  const b = await api(`/blocks/${encodeURIComponent(id)}`);
  show(view, h("h1", {}, `Block ${b.height}`),
    h("div", { class: "cards" }, card("Height", "block-height", b.height), card("Hash", "block-hash", b.hash, short(b.hash)),
      card("Events", "block-events", b.events.length), card("Size", "block-size", b.size, bytes(b.size)),
      card("Time", "block-time", b.time, time(b.time))),
    h("p", {}, "Previous: ", blockLink(b.prev), b.best_chain ? "" : " (not on the best chain)"),
    h("h2", {}, "Events"), table(["id", "kind", "by", "block", "amount"], b.events.map((e) => eventRow(e, b.height))));
  return { height: b.height };
}

export async function event(view, id) {
  const e = await api(`/events/${encodeURIComponent(id)}`);
  show(view, h("h1", {}, `Event ${short(e.event.id)}`),
    h("div", { class: "cards" }, card("Status", "event-status", e.status), card("Kind", "event-kind", e.event.kind),
      card("Block", "event-height", e.height ?? "pending")),
    e.block ? h("p", {}, "In block ", blockLink(e.block)) : null, fields(e.event));
  return {};
}

export async function contract(view, id, ctx) {
  await ctx.ready;
  const c = await api(`/contracts/${encodeURIComponent(id)}`);
  const mine = ctx.node && c.owner === ctx.node.wallet;
  show(view, h("h1", {}, `Contract ${short(c.id)}`),
    h("div", { class: "cards" }, card("State", "contract-state", c.state), card("Size", "contract-size", c.size, bytes(c.size)),
      card("Proven periods", "contract-proven", c.proven_periods), card("Missed periods", "contract-missed", c.missed_periods),
      card("Escrow", "contract-escrow", c.escrow, coins(c.escrow)), card("Paid", "contract-paid", c.paid_total, coins(c.paid_total))),
    h("p", {}, "Owner ", principalLink(c.owner), " · host ", principalLink(c.host), " · path ", link(`#/path${c.path}`, c.path)),
    mine && (c.state === "active" || c.state === "offered") ? contractActions(c) : null, fields(c));
  return {};
}

function contractActions(c) {
  return h("div", {},
    actionForm("release", [], "Release", () => api(`/contracts/${c.id}/release`, { method: "POST", body: {} })),
    c.state !== "active" ? null : actionForm("extend", [h("input", { name: "periods", type: "number", min: 1, value: 1, "aria-label": "periods to add" })], "Extend",
      (form) => api(`/contracts/${c.id}/extend`, { method: "POST", body: { periods: Number(form.get("periods")) } })));
}

export async function principal(view, id) {
  const a = await api(`/global/principals/${encodeURIComponent(id)}`);
  const r = a.host;
  show(view, h("h1", {}, "Principal"), h("p", { class: "mono", "data-figure": "principal" }, a.principal),
    h("div", { class: "cards" }, card("Balance", "balance", a.balance, coins(a.balance)), card("Nonce", "nonce", a.nonce),
      card("Address", "address", a.address ?? "", a.address ?? "none")),
    r ? h("div", {}, h("h2", {}, "Host record"), h("div", { class: "cards" },
      card("Bytes stored", "host-bytes", r.bytes_stored, bytes(r.bytes_stored)), card("Active contracts", "host-active", r.contracts_active),
      card("Periods proven", "host-proven", r.proven_periods), card("Periods missed", "host-missed", r.missed_periods),
      card("Earned", "host-earned", r.earned, coins(r.earned)), card("Collateral locked", "host-collateral", r.collateral_locked, coins(r.collateral_locked))),
      h("p", {}, link(`#/host/${a.principal}`, "host view", ""))) : null,
    h("p", {}, link(`#/owner/${a.principal}`, "owner view", "")),
    h("h2", {}, "Keys"), fields({ ed25519: a.ed25519, x25519: a.x25519, updated_height: a.updated_height }));
  return {};
}

export async function path(view, id) {
  const full = "/" + id.replace(/^\/+/, "");
  const owner = full.split("/")[1];
  const [frag, owned] = await Promise.all([api(`/global/fragments${full.split("/").map(encodeURIComponent).join("/")}`), api(`/contracts?owner=${encodeURIComponent(owner)}`)]);
  const contracts = owned.contracts.filter((c) => c.path === full);
  const rows = [];
  for (const [index, holders] of Object.entries(frag.fragments))
    for (const x of holders) rows.push(h("tr", {}, h("td", {}, index), h("td", {}, principalLink(x.host)), h("td", { class: "mono" }, x.address ?? ""), h("td", {}, x.contract ? link(`#/contract/${x.contract}`, short(x.contract)) : "")));
  show(view, h("h1", {}, "Path"), h("p", { class: "mono", "data-figure": "path" }, full),
    h("div", { class: "cards" }, card("Fragments held", "fragments-held", Object.keys(frag.fragments).length), card("Contracts", "path-contracts", contracts.length)),
    h("h2", {}, "Holders"), table(["fragment", "host", "address", "contract"], rows),
    h("h2", {}, "Contracts"), contractTable(contracts));
  return {};
}

function contractTable(contracts, extra = null) {
  return table(["contract", "fragment", "host", "state", "size", "proven", "missed", "paid", ...(extra ? extra.headers : [])],
    contracts.map((c) => h("tr", { "data-contract": c.id }, h("td", {}, link(`#/contract/${c.id}`, short(c.id))), h("td", {}, `${c.path.split("/").slice(2).join("/")} #${c.index}`),
      h("td", {}, principalLink(c.host)), h("td", {}, c.state), h("td", {}, bytes(c.size)), h("td", {}, c.proven_periods), h("td", {}, c.missed_periods),
      h("td", {}, coins(c.paid_total)), ...(extra ? extra.cells(c) : []))));
}

// --- host ----------------------------------------------------------------------------------------

function choose(view, kind, text) {
  show(view, h("h1", {}, `${kind} view`), h("p", {}, text),
    h("form", { class: "action", onsubmit: (ev) => { ev.preventDefault(); location.hash = `#/${kind.toLowerCase()}/${new FormData(ev.target).get("p").trim()}`; } },
      h("input", { name: "p", size: 64, placeholder: "blk…", "aria-label": "principal" }), h("button", { type: "submit" }, "Show")));
  return {};
}

// This node's host agent's policy, changed in place: it takes the next offers on the new terms.
// Reading it needs the login too (it says where the pay goes); without an agent, the node's
// answer says which command runs one.
async function policy(ctx) {
  if (!ctx.node.logged_in) return h("p", { class: "muted", "data-policy": "login" }, "Log in to see and change what this host sells.");
  let p;
  try {
    p = await api("/host/policy");
  } catch (err) {
    return h("p", { class: "alert", "data-policy": err.code }, err.message);
  }
  const sat = (x) => (x === null ? "" : `${x}sat`);
  return actionForm("policy", [
    field("capacity", { name: "capacity", size: 10, value: String(p.capacity), title: "bytes, or 512M, 10G" }),
    field("min price", { name: "min_price", size: 12, value: sat(p.min_price), title: "per fragment per period: coins (1.5) or 150sat" }),
    field("max collateral", { name: "max_collateral", size: 12, value: sat(p.max_collateral), placeholder: "what the balance covers" }),
    field("payout", { name: "payout", size: 62, value: p.payout ?? "", placeholder: "the host's own key" })],
  "Save policy", async (form) => {
    const text = (name) => String(form.get(name)).trim();
    const now = await api("/host/policy", { method: "POST", body: {
      capacity: text("capacity"), min_price: text("min_price"),
      max_collateral: text("max_collateral") || null, payout: text("payout") || null } });
    return `saved: selling ${bytes(now.capacity)} from ${coins(now.min_price)} a period, from the next offer on`;
  });
}

export async function host(view, id, ctx) {
  await ctx.ready;
  const p = id || (ctx.node && ctx.node.host);
  if (!p) return choose(view, "Host", "This node's data directory has no host. Which host principal?");
  const [v, stats, terms] = await Promise.all([api(`/views/hosts/${encodeURIComponent(p)}`), api(`/stats/hosts/${encodeURIComponent(p)}`),
    p === ctx.node.host ? policy(ctx) : null]);
  const r = v.record || { bytes_stored: 0, contracts_active: 0, proven_periods: 0, missed_periods: 0, earned: 0, collateral_locked: 0 };
  const earnings = chartBox("earnings");
  show(view, h("h1", {}, v.node_host ? "This node's host" : "Host"), h("p", { class: "mono", "data-figure": "principal" }, v.principal),
    h("div", { id: "alerts" }, v.alerts.map((a) => h("div", { class: "alert", "data-alert": a.code }, a.message))),
    h("div", { class: "cards" },
      card("Capacity", "capacity", v.capacity ?? "", v.capacity === null ? "unknown" : bytes(v.capacity)),
      card("Used", "used", v.used, bytes(v.used)),
      card("Free", "free", v.free ?? "", v.free === null ? "unknown" : bytes(v.free)),
      card("Active contracts", "host-active", r.contracts_active),
      card("Periods proven", "host-proven", r.proven_periods), card("Periods missed", "host-missed", r.missed_periods),
      card("Earned", "host-earned", r.earned, coins(r.earned)), card("Collateral locked", "host-collateral", r.collateral_locked, coins(r.collateral_locked)),
      card("Balance", "balance", v.balance, coins(v.balance))),
    terms ? h("div", {}, h("h2", {}, "Policy"), terms) : null,
    h("h2", {}, "Earnings"), h("div", { class: "charts" }, earnings),
    h("h2", {}, "Contracts"),
    contractTable(v.contracts, { headers: ["next window closes", "this period"], cells: (c) => [
      h("td", {}, c.window_closes === null ? "—" : `block ${c.window_closes} (${c.blocks_left} left)`),
      h("td", {}, c.proven_this_period === null ? "—" : c.proven_this_period ? "proven" : "unproven")] }));
  const xs = stats.points.map((x) => x[0]);
  lineChart(earnings, "Earnings per day (period)", xs, [{ label: "coins/day", values: perPeriod(stats.points, stats.fields.indexOf("earned"), stats.bucket, stats.period_blocks).map((x) => (x === null ? null : x / 1e8)) }], coinAxis);
  return { height: v.tip };
}

// --- owner ---------------------------------------------------------------------------------------

// Store a file with the owner agent on this node's data directory, paid by its wallet: the
// node first quotes the cost, the page shows it, and only a confirmation uploads the file (with
// the confirmed total, above which the agent refuses).
function putForm() {
  const result = h("span", { class: "result", "data-result": "put" });
  const confirm = h("div", { class: "confirm", "data-confirm": "put", hidden: true });
  const form = actionForm("quote", [
    h("input", { name: "file", type: "file", required: true, "aria-label": "file" }),
    field("path", { name: "path", size: 24, placeholder: "the file's name" }),
    field("k", { name: "k", type: "number", min: 1, max: 256, value: 3 }),
    field("n", { name: "n", type: "number", min: 1, max: 256, value: 5 }),
    field("price", { name: "price", size: 10, value: "100000sat", title: "per fragment per period" }),
    field("collateral", { name: "collateral", size: 10, value: "100000sat", title: "asked of each host per fragment per period" }),
    field("periods", { name: "periods", type: "number", min: 1, value: 12 })],
  "Quote", async (data) => {
    const file = data.get("file");
    const terms = { path: String(data.get("path")).trim() || file.name, k: Number(data.get("k")), n: Number(data.get("n")),
      price: String(data.get("price")).trim(), collateral: String(data.get("collateral")).trim(), periods: Number(data.get("periods")) };
    const q = await api("/store/quote", { method: "POST", body: { ...terms, size: file.size } });
    const pay = h("button", { type: "button", "data-action": "put-confirm" }, `Confirm and pay ${coins(q.total)}`);
    const cancel = h("button", { type: "button", onclick: () => { confirm.hidden = true; } }, "Cancel");
    pay.addEventListener("click", () => outcome(result, async () => {
      pay.disabled = true;
      const params = new URLSearchParams({ ...terms, max_cost: q.total });
      const out = await api(`/store/put?${params}`, { method: "POST", file });
      confirm.hidden = true;
      form.reset();
      return `${out.resumed ? "carried on with" : "offered"} ${out.path}: ${out.offers.length} fragment offer(s), ${coins(out.total)}`;
    }).finally(() => { pay.disabled = false; }));
    confirm.replaceChildren(
      h("p", { "data-figure": "put-total", "data-value": q.total },
        `Storing ${bytes(q.size)} at ${q.path} as ${q.n} fragments (any ${q.k} read it back) for ${q.periods} periods of ${q.period_blocks} blocks costs `,
        h("strong", {}, coins(q.total)), `: ${coins(q.escrow)} escrowed for the hosts (${coins(q.price)} × ${q.n} × ${q.periods}) and ${coins(q.fees)} in fees.`),
      pay, cancel);
    confirm.hidden = false;
    return "quoted: confirm below";
  });
  return h("div", {}, form, confirm, result);
}

export async function owner(view, id, ctx) {
  await ctx.ready;
  const p = id || (ctx.node && ctx.node.wallet);
  if (!p) return choose(view, "Owner", "Which owner principal?");
  const [v, stats] = await Promise.all([api(`/views/owners/${encodeURIComponent(p)}`), api(`/stats/owners/${encodeURIComponent(p)}`)]);
  // the hosts paying this principal: their earnings against its liabilities
  const hostStats = await Promise.all(v.paying_hosts.slice(0, 4).map((x) => api(`/stats/hosts/${x}?bucket=${stats.bucket}`)));
  const mine = ctx.node && p === ctx.node.wallet;
  const spend = chartBox("spend");
  const solvency = chartBox("solvency");
  show(view, h("h1", {}, mine ? "This node's owner" : "Owner"), h("p", { class: "mono", "data-figure": "principal" }, v.principal),
    h("div", { class: "cards" },
      card("Files", "files", v.files.length),
      card("Liabilities per period", "liability", v.liability_per_period, coins(v.liability_per_period)),
      card("Host earnings per period", "host-earnings", v.host_earnings_per_period, coins(v.host_earnings_per_period)),
      card("Repairs", "repairs", v.repairs.length)),
    h("h2", {}, "Files"),
    table(["path", "health", "held", "k of n", "contracts", "liability / period", "paid", "missed"], v.files.map((f) => h("tr", { "data-file": f.path },
      h("td", {}, link(`#/path${f.path}`, f.path)), h("td", { class: `health-${f.health}`, "data-health": f.health }, f.health),
      h("td", { "data-held": f.held }, f.held), h("td", {}, `${f.k} of ${f.n}`), h("td", {}, f.contracts),
      h("td", {}, coins(f.liability_per_period)), h("td", {}, coins(f.paid_total)), h("td", {}, f.missed_periods)))),
    h("h2", {}, "Spending and solvency"), h("div", { class: "charts" }, spend, solvency),
    h("h2", {}, "Repairs"),
    table(["path", "fragment", "at block", "replaced", "was", "new host"], v.repairs.map((x) => h("tr", {},
      h("td", {}, x.path), h("td", {}, x.index), h("td", {}, x.height), h("td", {}, link(`#/contract/${x.replaced}`, short(x.replaced))),
      h("td", {}, x.replaced_state), h("td", {}, principalLink(x.host))))),
    h("h2", {}, "Contracts"),
    contractTable(v.contracts, mine ? { headers: ["action"], cells: (c) => [h("td", {}, c.state === "active" || c.state === "offered"
      ? actionForm(`release-${c.id.slice(0, 8)}`, [], "Release", () => api(`/contracts/${c.id}/release`, { method: "POST", body: {} })) : "")] } : null),
    mine ? h("div", {}, h("h2", {}, "Store a file"),
      v.agent_running ? null : h("p", { class: "alert", "data-agent": "owner-absent" },
        "No owner agent runs on this node's data directory: run blockcoin store serve to store files from here."),
      putForm()) : null,
    mine ? h("div", {}, h("h2", {}, "Send coins from this node's wallet"),
      actionForm("send", [h("input", { name: "to", size: 62, placeholder: "recipient blk…", "aria-label": "recipient" }),
        h("input", { name: "amount", size: 10, placeholder: "1.5 or 150sat", "aria-label": "amount" })], "Send",
      (form) => api("/wallet/send", { method: "POST", body: { to: String(form.get("to")).trim(), amount: String(form.get("amount")).trim() } }))) : null);
  const xs = stats.points.map((x) => x[0]);
  const col = (name) => stats.fields.indexOf(name);
  lineChart(spend, "Spend per day (period)", xs, [{ label: "coins/day", values: perPeriod(stats.points, col("paid"), stats.bucket, stats.period_blocks).map((x) => (x === null ? null : x / 1e8)) }], coinAxis);
  const lines = [{ label: "liabilities / period", values: stats.points.map((x) => x[col("liability_per_period")] / 1e8) }];
  const aligned = hostStats.filter((x) => x.points.length === stats.points.length);
  if (aligned.length) {
    const earned = aligned.map((x) => perPeriod(x.points, x.fields.indexOf("earned"), x.bucket, x.period_blocks));
    lines.push({ label: "host earnings / period", values: xs.map((_, i) => (i === 0 ? null : earned.reduce((sum, e) => sum + e[i], 0) / 1e8)) });
  }
  lineChart(solvency, "Liabilities vs host earnings", xs, lines, coinAxis);
  return { height: v.tip };
}

// --- login ---------------------------------------------------------------------------------------

export async function login(view, id, ctx) {
  const s = await api("/session");
  const status = h("p", { "data-figure": "logged-in", "data-value": String(s.logged_in) }, s.logged_in ? "Logged in: actions are enabled." : "Not logged in: the views are read-only.");
  const result = h("span", { class: "result", "data-result": "login" });
  const form = h("form", { class: "action", id: "login-form" },
    h("label", {}, "API token ", h("input", { name: "token", type: "password", size: 66, autocomplete: "off", "aria-label": "API token" })),
    h("button", { type: "submit" }, "Log in"), result);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api("/session", { method: "POST", body: { token: String(new FormData(form).get("token")).trim() } });
      form.reset();
      await ctx.refreshSession();
      location.hash = "#/";
    } catch (err) {
      result.textContent = `refused: ${err.message}`;
      result.dataset.outcome = err.code;
    }
  });
  const out = h("button", { type: "button", onclick: async () => { await api("/session", { method: "DELETE" }); await ctx.refreshSession(); location.hash = "#/login"; ctx.rerender(); } }, "Log out");
  show(view, h("h1", {}, "Log in"), status,
    h("p", { class: "muted" }, "Paste the content of the api.cookie file in the node's data directory. The page keeps no copy: the node answers with a session cookie scripts cannot read."),
    s.logged_in ? out : form);
  return {};
}
