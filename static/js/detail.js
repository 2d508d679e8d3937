// The task detail view (/tasks/<id>): a stub until helper E's view replaces it.
import { el } from "./dom.js";

export function mount(root, ctx) {
  root.replaceChildren(el("h2", {}, `Task ${ctx.route ? ctx.route.id : ""}`));
}
