// De-identified similar cases: the card every list uses, the similar-cases panel of a
// result (filters, citations that reveal a card, side-by-side compare) and the ranked list.
// A case carries only a pseudonymous id, site code, label, score and a scrubbed report.

import { casePath, get } from "./api.js";
import { el, fill, highlighted, labelled, select, showStatus } from "./dom.js";
import { feedbackForm } from "./feedback.js";

const FLASH_MS = 2500;

/** A short form of a case id for headings ("2.25.1234…" -> "…56789012"). */
export function shortId(caseId) {
  const text = String(caseId);
  return text.length > 12 ? `…${text.slice(-8)}` : text;
}

/**
 * One ranked case: rank, thumbnail, score, label, site, the report with its matched
 * sentences in <mark>. Options: onCompare(hit) adds a Compare button; feedback
 * ({studyUid, modality, onSaved}) adds an agree/disagree/comment form.
 */
export function caseCard(hit, { onCompare = null, feedback = null } = {}) {
  const report = hit.report_text || hit.report_excerpt || "";
  const card = el(
    "article",
    {
      class: "case-card",
      tabindex: -1,
      "aria-label": `Similar case rank ${hit.rank}, ${hit.label}`,
      dataset: {
        caseId: hit.case_id,
        score: String(hit.score),
        rank: String(hit.rank),
        label: hit.label || "",
        site: hit.site_id || "",
        modality: hit.modality || "",
      },
    },
    el(
      "div",
      { class: "case-head" },
      el("span", { class: "rank", text: `#${hit.rank}` }),
      el("span", { class: "case-label", text: hit.label || "unlabelled" }),
      el("span", { class: "score", text: `score ${Number(hit.score).toFixed(3)}` }),
    ),
    el(
      "div",
      { class: "case-body" },
      thumbnail(hit.case_id, "thumbnail"),
      el(
        "div",
        {},
        el("p", {
          class: "case-meta",
          text: `${hit.modality || ""} · site ${hit.site_id || "—"} · case ${shortId(hit.case_id)}`,
        }),
        el("p", { class: "report" }, highlighted(report, hit.matched_sentences)),
        hit.why ? el("p", { class: "hint why", text: hit.why }) : null,
      ),
    ),
  );
  const actions = el("div", { class: "case-actions" });
  if (onCompare) {
    actions.append(
      el("button", {
        type: "button",
        class: "compare-button",
        text: "Compare",
        onclick: () => onCompare(hit),
      }),
    );
  }
  if (feedback) {
    actions.append(
      el(
        "details",
        { class: "case-feedback" },
        el("summary", { text: "Feedback on this case" }),
        feedbackForm({
          studyUid: feedback.studyUid,
          target: "case",
          caseId: hit.case_id,
          modality: feedback.modality,
          legend: `Is case #${hit.rank} (${hit.label}) a good match?`,
          onSaved: feedback.onSaved,
        }),
      ),
    );
  }
  if (actions.childElementCount) card.append(actions);
  return card;
}

/** A ranked list of cases (best first). */
export function caseList(hits, options = {}) {
  return el(
    "ol",
    { class: "case-list" },
    hits.map((hit) => el("li", {}, caseCard(hit, options))),
  );
}

/**
 * The similar-cases panel of one result. `compareImage()` gives a node with the current
 * study's key image (or null). Returns {node, reveal(caseId)}.
 */
export function similarPanel(hits, { studyUid, modality, compareImage, onFeedback }) {
  const compareRegion = el("div", { class: "compare-region" });
  const list = caseList(hits, {
    onCompare: (hit) => openCompare(compareRegion, hit, compareImage),
    feedback: { studyUid, modality, onSaved: onFeedback },
  });
  const count = el("p", { class: "hint case-count", "aria-live": "polite" });
  const filters = {
    label: filterSelect(
      "Label",
      hits.map((hit) => hit.label),
    ),
    site: filterSelect(
      "Site",
      hits.map((hit) => hit.site_id),
    ),
    modality: filterSelect(
      "Modality",
      hits.map((hit) => hit.modality),
    ),
  };
  const apply = () => {
    let shown = 0;
    for (const item of list.children) {
      const data = item.firstElementChild.dataset;
      const visible = Object.entries(filters).every(
        ([key, filter]) => !filter.control.value || data[key] === filter.control.value,
      );
      item.hidden = !visible;
      shown += visible ? 1 : 0;
    }
    count.textContent = `Showing ${shown} of ${hits.length} cases, ranked by similarity.`;
  };
  for (const filter of Object.values(filters)) filter.control.addEventListener("change", apply);
  apply();

  const reveal = (caseId) => {
    const card = [...list.querySelectorAll(".case-card")].find((c) => c.dataset.caseId === caseId);
    if (!card) {
      showStatus(`Case ${shortId(caseId)} is not among the similar cases.`, "error");
      return;
    }
    if (card.parentElement.hidden) {
      for (const filter of Object.values(filters)) filter.control.value = "";
      apply();
    }
    card.scrollIntoView({ block: "center", behavior: "smooth" });
    card.classList.add("flash");
    card.focus({ preventScroll: true });
    setTimeout(() => card.classList.remove("flash"), FLASH_MS);
  };

  const node = el(
    "section",
    { class: "similar-panel", "aria-label": "Similar cases" },
    el("h3", { text: "Similar cases" }),
    hits.length
      ? el(
          "div",
          { class: "filters" },
          Object.values(filters).map((filter) => el("span", { class: "control" }, filter.nodes)),
        )
      : el("p", { text: "No similar cases were found for this result." }),
    count,
    compareRegion,
    list,
  );
  return { node, reveal };
}

function filterSelect(name, values) {
  const distinct = [...new Set(values.filter(Boolean))].sort();
  const control = select([["", "All"], ...distinct.map((value) => [value, value])], {
    class: `filter-${name.toLowerCase()}`,
  });
  return { control, nodes: labelled(name, control) };
}

async function openCompare(region, hit, compareImage) {
  const close = el("button", { type: "button", text: "Close comparison" });
  const caseColumn = el("div", { class: "compare-case" }, el("p", { text: "Loading case…" }));
  const current = compareImage ? compareImage() : null;
  const box = el(
    "section",
    { class: "compare", "aria-label": "Side-by-side comparison", tabindex: -1 },
    el(
      "div",
      { class: "compare-head" },
      el("h4", { text: `Compare with case #${hit.rank}` }),
      close,
    ),
    el(
      "div",
      { class: "compare-columns" },
      el(
        "div",
        { class: "compare-current" },
        el("h5", { text: "This study (key image with heat map)" }),
        current || el("p", { text: "No key image for this study." }),
      ),
      caseColumn,
    ),
  );
  close.addEventListener("click", () => region.replaceChildren());
  fill(region, box);
  box.focus();
  try {
    const { data } = await get(casePath(hit.case_id));
    fill(
      caseColumn,
      el("h5", {
        text: `Case ${shortId(data.case_id)} (rank ${hit.rank}, score ${Number(hit.score).toFixed(3)})`,
      }),
      thumbnail(data.case_id, "compare-thumbnail"),
      el(
        "dl",
        { class: "facts" },
        fact("Label", data.label),
        fact("Site", data.site_id),
        fact("Modality", data.modality),
        fact("Study year", data.study_year ?? "—"),
        data.ef_percent != null ? fact("EF", `${Number(data.ef_percent).toFixed(1)}%`) : null,
      ),
      el("h5", { text: "De-identified report" }),
      el(
        "p",
        { class: "report full-report" },
        highlighted(data.report_text || "", hit.matched_sentences),
      ),
    );
  } catch (error) {
    fill(caseColumn, el("p", { text: `The case could not be loaded: ${error.detail}` }));
    showStatus(`Case ${shortId(hit.case_id)}: ${error.detail || error.message}`, "error");
  }
}

/** The case's thumbnail; a "No thumbnail" box when the index keeps none (404). */
function thumbnail(caseId, className) {
  const image = el("img", {
    class: className,
    src: casePath(caseId, "thumbnail.png"),
    alt: `Thumbnail of case ${shortId(caseId)}`,
  });
  const missing = () =>
    image.replaceWith(
      el("span", {
        class: `${className} no-thumbnail`,
        role: "img",
        "aria-label": "No thumbnail",
        text: "No thumbnail",
      }),
    );
  image.addEventListener("error", missing, { once: true });
  return image;
}

/** A <dt>/<dd> pair. */
export function fact(term, value) {
  return [el("dt", { text: term }), el("dd", { text: value ?? "—" })];
}
