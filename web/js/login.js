// The login page: the token is sent once, as JSON; the server answers with an HttpOnly session
// cookie, so no script here (or anywhere) ever keeps the token.

const form = document.getElementById("login");
const input = document.getElementById("token");
const error = document.getElementById("login-error");

/** Where to go after logging in: a path on this server only (never another site). */
export function nextPath(search) {
  const next = new URLSearchParams(search).get("next") || "/";
  const local = next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\");
  return local ? next : "/";
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  const response = await fetch("/api/v1/session", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ token: input.value.trim() }),
  });
  if (response.ok) {
    window.location.assign(nextPath(window.location.search));
    return;
  }
  let detail = `HTTP ${response.status}`;
  try {
    detail = (await response.json()).detail || detail;
  } catch {
    // not a problem document: keep the status
  }
  error.textContent = `Not logged in: ${detail}`;
  error.hidden = false;
  input.select();
});
