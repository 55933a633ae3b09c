// Free-text search over the de-identified case index (open to researchers too).

import { get } from "./api.js";
import { el, fill, labelled, select, showStatus } from "./dom.js";
import { caseList } from "./cases.js";

// The last search, kept so coming back to the page shows it again.
const last = { text: "", modality: "", label: "", site: "", k: 10 };

/** Renders the search page into `view.main`; `note` (optional) is shown above it. */
export function renderSearch(view, note = null) {
  const heading = el("h2", { tabindex: -1, text: "Search similar cases by text" });
  const text = el("input", {
    type: "search",
    id: "search-text",
    required: true,
    maxlength: 1000,
    placeholder: "reduced ejection fraction with dilated ventricle",
    value: last.text,
  });
  const modality = select(
    [
      ["", "All"],
      ["MR", "MR"],
      ["US", "US"],
    ],
    { id: "search-modality", value: last.modality },
  );
  const label = el("input", { type: "text", id: "search-label", maxlength: 64, value: last.label });
  const site = el("input", { type: "text", id: "search-site", maxlength: 64, value: last.site });
  const k = el("input", { type: "number", id: "search-k", min: 1, max: 100, value: last.k });
  const results = el("div", { class: "search-results", "aria-live": "polite" });
  const form = el(
    "form",
    { class: "search-form", role: "search" },
    el(
      "div",
      { class: "search-main" },
      labelled("Findings or impression", text),
      el("button", { type: "submit", text: "Search" }),
    ),
    el(
      "div",
      { class: "filters" },
      el("span", { class: "control" }, labelled("Modality", modality)),
      el("span", { class: "control" }, labelled("Label", label)),
      el("span", { class: "control" }, labelled("Site", site)),
      el("span", { class: "control" }, labelled("Cases", k)),
    ),
  );
  let latest = 0; // only the answer to the latest search is shown
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    latest += 1;
    const mine = latest;
    const current = () => view.active() && mine === latest;
    Object.assign(last, {
      text: text.value.trim(),
      modality: modality.value,
      label: label.value.trim(),
      site: site.value.trim(),
      k: Number(k.value) || 10,
    });
    if (!last.text) return;
    fill(results, el("p", { text: "Searching…" }));
    try {
      const { data } = await get("/api/cases/search", { ...last });
      if (!current()) return;
      fill(
        results,
        el("p", { class: "hint", text: `${countOf(data.hits.length)}, best match first.` }),
        el("p", { class: "disclaimer", text: data.disclaimer || "" }),
        caseList(data.hits),
      );
    } catch (error) {
      if (!current()) return;
      results.replaceChildren();
      showStatus(`Search: ${error.detail || error.message}`, "error");
    }
  });
  fill(
    view.main,
    note ? el("p", { class: "note", role: "note", text: note }) : null,
    heading,
    form,
    results,
  );
  heading.focus();
  if (last.text) form.requestSubmit();
}

function countOf(n) {
  return `${n} case${n === 1 ? "" : "s"}`;
}
