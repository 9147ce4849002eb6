// The log-out button of every page, shown only when this browser is logged in.

async function showLogout() {
  const button = document.getElementById("logout");
  if (!button) return;
  const response = await fetch("/api/v1/session", { headers: { Accept: "application/json" } });
  if (!response.ok) return;
  const state = await response.json();
  if (!state.logged_in) return;
  button.hidden = false;
  button.addEventListener("click", async () => {
    await fetch("/api/v1/session", { method: "DELETE" });
    window.location.assign("/login");
  });
}

showLogout();
