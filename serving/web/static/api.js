// The JSON API as the page uses it: same-origin fetch with the session cookie.
// Mutating requests carry Content-Type: application/json, which the service requires
// (a cross-site form cannot send it).

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

const unauthorizedListeners = [];

/** Calls `listener` whenever the service answers 401 to anything but the session route. */
export function onUnauthorized(listener) {
  unauthorizedListeners.push(listener);
}

function detailOf(body, fallback) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    // FastAPI's validation errors: [{loc, msg}, ...]
    return detail.map((item) => `${(item.loc || []).slice(1).join(".")}: ${item.msg}`).join("; ");
  }
  return fallback;
}

/** A URL with the defined, non-empty `params` as its query string. */
export function withQuery(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(key, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/**
 * One request; resolves to {status, data} for 2xx, throws ApiError otherwise.
 * A 401 (outside /ui/api/session) also tells the onUnauthorized listeners.
 */
export async function request(method, path, { params, body } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") {
    init.headers["Content-Type"] = "application/json";
    if (body !== undefined) init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(withQuery(path, params), init);
  } catch {
    throw new ApiError(0, "the service did not answer; check the connection");
  }
  let data = null;
  if (response.status !== 204) data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new ApiError(
      response.status,
      detailOf(data, `${response.status} ${response.statusText}`),
    );
    if (response.status === 401 && !path.startsWith("/ui/api/session")) {
      for (const listener of unauthorizedListeners) listener(error);
    }
    throw error;
  }
  return { status: response.status, data };
}

export const get = (path, params) => request("GET", path, { params });
export const post = (path, body) => request("POST", path, { body });

/** Path of one study's route, the UID URL-encoded. */
export function studyPath(uid, ...rest) {
  return ["/api/studies", encodeURIComponent(uid), ...rest].join("/");
}

/** Path of one indexed case's route. */
export function casePath(caseId, ...rest) {
  return ["/api/cases", encodeURIComponent(caseId), ...rest].join("/");
}

/** URL of one viewer PNG (layer "image" or "heat"). */
export function viewerPng(uid, modality, plane, index, layer) {
  return `${studyPath(uid, "viewer", modality, plane, `${index}.png`)}?layer=${layer}`;
}
