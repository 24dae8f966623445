// The dashboard's shell: hash routes to views, the search box, the login state, and live
// updates from the node's WebSocket (/subscribe): a new block re-renders the open view.
import * as views from "./views.js";

const ROUTES = {
  "": ["explorer", views.explorer], block: ["block", views.block], event: ["event", views.event],
  principal: ["principal", views.principal], path: ["path", views.path],
  contract: ["contract", views.contract], host: ["host", views.host], owner: ["owner", views.owner],
  login: ["login", views.login],
};

const main = document.getElementById("view");
const errorBox = document.getElementById("error");
const ctx = { node: null, current: null, renders: 0, refreshSession, rerender: () => render() };
// asked at once, beside the first view's own requests; the views that need it wait for it
ctx.ready = refreshSession();
let rendering = null;
let again = false;

async function refreshSession() {
  ctx.node = await views.api("/views/node");
  ctx.ready = Promise.resolve(ctx.node);
  const a = document.getElementById("login-link");
  a.textContent = ctx.node.logged_in ? "Logged in" : "Log in";
  a.dataset.loggedIn = String(ctx.node.logged_in);
}

function parseHash() {
  const raw = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
  const cut = raw.indexOf("/");
  return cut < 0 ? [raw, ""] : [raw.slice(0, cut), raw.slice(cut + 1)];
}

// Draw the view the address names. Renders never overlap: one asked for meanwhile runs next.
async function render() {
  if (rendering) { again = true; return rendering; }
  rendering = (async () => {
    do {
      again = false;
      const [name, arg] = parseHash();
      const [label, view] = ROUTES[name] || ROUTES[""];
      for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === label);
      try {
        const shown = await view(main, arg, ctx);
        await ctx.ready;
        errorBox.hidden = true;
        ctx.current = shown || {};
        document.body.dataset.view = label;
        // the tip the view was drawn at: its own, or the newest the page has heard of
        document.body.dataset.height = String(shown && shown.height !== undefined ? shown.height : ctx.node.height);
      } catch (err) {
        errorBox.textContent = `${label}: ${err.message}`;
        errorBox.hidden = false;
        ctx.current = {};
        document.body.dataset.view = `${label}-error`;
      }
      ctx.renders += 1;
      if (ctx.renders === 1) document.body.dataset.firstRender = String(Math.round(performance.now()));
      document.body.dataset.renders = String(ctx.renders);
    } while (again);
    rendering = null;
  })();
  return rendering;
}

// Live: one WebSocket, opened again (after a pause) whenever it closes.
function live(delay = 500) {
  const dot = document.getElementById("live");
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/subscribe`);
  ws.onopen = () => { dot.classList.add("on"); dot.textContent = "● live"; delay = 500; };
  ws.onclose = () => { dot.classList.remove("on"); dot.textContent = "○"; setTimeout(() => live(Math.min(delay * 2, 10000)), delay); };
  ws.onmessage = (msg) => {
    const item = JSON.parse(msg.data);
    if (item.type === "block") {
      if (ctx.node) { ctx.node.height = item.height; }
      // a form being filled in, or a cost waiting for its confirmation, is not wiped by a
      // redraw: the first block after it is sent or cancelled redraws the view
      if (!main.querySelector("form[data-dirty], [data-confirm]:not([hidden])")) render();
    } else if (item.type === "event" && ctx.current && ctx.current.onEvent) {
      ctx.current.onEvent(item);
    }
  };
}

document.getElementById("search").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = document.getElementById("q").value.trim();
  if (!q) return;
  try {
    const found = await views.api(`/search?q=${encodeURIComponent(q)}`);
    location.hash = found.kind === "path" ? `#/path${found.id}` : `#/${found.kind}/${found.id}`;
  } catch (err) {
    errorBox.textContent = `search: ${err.message}`;
    errorBox.hidden = false;
  }
});

window.addEventListener("hashchange", () => render());
render();
live();
