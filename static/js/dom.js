// Building DOM nodes: text always goes in as text nodes (textContent), never as markup.

// el("td", {class: "name"}, "text", otherNode): attributes, then children (strings become text).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// Sets a node's text only when it differs: a write that changes nothing still costs a style pass.
export function setText(node, text) {
  const value = String(text ?? "");
  if (node.textContent !== value) node.textContent = value;
}

// "14:03:07" in the reader's locale, from a Date.
export function clock(date) {
  return date ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false }) : "";
}

// Bidirectional controls (embeddings, overrides, isolates, marks): in a task's text they would
// reorder what follows them (a U+202E makes "txt.exe" read "exe.txt"), so they are shown as escapes.
const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

// `text` (anything a task brings: name, message, traceback, result, progress message) with each
// bidirectional control shown as `\u202e`, as the arguments' Python repr shows it.
export function visible(text) {
  const value = String(text ?? "");
  return value.replace(BIDI, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
