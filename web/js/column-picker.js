// The runs table's column picker: a searchable list of config keys and series summaries, each a
// checkbox. It shows at most SHOWN options (a model has hundreds of keys): search narrows them.

import { el } from "./dom.js";
import { columnLabel } from "./run-columns.js";

const SHOWN = 150;

export class ColumnPicker {
  /**
   * `root`: the <details> holding a search box (#column-search) and a list (#column-options);
   * onToggle(key, on) runs when the user ticks or unticks a column.
   */
  constructor(root, onToggle) {
    this.root = root;
    this.search = root.querySelector("#column-search");
    this.list = root.querySelector("#column-options");
    this.count = root.querySelector("#column-count");
    this.onToggle = onToggle;
    this.options = [];
    this.chosen = [];
    this.search.addEventListener("input", () => this.render());
  }

  /** Offer `options` ([{key, kind}]) with the `chosen` keys ticked. */
  update(options, chosen) {
    const same =
      options.length === this.options.length &&
      options.every((option, i) => option.key === this.options[i].key) &&
      chosen.join("\n") === this.chosen.join("\n");
    this.options = options;
    this.chosen = chosen.slice();
    this.count.textContent = chosen.length ? `(${chosen.length})` : "";
    if (!same) this.render();
  }

  render() {
    const needle = this.search.value.trim().toLowerCase();
    const chosen = new Set(this.chosen);
    // Chosen columns no run offers any more stay listed, to untick them.
    const known = new Set(this.options.map((option) => option.key));
    const gone = this.chosen.filter((key) => !known.has(key)).map((key) => ({ key, kind: "" }));
    const hits = [...gone, ...this.options].filter(
      (option) => !needle || option.key.toLowerCase().includes(needle),
    );
    const items = hits.slice(0, SHOWN).map((option) => this.item(option, chosen.has(option.key)));
    if (hits.length > SHOWN) {
      items.push(el("li", { className: "muted small-text", text: `${hits.length - SHOWN} more: narrow the search` }));
    }
    if (!hits.length) items.push(el("li", { className: "muted small-text", text: "no column matches" }));
    this.list.replaceChildren(...items);
  }

  item(option, checked) {
    const box = el("input", { attrs: { type: "checkbox" }, dataset: { key: option.key } });
    box.checked = checked;
    box.addEventListener("change", () => this.onToggle(option.key, box.checked));
    return el("li", {}, [
      el("label", {}, [
        box,
        el("span", { className: "mono", text: columnLabel(option.key) }),
        el("span", { className: "muted small-text", text: option.kind }),
      ]),
    ]);
  }
}
