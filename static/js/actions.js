// Acting on tasks (cancel, retry, bulk): helper C replaces this with the full version.

// Cancels `task` from its row's `button`; the button stays disabled while the request is in flight.
export async function cancelTask(task, button, ctx) {
  button.disabled = true;
  const { status } = await ctx.api("POST", `${ctx.config.apiTasks}/${encodeURIComponent(task.id)}/cancel`);
  if (status !== 202) button.disabled = false;
}
