// mmdx web page: sign-in, the hash routes (#/worklist, #/study/<uid>, #/search) and the
// header. Each route renders into <main> through a "view" that knows whether it is still
// the current one (answers arriving after the user moved on are dropped) and which timers
// to stop when the user leaves it.

import { ApiError, onUnauthorized, request } from "./api.js";
import { clearStatus, el, fill, labelled, showStatus } from "./dom.js";
import { renderSearch } from "./search.js";
import { renderStudy } from "./study.js";
import { renderWorklist } from "./worklist.js";

const RESEARCHER_NOTE =
  "Signed in as a researcher: only the de-identified case search is available. The worklist " +
  "and the study views show identified patient data and need a radiologist or admin role.";

const main = document.getElementById("main");
let session = null;
let generation = 0;
let leaving = [];

function clinical() {
  return session !== null && session.role !== "researcher";
}

function showHeader() {
  const signedIn = session !== null;
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("nav-worklist").hidden = !clinical();
  document.getElementById("who").hidden = !signedIn;
  document.getElementById("who-name").textContent = signedIn ? session.user : "";
  document.getElementById("who-role").textContent = signedIn ? session.role : "";
}

function newView() {
  for (const stop of leaving) stop();
  leaving = [];
  generation += 1;
  const mine = generation;
  return {
    main,
    active: () => mine === generation,
    onLeave: (stop) => leaving.push(stop),
  };
}

function route() {
  const view = newView();
  showHeader();
  if (session === null) {
    renderSignIn(view);
    return;
  }
  const [, page = "", argument = ""] = /^#\/([a-z]*)\/?(.*)$/.exec(location.hash) || [];
  if (!clinical()) {
    renderSearch(view, RESEARCHER_NOTE);
    return;
  }
  if (page === "study" && argument) renderStudy(view, decoded(argument));
  else if (page === "search") renderSearch(view);
  else renderWorklist(view);
}

/** A route's argument URL-decoded; as it is when it is not valid percent-encoding. */
function decoded(argument) {
  try {
    return decodeURIComponent(argument);
  } catch {
    return argument;
  }
}

function renderSignIn(view) {
  const token = el("input", { type: "password", id: "token", autocomplete: "off", required: true });
  const heading = el("h2", { tabindex: -1, text: "Sign in" });
  const form = el(
    "form",
    { class: "sign-in" },
    heading,
    el("p", {
      text: "Paste the access token you were given (mmdx users add). It is exchanged for a session cookie and not kept by the page.",
    }),
    el("div", { class: "control" }, labelled("Access token", token)),
    el("button", { type: "submit", text: "Sign in" }),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const { data } = await request("POST", "/ui/api/session", {
        body: { token: token.value.trim() },
      });
      token.value = "";
      session = data;
      showStatus(`Signed in as ${data.user} (${data.role}).`);
      route();
    } catch (error) {
      token.value = "";
      showStatus(`Sign-in refused: ${error.detail || error.message}`, "error");
    } finally {
      button.disabled = false;
    }
  });
  fill(view.main, form);
  token.focus();
}

async function signOut() {
  try {
    await request("DELETE", "/ui/api/session");
    showStatus("Signed out.");
  } catch (error) {
    showStatus(`Sign-out: ${error.detail || error.message}`, "error");
  }
  session = null;
  history.replaceState(null, "", location.pathname);
  route();
}

async function start() {
  document.getElementById("sign-out").addEventListener("click", signOut);
  window.addEventListener("hashchange", () => {
    clearStatus();
    route();
  });
  onUnauthorized(() => {
    if (session === null) return;
    session = null;
    showStatus("Your session has ended: sign in again.", "error");
    route();
  });
  try {
    session = (await request("GET", "/ui/api/session")).data;
  } catch (error) {
    session = null;
    if (!(error instanceof ApiError) || error.status !== 401) {
      showStatus(`Session: ${error.detail || error.message}`, "error");
    }
  }
  route();
}

start();
