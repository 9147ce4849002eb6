// Tiny DOM builder. Every piece of data becomes a text node: never innerHTML with data.

/**
 * Create an element. `props` may hold className, text, title, href, id, dataset and attrs;
 * children are nodes or strings (strings become text nodes).
 */
export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  if (props.className) node.className = props.className;
  if (props.id) node.id = props.id;
  if (props.text !== undefined && props.text !== null) node.textContent = String(props.text);
  if (props.title !== undefined) node.title = String(props.title);
  if (props.href !== undefined) node.setAttribute("href", props.href);
  for (const [key, value] of Object.entries(props.dataset || {})) node.dataset[key] = value;
  for (const [key, value] of Object.entries(props.attrs || {})) node.setAttribute(key, value);
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** A status badge; the status only picks a CSS class from a fixed list. */
export function statusBadge(status) {
  const known = ["running", "finished", "failed", "crashed"];
  const kind = known.includes(status) ? status : "unknown";
  return el("span", { className: `badge badge-${kind}`, text: status || "unknown" });
}

export function setStatusBadge(node, status) {
  const fresh = statusBadge(status);
  node.className = fresh.className;
  node.textContent = fresh.textContent;
}

/** Show an error in the page's banner (not the console: tests treat console errors as bugs). */
export function showError(message) {
  const banner = document.getElementById("error-banner");
  if (!banner) return;
  banner.textContent = message;
  banner.hidden = false;
}

export function clearError() {
  const banner = document.getElementById("error-banner");
  if (banner) banner.hidden = true;
}
