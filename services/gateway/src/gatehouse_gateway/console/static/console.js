// The Gatehouse console (docs/console.md): sign-in through Keycloak with the
// authorization-code flow and PKCE, authors listed and paged, created, renamed and
// deleted as the user's roles allow, and live changes over the WebSocket /web, which
// reconnects with a jittered backoff and recovers what it missed by offset
// (docs/websocket.md, Recovery by offset). No build step, no library: plain modules.
// Tokens stay in this page's memory only; a reload signs in again (at once while the
// Keycloak session lasts).

const REALM = document.body.dataset.realm;
const CLIENT_ID = document.body.dataset.clientId;
const OIDC = `${location.origin}/auth/realms/${REALM}/protocol/openid-connect`;
const REDIRECT_URI = `${location.origin}/console/`;
// The API's own client, whose roles the gateway reads (docs/api.md).
const API_CLIENT = "gatehouse-web";
const PER_PAGE = 10;
const BROADCAST = "00000000-0000-0000-0000-000000000000";
const SUBSCRIBE_AUTHORS = 10;
const HISTORY_GAP = 103;
const KINDS = { 100: "created", 101: "updated", 102: "deleted" };
const MAX_RETRIES = 3;

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const session = { access: null, refresh: null, idToken: null, roles: new Set(), timer: null };
const view = { page: 1, pages: 1, search: "", reloadTimer: null };

class ApiError extends Error {
  constructor(status, error) {
    super(error?.msg || `the platform answered ${status}`);
    this.status = status;
    this.code = error?.code || "error";
  }
}

function say(text, kind = "error") {
  const message = $("message");
  message.textContent = text;
  message.className = kind;
}

function fail(error) {
  say(error instanceof ApiError ? `${error.code}: ${error.message}` : String(error.message || error));
}

// --- Sign-in: authorization code with PKCE (RFC 7636, S256) -------------------------

function base64url(bytes) {
  let text = "";
  for (const byte of new Uint8Array(bytes)) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(size) {
  const bytes = new Uint8Array(size);
  crypto.getRandomValues(bytes);
  return base64url(bytes);
}

function claimsOf(token) {
  const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(atob(payload));
}

async function signIn() {
  const verifier = randomString(48);
  const state = randomString(24);
  sessionStorage.setItem("gatehouse-console-pkce", JSON.stringify({ verifier, state }));
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  const query = new URLSearchParams({
    client_id: CLIENT_ID,
    response_type: "code",
    redirect_uri: REDIRECT_URI,
    scope: "openid",
    state,
    code_challenge: base64url(digest),
    code_challenge_method: "S256",
  });
  location.assign(`${OIDC}/auth?${query}`);
}

async function tokenRequest(form) {
  const response = await fetch(`${OIDC}/token`, {
    method: "POST",
    body: new URLSearchParams({ ...form, client_id: CLIENT_ID }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(body.error_description || body.error || `sign-in refused (${response.status})`);
  }
  adopt(body);
}

function adopt(tokens) {
  session.access = tokens.access_token;
  session.refresh = tokens.refresh_token || null;
  session.idToken = tokens.id_token || session.idToken;
  const claims = claimsOf(session.access);
  session.roles = new Set([
    ...(claims.resource_access?.[API_CLIENT]?.roles || []),
    ...(claims.realm_access?.roles || []),
  ]);
  session.username = claims.preferred_username || claims.sub;
  clearTimeout(session.timer);
  // Refreshed 30 s before it expires; the socket gets the new token in an auth frame.
  session.timer = setTimeout(refreshTokens, Math.max(5, tokens.expires_in - 30) * 1000);
  live.reauthenticate();
}

async function refreshTokens() {
  if (!session.refresh) return signedOut("Your session has ended: sign in again.");
  try {
    await tokenRequest({ grant_type: "refresh_token", refresh_token: session.refresh });
  } catch {
    signedOut("Your session has ended: sign in again.");
  }
}

async function finishSignIn(query) {
  const saved = JSON.parse(sessionStorage.getItem("gatehouse-console-pkce") || "null");
  sessionStorage.removeItem("gatehouse-console-pkce");
  history.replaceState(null, "", REDIRECT_URI);
  if (query.get("error")) throw new Error(query.get("error_description") || query.get("error"));
  if (!saved || saved.state !== query.get("state")) {
    throw new Error("This sign-in answer is not for this page: sign in again.");
  }
  await tokenRequest({
    grant_type: "authorization_code",
    code: query.get("code"),
    redirect_uri: REDIRECT_URI,
    code_verifier: saved.verifier,
  });
}

function signOut() {
  const query = new URLSearchParams({ client_id: CLIENT_ID, post_logout_redirect_uri: REDIRECT_URI });
  if (session.idToken) query.set("id_token_hint", session.idToken);
  signedOut("");
  location.assign(`${OIDC}/logout?${query}`);
}

function can(role) {
  return session.roles.has(role) || session.roles.has("admin");
}

// --- The HTTP API ---------------------------------------------------------------

async function api(method, path, body) {
  for (let attempt = 0; ; attempt++) {
    const headers = { Authorization: `Bearer ${session.access}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 429 && attempt < MAX_RETRIES) {
      const wait = Math.max(1, Number(response.headers.get("Retry-After")) || 1);
      say(`Rate limited: trying again in ${wait} s`, "info");
      await sleep(wait * 1000);
      continue;
    }
    if (response.status === 401 && attempt === 0 && session.refresh) {
      await refreshTokens();
      continue;
    }
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, data?.error);
    return data;
  }
}

async function load() {
  const query = new URLSearchParams({ page: view.page, per_page: PER_PAGE });
  if (view.search) query.set("search", view.search);
  const data = await api("GET", `/authors/paginated?${query}`);
  view.pages = Math.max(1, data.meta.pages);
  if (view.page > view.pages) {
    view.page = view.pages;
    return load();
  }
  $("authors").replaceChildren(...data.items.map(row));
  $("page-info").textContent = `page ${view.page} of ${view.pages} (${data.meta.total} authors)`;
  $("prev").disabled = view.page <= 1;
  $("next").disabled = view.page >= view.pages;
}

function reloadSoon() {
  clearTimeout(view.reloadTimer);
  view.reloadTimer = setTimeout(() => {
    // A rename being typed is not swept away: its Save reloads the list.
    if (!$("authors").querySelector(".rename-input")) load().catch(fail);
  }, 200);
}

function button(text, className, action) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = text;
  element.className = className;
  element.addEventListener("click", () => action().catch(fail));
  return element;
}

function row(author) {
  const tr = document.createElement("tr");
  tr.dataset.id = author.id;
  const cells = [author.id, author.name, author.updated_at].map((text) => {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  });
  cells[1].className = "name";
  const actions = document.createElement("td");
  actions.className = "actions";
  if (can("update-author")) actions.append(button("Rename", "rename", () => rename(tr, author)));
  if (can("delete-author")) {
    actions.append(
      button("Delete", "delete", async () => {
        await api("DELETE", `/authors/${author.id}`);
        say(`Deleted ${author.name}`, "info");
        await load();
      }),
    );
  }
  tr.append(...cells, actions);
  return tr;
}

async function rename(tr, author) {
  const cell = tr.querySelector(".name");
  const input = document.createElement("input");
  input.type = "text";
  input.className = "rename-input";
  input.value = author.name;
  input.maxLength = 255;
  const save = button("Save", "save", async () => {
    const renamed = await api("PUT", `/authors/${author.id}`, { name: input.value });
    say(`Renamed to ${renamed.name}`, "info");
    await load();
  });
  cell.replaceChildren(input, save);
  input.focus();
}

async function create() {
  const input = $("create-name");
  const author = await api("POST", "/authors", { name: input.value });
  input.value = "";
  say(`Created ${author.name} (#${author.id})`, "info");
  await load();
}

// --- Live changes: /web, reconnected and recovered by offset ----------------------

function newer(offset, than) {
  if (!than) return true;
  const [a, b] = offset.split("-").map(BigInt);
  const [c, d] = than.split("-").map(BigInt);
  return a > c || (a === c && b > d);
}

const live = {
  socket: null,
  authenticated: false,
  wanted: false,
  offset: null,
  attempt: 0,
  timer: null,
  subscribeId: null,

  status(text) {
    $("status").textContent = text;
    $("status").className = text;
  },

  start() {
    this.wanted = true;
    this.connect();
  },

  stop() {
    this.wanted = false;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, "signed out");
    this.socket = null;
    this.status("offline");
  },

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/web`);
    this.socket = socket;
    this.authenticated = false;
    this.status(this.attempt ? "reconnecting" : "connecting");
    socket.addEventListener("open", () => {
      socket.send(JSON.stringify({ type: "auth", token: `Bearer ${session.access}` }));
    });
    socket.addEventListener("message", (event) => this.receive(JSON.parse(event.data)));
    socket.addEventListener("close", (event) => this.closed(socket, event));
  },

  closed(socket, event) {
    if (this.socket !== socket) return;
    this.socket = null;
    if (!this.wanted) return;
    this.status("reconnecting");
    if (event.code === 4001) refreshTokens();
    // Full jitter: a wait drawn from 0 to min(10 s, 0.2 s × 2^attempt).
    const ceiling = Math.min(10000, 200 * 2 ** this.attempt);
    this.attempt += 1;
    this.timer = setTimeout(() => this.wanted && this.connect(), Math.random() * ceiling);
  },

  reauthenticate() {
    if (this.socket?.readyState === WebSocket.OPEN && this.authenticated) {
      this.socket.send(JSON.stringify({ type: "auth", token: `Bearer ${session.access}` }));
    }
  },

  receive(frame) {
    if (frame.type === "auth_ok") {
      if (!this.authenticated) {
        this.authenticated = true;
        this.subscribeId = crypto.randomUUID();
        const data = { offset: this.offset || "" };
        this.socket.send(JSON.stringify({ pkg_id: SUBSCRIBE_AUTHORS, req_id: this.subscribeId, data }));
      }
      return;
    }
    if (frame.req_id === this.subscribeId) return this.subscribed(frame);
    if (frame.req_id === BROADCAST) this.broadcast(frame);
  },

  subscribed(frame) {
    if (frame.status_code !== 0) {
      // The history cannot be read now (or the role is gone): try again on a new socket.
      say(`Live changes: ${frame.data?.msg || "subscription refused"}`);
      this.socket.close(1000, "resubscribe");
      return;
    }
    this.attempt = 0;
    this.status("live");
    const offset = frame.data?.offset;
    if (frame.data?.recovered === false) {
      this.gap(offset);
    } else if (offset && newer(offset, this.offset)) {
      this.offset = offset;
    }
  },

  gap(offset) {
    this.offset = offset;
    note("history gap: reloaded", offset);
    reloadSoon();
  },

  broadcast(frame) {
    const offset = frame.offset || null;
    if (offset && !newer(offset, this.offset)) return; // delivered already
    if (frame.pkg_id === HISTORY_GAP) return this.gap(offset);
    const kind = KINDS[frame.pkg_id];
    if (!kind) return;
    if (offset) this.offset = offset;
    note(`${kind} #${frame.data.id} ${frame.data.name}`, offset);
    reloadSoon();
  },
};

function note(text, offset) {
  const item = document.createElement("li");
  item.textContent = text;
  if (offset) item.dataset.offset = offset;
  $("changes").prepend(item);
}

// --- The page ----------------------------------------------------------------------

function signedIn() {
  $("user").textContent = session.username;
  $("roles").textContent = [...session.roles].filter((r) => !r.startsWith("default-")).sort().join(", ");
  $("signin").hidden = true;
  $("signout").hidden = false;
  $("creator").hidden = !can("create-author");
  $("app").hidden = false;
  if (!can("get-authors")) {
    say("Your account may not read authors.");
    return;
  }
  load().catch(fail);
  live.start();
}

function signedOut(text) {
  clearTimeout(session.timer);
  live.stop();
  Object.assign(session, { access: null, refresh: null, idToken: null, roles: new Set() });
  $("user").textContent = "";
  $("roles").textContent = "";
  $("signin").hidden = false;
  $("signout").hidden = true;
  $("app").hidden = true;
  say(text, "info");
}

async function main() {
  $("signin").addEventListener("click", () => signIn().catch(fail));
  $("signout").addEventListener("click", signOut);
  $("create").addEventListener("click", () => create().catch(fail));
  $("prev").addEventListener("click", () => {
    view.page -= 1;
    load().catch(fail);
  });
  $("next").addEventListener("click", () => {
    view.page += 1;
    load().catch(fail);
  });
  $("search").addEventListener("input", (event) => {
    view.search = event.target.value;
    view.page = 1;
    reloadSoon();
  });
  const query = new URLSearchParams(location.search);
  if (query.has("code") || query.has("error")) {
    try {
      await finishSignIn(query);
    } catch (error) {
      fail(error);
    }
  }
  if (session.access) signedIn();
  else $("signin").hidden = false;
}

main();
