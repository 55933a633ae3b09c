// The worklist: received studies with modality, date, job status and the prediction with
// its confidence. Received and study date sort on the server (over all pages); the other
// columns sort the page shown. Filters by modality and status; paged.

import { get } from "./api.js";
import {
  dicomDate,
  el,
  fill,
  labelled,
  localTime,
  percent,
  personName,
  select,
  showStatus,
} from "./dom.js";

const PAGE_SIZE = 20;
const STATUSES = ["pending", "received", "processing", "done", "failed"];
// key -> [header, value for sorting, server sort name or null]
const COLUMNS = [
  ["patient", "Patient", (item) => item.patient_name, null],
  ["patient_id", "Patient ID", (item) => item.patient_id, null],
  ["date", "Study date", (item) => item.study_date, "date"],
  ["modalities", "Modalities", (item) => item.modalities.join(","), null],
  ["status", "Status", (item) => item.job_state || "pending", null],
  ["prediction", "Prediction", (item) => (item.prediction ? item.prediction.label : ""), null],
  [
    "confidence",
    "Confidence",
    (item) => (item.prediction ? (item.prediction.probability ?? -1) : -1),
    null,
  ],
  ["received", "Received", (item) => item.last_received_at, "received"],
];

// Kept while the page lives, so coming back to the worklist restores it.
const state = { modality: "", status: "", offset: 0, sort: "-received", local: null };

/** Renders the worklist into `view.main`. */
export async function renderWorklist(view) {
  const heading = el("h2", { tabindex: -1, text: "Worklist" });
  const modality = select(
    [
      ["", "All"],
      ["MR", "MR"],
      ["US", "US"],
    ],
    { id: "filter-modality", value: state.modality },
  );
  const status = select([["", "All"], ...STATUSES.map((s) => [s, s])], {
    id: "filter-status",
    value: state.status,
  });
  const onFilter = () => {
    state.modality = modality.value;
    state.status = status.value;
    state.offset = 0;
    load();
  };
  modality.addEventListener("change", onFilter);
  status.addEventListener("change", onFilter);
  const table = el("table", { class: "worklist" });
  const range = el("span", { class: "page-range", "aria-live": "polite" });
  const previous = el("button", { type: "button", text: "Previous page" });
  const next = el("button", { type: "button", text: "Next page" });
  const refresh = el("button", { type: "button", text: "Refresh" });
  let page = { items: [], total: 0 };

  previous.addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE_SIZE);
    load();
  });
  next.addEventListener("click", () => {
    state.offset += PAGE_SIZE;
    load();
  });
  refresh.addEventListener("click", () => load());

  fill(
    view.main,
    heading,
    el(
      "div",
      { class: "filters" },
      el("span", { class: "control" }, labelled("Modality", modality)),
      el("span", { class: "control" }, labelled("Status", status)),
      refresh,
    ),
    table,
    el("div", { class: "pager" }, previous, range, next),
    el("p", {
      class: "hint",
      text: "Select a row and press Enter to open the study. Results are not for diagnostic use.",
    }),
  );
  heading.focus();

  function draw() {
    const items = [...page.items];
    if (state.local) {
      const column = COLUMNS.find(([key]) => key === state.local.key);
      const sign = state.local.descending ? -1 : 1;
      items.sort((a, b) => sign * compare(column[2](a), column[2](b)));
    }
    fill(
      table,
      el("caption", { text: "Studies received (identified: for authorised clinical users)" }),
      el("thead", {}, el("tr", {}, COLUMNS.map(headerCell))),
      el(
        "tbody",
        {},
        items.length
          ? items.map(row)
          : el("tr", {}, el("td", { colspan: COLUMNS.length, text: "No studies match." })),
      ),
    );
    const first = page.total ? state.offset + 1 : 0;
    const last = state.offset + page.items.length;
    range.textContent = `${first}–${last} of ${page.total}`;
    previous.disabled = state.offset === 0;
    next.disabled = last >= page.total;
  }

  function headerCell([key, text, , server]) {
    let direction = "none";
    if (state.local && state.local.key === key)
      direction = state.local.descending ? "descending" : "ascending";
    else if (!state.local && server && state.sort.replace("-", "") === server) {
      direction = state.sort.startsWith("-") ? "descending" : "ascending";
    }
    const button = el("button", {
      type: "button",
      class: "sort",
      text,
      title: server ? "Sort all studies" : "Sort this page",
      onclick: () => {
        if (server) {
          const descending = direction !== "descending";
          state.sort = `${descending ? "-" : ""}${server}`;
          state.local = null;
          state.offset = 0;
          load();
        } else {
          state.local = { key, descending: direction === "ascending" };
          draw();
          table.querySelector(`th[data-key="${key}"] button`).focus();
        }
      },
    });
    return el("th", { scope: "col", "aria-sort": direction, dataset: { key } }, button);
  }

  function row(item) {
    const open = () => {
      location.hash = `#/study/${encodeURIComponent(item.study_instance_uid)}`;
    };
    const prediction = item.prediction;
    return el(
      "tr",
      {
        tabindex: 0,
        class: "study-row",
        dataset: { uid: item.study_instance_uid },
        "aria-label": `Open study of ${personName(item.patient_name)}, ${dicomDate(item.study_date)}`,
        onclick: open,
        onkeydown: (event) => {
          if (event.key === "Enter") open();
        },
      },
      el("td", { text: personName(item.patient_name) }),
      el("td", { text: item.patient_id || "—" }),
      el("td", { text: dicomDate(item.study_date) }),
      el("td", { text: item.modalities.join(", ") || "—" }),
      el(
        "td",
        {},
        el("span", {
          class: `state state-${item.job_state || "pending"}`,
          text: item.job_state || "pending",
        }),
      ),
      el("td", { class: "prediction-cell", text: prediction ? prediction.label : "—" }),
      el("td", { text: prediction ? percent(prediction.probability) : "—" }),
      el("td", { text: localTime(item.last_received_at) }),
    );
  }

  // Only the answer to the latest request is drawn: a filter changed twice quickly must
  // not end with the first answer on screen.
  let latest = 0;
  async function load() {
    latest += 1;
    const mine = latest;
    const current = () => view.active() && mine === latest;
    try {
      const { data } = await get("/api/studies", {
        modality: state.modality,
        status: state.status,
        limit: PAGE_SIZE,
        offset: state.offset,
        sort: state.sort,
      });
      if (!current()) return;
      page = data;
      draw();
    } catch (error) {
      if (current()) showStatus(`Worklist: ${error.detail || error.message}`, "error");
    }
  }

  draw();
  await load();
}

function compare(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b));
}
