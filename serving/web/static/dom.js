// Small DOM helpers shared by every view. Data from the service only ever reaches the page
// through textContent and attributes (never innerHTML), so nothing it holds runs as markup.

let nextId = 0;

/** A new element: attributes (class, text, on<event>, dataset, value, checked) and children. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "value" || key === "checked")
      continue; // properties, set below
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  if (children.length) fill(node, ...children); // keeps `text` when there are none
  // Last: after min/max (a range input clamps to its bounds) and after a select's options.
  if (attributes.value !== undefined && attributes.value !== null) node.value = attributes.value;
  if (attributes.checked) node.checked = true;
  return node;
}

/** Replaces the children of `node`; nested arrays are flattened, null/false skipped. */
export function fill(node, ...children) {
  const nodes = children
    .flat(2)
    .filter((child) => child !== null && child !== undefined && child !== false)
    .map((child) => (child instanceof Node ? child : String(child)));
  node.replaceChildren(...nodes);
  return node;
}

/** An id unique on the page, for label/input pairs. */
export function uniqueId(prefix) {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

/** A labelled form control: returns [label, control]. */
export function labelled(text, control) {
  if (!control.id) control.id = uniqueId("field");
  return [el("label", { for: control.id, text }), control];
}

/** A <select> over [value, text] pairs. */
export function select(options, attributes = {}) {
  return el(
    "select",
    attributes,
    options.map(([value, text]) => el("option", { value, text })),
  );
}

/** Shows a message in the page's status line (aria-live); kind "error" marks it as one. */
export function showStatus(message, kind = "info") {
  const line = document.getElementById("status");
  line.textContent = message;
  line.dataset.kind = kind;
}

export function clearStatus() {
  showStatus("");
}

/** "0.734" -> "73.4%"; "—" when the value is missing. */
export function percent(value, digits = 1) {
  return typeof value === "number" && Number.isFinite(value)
    ? `${(value * 100).toFixed(digits)}%`
    : "—";
}

/** "20240131" -> "2024-01-31"; other strings as they are. */
export function dicomDate(value) {
  return /^\d{8}$/.test(value || "")
    ? `${value.slice(0, 4)}-${value.slice(4, 6)}-${value.slice(6, 8)}`
    : value || "—";
}

/** A DICOM person name ("Family^Given^Middle") as "Family, Given Middle". */
export function personName(value) {
  const [family = "", ...given] = String(value || "").split("^");
  const rest = given.filter(Boolean).join(" ");
  if (!family && !rest) return "Unnamed patient";
  return rest ? `${family}, ${rest}` : family;
}

/** An ISO time in the reader's locale. */
export function localTime(iso) {
  const time = new Date(iso);
  return Number.isNaN(time.getTime()) ? String(iso) : time.toLocaleString();
}

/**
 * Text as nodes, with every occurrence of `phrases` wrapped in <mark>.
 * Exact matches first; a phrase found only ignoring case is marked too.
 */
export function highlighted(text, phrases) {
  const ranges = [];
  const lower = text.toLowerCase();
  for (const phrase of phrases || []) {
    const wanted = String(phrase).trim();
    if (!wanted) continue;
    for (const [haystack, needle] of [
      [text, wanted],
      [lower, wanted.toLowerCase()],
    ]) {
      let from = haystack.indexOf(needle);
      if (from < 0) continue;
      while (from >= 0) {
        ranges.push([from, from + needle.length]);
        from = haystack.indexOf(needle, from + needle.length);
      }
      break;
    }
  }
  ranges.sort((a, b) => a[0] - b[0]);
  const nodes = [];
  let at = 0;
  for (const [start, end] of ranges) {
    if (end <= at) continue;
    const from = Math.max(start, at);
    if (from > at) nodes.push(document.createTextNode(text.slice(at, from)));
    nodes.push(el("mark", { text: text.slice(from, end) }));
    at = end;
  }
  if (at < text.length) nodes.push(document.createTextNode(text.slice(at)));
  return nodes;
}
