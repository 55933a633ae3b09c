// Feedback on a prediction or on a similar case: agree / disagree and a comment, stored
// by the service with the user and the time (POST /api/feedback), listed per study.

import { get, post } from "./api.js";
import { el, fill, labelled, localTime, showStatus, uniqueId } from "./dom.js";

const MAX_COMMENT = 2000;

/**
 * A feedback form. `target` is "prediction" or "case" (then `caseId` is required);
 * `onSaved(entry)` runs after the service stored it.
 */
export function feedbackForm({
  studyUid,
  target,
  caseId = null,
  modality = null,
  legend,
  onSaved,
}) {
  const name = uniqueId("verdict");
  const radio = (value, text) => {
    const input = el("input", { type: "radio", name, value, id: uniqueId(name) });
    return el("span", { class: "choice" }, input, el("label", { for: input.id, text }));
  };
  const comment = el("textarea", { rows: 2, maxlength: MAX_COMMENT, class: "feedback-comment" });
  const form = el(
    "form",
    { class: "feedback-form", dataset: { target } },
    el(
      "fieldset",
      {},
      el("legend", { text: legend }),
      el("div", { class: "choices" }, radio("agree", "Agree"), radio("disagree", "Disagree")),
      labelled("Comment (optional)", comment),
      el("button", { type: "submit", text: "Send feedback" }),
    ),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const checked = form.querySelector(`input[name="${name}"]:checked`);
    const verdict = checked ? checked.value : null;
    const text = comment.value.trim();
    if (!verdict && !text) {
      showStatus("Choose agree or disagree, or write a comment, before sending.", "error");
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const { data } = await post("/api/feedback", {
        study_instance_uid: studyUid,
        target,
        case_id: target === "case" ? caseId : null,
        modality,
        verdict,
        comment: text || null,
      });
      form.reset();
      showStatus(`Feedback saved (${target === "case" ? "similar case" : "prediction"}).`);
      if (onSaved) onSaved(data);
    } catch (error) {
      showStatus(`Feedback not saved: ${error.detail || error.message}`, "error");
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

/** The stored feedback of a study, newest first; `reload()` fetches it again. */
export function feedbackList(studyUid) {
  const body = el("tbody");
  const summary = el("p", { class: "hint", text: "Loading feedback…" });
  const table = el(
    "table",
    { class: "feedback-list" },
    el("caption", { text: "Feedback stored for this study" }),
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        ["Time", "User", "About", "Verdict", "Comment"].map((text) =>
          el("th", { scope: "col", text }),
        ),
      ),
    ),
    body,
  );
  const reload = async () => {
    try {
      const { data } = await get("/api/feedback", { study_instance_uid: studyUid, limit: 100 });
      fill(
        body,
        ...data.items.map((item) =>
          el(
            "tr",
            { dataset: { feedbackId: String(item.id) } },
            el("td", { text: localTime(item.created_at) }),
            el("td", { text: item.user }),
            el("td", { text: about(item) }),
            el("td", { text: item.verdict || "—" }),
            el("td", { text: item.comment || "" }),
          ),
        ),
      );
      summary.textContent = data.total
        ? `${data.total} entr${data.total === 1 ? "y" : "ies"}.`
        : "No feedback yet.";
    } catch (error) {
      summary.textContent = `Feedback could not be loaded: ${error.detail || error.message}`;
    }
  };
  reload();
  return { node: el("div", { class: "feedback-stored" }, table, summary), reload };
}

function about(item) {
  if (item.target === "case") return `similar case ${item.case_id}`;
  return item.modality ? `${item.modality} prediction` : "prediction";
}
