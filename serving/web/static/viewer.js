// Key images of a result: MR slices in three planes, the echo cine loop, each with the
// explanation heat map stacked over the image (its opacity set through a CSS variable).

import { viewerPng } from "./api.js";
import { el, labelled, uniqueId } from "./dom.js";

const PLANES = ["axial", "coronal", "sagittal"];
const MIN_FRAME_INTERVAL_MS = 20;

/** An image with its heat layer on top, the pair sized by the image. */
export function stackedImage(imageUrl, heatUrl, alt, dataset = {}) {
  const image = el("img", { class: "layer-image", src: imageUrl, alt, dataset });
  const heat = el("img", { class: "layer-heat", src: heatUrl, alt: "", dataset });
  return { node: el("div", { class: "stack" }, image, heat), image, heat };
}

/** Opacity slider (0-100%) and show/hide toggle for the heat layers inside `scope`. */
export function heatControls(scope, initialPercent = 50) {
  const apply = (value) => scope.style.setProperty("--heat-opacity", String(value / 100));
  const opacity = el("input", {
    type: "range",
    min: 0,
    max: 100,
    step: 5,
    value: initialPercent,
    class: "heat-opacity",
  });
  const output = el("output", { text: `${initialPercent}%` });
  opacity.addEventListener("input", () => {
    apply(Number(opacity.value));
    output.textContent = `${opacity.value}%`;
  });
  const shown = el("input", {
    type: "checkbox",
    class: "heat-toggle",
    id: uniqueId("heat"),
    checked: true,
  });
  shown.addEventListener("change", () => scope.classList.toggle("heat-hidden", !shown.checked));
  apply(initialPercent);
  return el(
    "div",
    { class: "heat-controls" },
    el("span", { class: "control" }, labelled("Heat map opacity", opacity), output),
    el("span", { class: "control" }, shown, el("label", { for: shown.id, text: "Show heat map" })),
  );
}

/** Three planes of an MR volume, each with a slice slider starting at the key slice. */
export function mrViewer(uid, meta) {
  const figures = PLANES.map((plane) => {
    const count = meta.planes[plane];
    let index = clamp(meta.key[plane], 0, count - 1);
    const stack = stackedImage(
      viewerPng(uid, "MR", plane, index, "image"),
      viewerPng(uid, "MR", plane, index, "heat"),
      `${plane} slice`,
      { plane },
    );
    const caption = el("span", { class: "slice-number" });
    const slider = el("input", {
      type: "range",
      min: 0,
      max: count - 1,
      step: 1,
      value: index,
      class: "slice-slider",
      dataset: { plane },
    });
    const show = () => {
      caption.textContent = `${index + 1} / ${count}${index === meta.key[plane] ? " (key)" : ""}`;
      stack.image.alt = `${plane} slice ${index + 1} of ${count}`;
      stack.image.src = viewerPng(uid, "MR", plane, index, "image");
      stack.heat.src = viewerPng(uid, "MR", plane, index, "heat");
    };
    slider.addEventListener("input", () => {
      index = Number(slider.value);
      show();
    });
    show();
    return el(
      "figure",
      { class: "plane" },
      stack.node,
      el("figcaption", {}, labelled(`${capitalised(plane)} slice`, slider), caption),
    );
  });
  return { node: el("div", { class: "planes" }, figures), stop() {} };
}

/**
 * The echo loop playing at its frame interval, frames preloaded, with play/pause and a
 * scrubber (moving it pauses). `stop()` ends the timer when the view goes away.
 */
export function cineViewer(uid, meta) {
  const frames = meta.frames;
  const interval = Math.max(MIN_FRAME_INTERVAL_MS, Number(meta.frame_interval_ms) || 40);
  const urls = (layer) =>
    Array.from({ length: frames }, (_, i) => viewerPng(uid, "US", "frame", i, layer));
  const imageUrls = urls("image");
  const heatUrls = urls("heat");
  // Kept referenced so the browser holds every frame before the loop needs it.
  const preloaded = [...imageUrls, ...heatUrls].map((url) => {
    const image = new Image();
    image.src = url;
    return image;
  });
  const keyFrames = new Set(meta.key_frames || []);
  let frame = clamp((meta.key_frames || [0])[0] ?? 0, 0, frames - 1);
  const stack = stackedImage(imageUrls[frame], heatUrls[frame], "echo frame");
  const caption = el("span", { class: "frame-number" });
  const scrubber = el("input", {
    type: "range",
    min: 0,
    max: frames - 1,
    step: 1,
    value: frame,
    class: "cine-scrubber",
  });
  const button = el("button", { type: "button", class: "cine-play", "aria-pressed": "false" });
  const cine = el("div", { class: "cine", dataset: { frame: String(frame) } }, stack.node);
  let timer = null;

  const show = (next) => {
    frame = next;
    cine.dataset.frame = String(frame);
    stack.image.src = imageUrls[frame];
    stack.heat.src = heatUrls[frame];
    stack.image.alt = `echo frame ${frame + 1} of ${frames}`;
    scrubber.value = String(frame);
    caption.textContent = `${frame + 1} / ${frames}${keyFrames.has(frame) ? " (key)" : ""}`;
  };
  const pause = () => {
    if (timer !== null) clearInterval(timer);
    timer = null;
    button.textContent = "Play";
    button.setAttribute("aria-pressed", "false");
  };
  const play = () => {
    if (timer !== null) return;
    timer = setInterval(() => show((frame + 1) % frames), interval);
    button.textContent = "Pause";
    button.setAttribute("aria-pressed", "true");
  };
  button.addEventListener("click", () => (timer === null ? play() : pause()));
  scrubber.addEventListener("input", () => {
    pause();
    show(Number(scrubber.value));
  });
  // Taking hold of the scrubber stops the loop, even when the value does not change
  // (End on the last frame), so the frame stays where the reader put it.
  scrubber.addEventListener("keydown", pause);
  scrubber.addEventListener("pointerdown", pause);
  show(frame);
  const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  if (reducedMotion) pause();
  else play();
  const node = el(
    "figure",
    { class: "cine-viewer" },
    cine,
    el(
      "figcaption",
      {},
      button,
      labelled("Frame", scrubber),
      caption,
      el("span", { class: "hint", text: `${Math.round(1000 / interval)} frames/s` }),
    ),
  );
  return { node, preloaded, stop: pause };
}

/** The key image of a result with its heat layer (for the side-by-side compare). */
export function keyImage(uid, meta) {
  if (meta.kind === "volume") {
    const index = meta.key.axial;
    return stackedImage(
      viewerPng(uid, "MR", "axial", index, "image"),
      viewerPng(uid, "MR", "axial", index, "heat"),
      `current study, axial key slice ${index + 1}`,
    ).node;
  }
  const frame = (meta.key_frames || [0])[0] ?? 0;
  return stackedImage(
    viewerPng(uid, "US", "frame", frame, "image"),
    viewerPng(uid, "US", "frame", frame, "heat"),
    `current study, key frame ${frame + 1}`,
  ).node;
}

function clamp(value, low, high) {
  const number = Number.isFinite(Number(value)) ? Number(value) : low;
  return Math.min(high, Math.max(low, number));
}

function capitalised(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
