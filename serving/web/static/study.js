// The study view: who and what the study is, then per result (MR, US) the prediction with
// its calibrated probability, the key images with the heat map, the similar cases and the
// cited draft, and feedback. Polls while the study is still being processed.

import { ApiError, get, studyPath } from "./api.js";
import { dicomDate, el, fill, percent, personName, showStatus } from "./dom.js";
import { fact, similarPanel } from "./cases.js";
import { feedbackForm, feedbackList } from "./feedback.js";
import { cineViewer, heatControls, keyImage, mrViewer } from "./viewer.js";

const POLL_MS = 3000;

/** Renders study `uid` into `view.main`. */
export async function renderStudy(view, uid) {
  const heading = el("h2", { tabindex: -1, text: "Study" });
  const banner = el("p", { class: "banner", role: "note", text: "Not for diagnostic use" });
  const body = el("div", { class: "study-body" }, el("p", { text: "Loading study…" }));
  fill(
    view.main,
    el("p", {}, el("a", { href: "#/worklist", text: "← Back to the worklist" })),
    heading,
    banner,
    body,
  );
  heading.focus();
  let detail;
  try {
    ({ data: detail } = await get(studyPath(uid)));
  } catch (error) {
    if (!view.active()) return;
    fill(body, el("p", { text: `The study could not be opened: ${error.detail}` }));
    showStatus(`Study: ${error.detail || error.message}`, "error");
    return;
  }
  if (!view.active()) return;
  heading.textContent = `${personName(detail.patient_name)} — ${detail.study_description || "study"}`;
  const results = el("div", { class: "results" }, el("p", { text: "Loading the result…" }));
  fill(body, studyFacts(detail), results);
  await loadResult(view, uid, results);
}

function studyFacts(detail) {
  return el(
    "dl",
    { class: "facts study-facts" },
    fact("Patient ID", detail.patient_id),
    fact("Birth date", dicomDate(detail.patient_birth_date)),
    fact("Sex", detail.patient_sex || "—"),
    fact("Study date", dicomDate(detail.study_date)),
    fact("Accession", detail.accession_number || "—"),
    fact("Modalities", detail.modalities.join(", ") || "—"),
    fact("Series", String(detail.series.length)),
  );
}

async function loadResult(view, uid, container) {
  let response;
  try {
    response = await get(studyPath(uid, "result"));
  } catch (error) {
    if (!view.active()) return;
    const why =
      error instanceof ApiError && error.status === 404 ? error.detail : `${error.detail}`;
    fill(container, el("p", { text: `No result: ${why}` }));
    return;
  }
  if (!view.active()) return;
  if (response.status === 202) {
    fill(
      container,
      el("p", {
        class: "processing",
        text: `Processing (${response.data.state}): ${response.data.detail}. This page updates by itself.`,
      }),
    );
    const timer = setTimeout(() => loadResult(view, uid, container), POLL_MS);
    view.onLeave(() => clearTimeout(timer));
    return;
  }
  const payload = response.data.payload;
  const feedback = feedbackList(uid);
  const sections = [];
  for (const result of payload.results || []) {
    sections.push(await resultSection(view, uid, result, feedback.reload));
    if (!view.active()) return;
  }
  fill(
    container,
    el("p", { class: "disclaimer", text: response.data.disclaimer || payload.disclaimer }),
    ...sections,
    skipped(payload.skipped),
    el(
      "section",
      { class: "feedback-section", "aria-label": "Stored feedback" },
      el("h3", { text: "Feedback" }),
      feedback.node,
    ),
  );
}

async function resultSection(view, uid, result, reloadFeedback) {
  const modality = result.modality;
  const section = el("section", {
    class: "result",
    "aria-label": `${modality} result`,
    dataset: { result: modality },
  });
  const meta = await viewerMeta(uid, modality);
  if (!view.active()) return section;
  let viewer = null;
  if (meta && meta.kind === "volume") viewer = mrViewer(uid, meta);
  else if (meta && meta.kind === "cine") viewer = cineViewer(uid, meta);
  if (viewer) view.onLeave(viewer.stop);

  const images = el(
    "div",
    { class: "key-images" },
    el("h4", {
      text: modality === "MR" ? "Key slices (neurological orientation: left is left)" : "Cine loop",
    }),
    viewer ? viewer.node : el("p", { text: "No key images for this result." }),
    viewer ? heatControls(section) : null,
    meta
      ? el("p", {
          class: "hint",
          text: `Heat map: ${meta.method || "explanation"} for ${meta.target || result.prediction.label}.`,
        })
      : null,
  );
  const panel = similarPanel(result.similar_cases || [], {
    studyUid: uid,
    modality,
    compareImage: meta ? () => keyImage(uid, meta) : null,
    onFeedback: reloadFeedback,
  });
  section.append(
    el("h3", {
      text: `${modality === "MR" ? "MRI" : "Echo"}: ${result.series_description || result.series_instance_uid}`,
    }),
    el(
      "div",
      { class: "result-grid" },
      el(
        "div",
        { class: "result-main" },
        predictionBlock(result),
        images,
        draftBlock(result.draft, panel.reveal),
        feedbackForm({
          studyUid: uid,
          target: "prediction",
          modality,
          legend: `Do you agree with the ${modality} prediction (${result.prediction.label})?`,
          onSaved: reloadFeedback,
        }),
      ),
      panel.node,
    ),
  );
  return section;
}

async function viewerMeta(uid, modality) {
  try {
    return (await get(studyPath(uid, "viewer", modality))).data;
  } catch (error) {
    if (error.status !== 404) showStatus(`Key images (${modality}): ${error.detail}`, "error");
    return null;
  }
}

function predictionBlock(result) {
  const p = result.prediction;
  const model = result.model || {};
  const rows = [fact(`Calibrated probability of ${p.label}`, percent(p.probability))];
  if (p.positive_label && p.positive_label !== p.label) {
    rows.push(
      fact(`Calibrated probability of ${p.positive_label}`, percent(p.positive_probability)),
    );
  }
  if (p.fused_probability != null) {
    rows.push(fact(`Fused with similar cases (${p.positive_label})`, percent(p.fused_probability)));
  }
  if (result.evidence) {
    rows.push(
      fact(
        `Similar-case evidence for ${result.evidence.positive_label}`,
        `${percent(result.evidence.probability)} of ${result.evidence.n_cases} cases`,
      ),
    );
  }
  if (p.ef_percent != null)
    rows.push(fact("Ejection fraction", `${Number(p.ef_percent).toFixed(1)}%`));
  rows.push(
    fact("Model", `${model.name || "?"} ${model.version || ""} (${model.architecture || "?"})`),
  );
  return el(
    "div",
    { class: "prediction" },
    el(
      "p",
      { class: "prediction-headline" },
      "Prediction: ",
      el("strong", { class: "prediction-label", text: p.label }),
    ),
    el("dl", { class: "facts" }, rows),
    (result.warnings || []).length
      ? el(
          "ul",
          { class: "warnings" },
          result.warnings.map((w) => el("li", { text: w })),
        )
      : null,
  );
}

/** The draft report; each citation token is a button that reveals its case in the panel. */
function draftBlock(draft, reveal) {
  if (!draft) return null;
  const citations = draft.citations || {};
  const tokens = Object.keys(citations).sort((a, b) => b.length - a.length);
  const text = el("p", { class: "draft-text" });
  let rest = draft.text || "";
  while (rest) {
    let best = null;
    for (const token of tokens) {
      const at = rest.indexOf(token);
      if (at >= 0 && (best === null || at < best.at)) best = { at, token };
    }
    if (best === null) {
      text.append(rest);
      break;
    }
    text.append(rest.slice(0, best.at));
    const caseId = citations[best.token];
    text.append(
      el("button", {
        type: "button",
        class: "citation",
        text: best.token,
        "aria-label": `Show cited ${best.token.replace(/[[\]]/g, "")}`,
        dataset: { caseId },
        onclick: () => reveal(caseId),
      }),
    );
    rest = rest.slice(best.at + best.token.length);
  }
  return el(
    "section",
    { class: "draft", "aria-label": "Draft report" },
    el("h4", { text: "Draft report with citations" }),
    text,
    draft.note ? el("p", { class: "hint", text: draft.note }) : null,
  );
}

function skipped(entries) {
  if (!entries || !entries.length) return null;
  return el(
    "ul",
    { class: "warnings" },
    entries.map((entry) => el("li", { text: `${entry.modality} not processed: ${entry.reason}` })),
  );
}
