// The audit log (/audit, admins): a stub until helper C's view replaces it.
import { el } from "./dom.js";

export function mount(root) {
  root.replaceChildren(el("h2", {}, "Audit log"));
}
