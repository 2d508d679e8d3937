// Screen-reader announcements (helper E fills this in): a polite live region, rate-limited.

export function announce(text) {
  const region = document.getElementById("announcer");
  if (region) region.textContent = String(text ?? "");
}

export function mount() {}
