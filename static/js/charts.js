// Charts (/charts): a stub until helper B's view replaces it.
import { el } from "./dom.js";

export function mount(root) {
  root.replaceChildren(el("h2", {}, "Charts"));
}
