// The dashboard's JSON API (docs/web.md): every answer is JSON; an error is {"error": "..."}
// with an HTTP status, thrown here as an ApiError whose message is that line.
export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

const TIMEOUT_MS = 20000;

async function call(method, path, body) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
  let res;
  try {
    res = await fetch(path, {
      method,
      signal: abort.signal,
      credentials: "same-origin",
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(abort.signal.aborted
      ? "no answer from probing web in " + TIMEOUT_MS / 1000 + " s"
      : "probing web does not answer (stopped?): " + e.message, 0);
  } finally {
    clearTimeout(timer);
  }
  let data = null;
  try {
    data = await res.json();
  } catch (e) {
    throw new ApiError("probing web answered " + res.status + " without JSON", res.status);
  }
  if (!res.ok) throw new ApiError(data && data.error ? data.error : "HTTP " + res.status, res.status);
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);
