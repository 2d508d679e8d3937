// ctx.api: JSON requests to the dashboard's API, with the CSRF header; never throws.

const CSRF = document.querySelector('meta[name="csrf-token"]')?.content || "";

// -> Promise<{status, body}>; a network error gives {status: 0, body: {error}}, a body that is not
// JSON gives {error: "HTTP <status>"}. `extraHeaders`: more request headers (an Idempotency-Key).
export async function api(method, url, body, extraHeaders = {}) {
  const headers = { ...extraHeaders, Accept: "application/json", "X-CSRFToken": CSRF };
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    return { status: 0, body: { error: "Could not reach the server." } };
  }
  let parsed;
  try {
    parsed = await response.json();
  } catch (error) {
    parsed = { error: `HTTP ${response.status}` };
  }
  return { status: response.status, body: parsed ?? {} };
}
