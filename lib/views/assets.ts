/**
 * The pages' stylesheet and icon. TypeScript rather than .css/.svg files so they are compiled into
 * `dist/` with everything else (the build copies only templates).
 */

/** One stylesheet for every page: the proxy's views and the development identity provider's. */
export const PAGE_CSS = `
:root {
  --ink: #1b1d23;
  --muted: #545a66;
  --line: #dfe2e8;
  --paper: #ffffff;
  --ground: #f3f4f7;
  --accent: #3a3fd1;
  --accent-ink: #ffffff;
  --focus: #1a5fff;
  --danger: #a4262c;
  color-scheme: light;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0;
  min-height: 100vh;
  background: var(--ground);
  color: var(--ink);
  font: 16px/1.55 system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif;
  overflow-wrap: anywhere;
}
.page { max-width: 34rem; margin: 0 auto; padding: 2.5rem 1rem 3rem; }
.brand { display: flex; align-items: center; gap: .6rem; margin: 0 0 1.25rem; color: var(--muted); font-weight: 600; font-size: .95rem; }
.brand img { width: 24px; height: 24px; border-radius: 5px; }
.card { background: var(--paper); border: 1px solid var(--line); border-radius: 12px; padding: 2rem; box-shadow: 0 1px 2px rgba(16, 24, 40, .05); }
h1 { font-size: 1.45rem; line-height: 1.3; margin: 0 0 .75rem; letter-spacing: -.01em; }
h2 { font-size: 1rem; margin: 1.75rem 0 .5rem; }
p { margin: 0 0 1rem; }
ul { margin: 0 0 1rem; padding-left: 1.25rem; }
li { margin: .3rem 0; }
a { color: var(--accent); }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .88rem; }
code { background: var(--ground); border-radius: 4px; padding: .1rem .3rem; }
pre { background: var(--ground); border: 1px solid var(--line); border-radius: 8px; padding: .75rem; overflow-x: auto; white-space: pre-wrap; margin: 0 0 1rem; }
pre code { background: none; padding: 0; }
.lead { font-size: 1.05rem; }
.url { font-size: 1rem; font-weight: 600; border-color: #b9bec9; background: var(--paper); }
.muted { color: var(--muted); font-size: .92rem; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: .45rem 1rem; margin: 1.25rem 0; padding: 1rem 0; border-top: 1px solid var(--line); border-bottom: 1px solid var(--line); }
.facts dt { color: var(--muted); }
.facts dd { margin: 0; font-weight: 500; }
.actions { display: flex; flex-wrap: wrap; gap: .75rem; margin-top: 1.5rem; }
.actions form { margin: 0; }
button, .button {
  display: inline-block; font: inherit; font-weight: 600; line-height: 1.2;
  padding: .7rem 1.3rem; border-radius: 8px; border: 1px solid #b9bec9;
  background: var(--paper); color: var(--ink); cursor: pointer; text-decoration: none;
}
button:hover { background: var(--ground); }
button.primary { background: var(--accent); border-color: var(--accent); color: var(--accent-ink); }
button.primary:hover { background: #2f33b0; }
:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
label { display: block; font-weight: 600; margin-bottom: .35rem; }
input[type='text'] {
  display: block; width: 100%; font: inherit; padding: .65rem .75rem;
  border: 1px solid #8d94a1; border-radius: 8px; background: var(--paper); color: var(--ink);
}
.notice { border-left: 4px solid var(--accent); background: #f1f2fd; padding: .75rem 1rem; border-radius: 4px; margin: 0 0 1rem; }
.alert { color: var(--danger); font-weight: 600; }
.reference { margin-top: 1.5rem; padding-top: 1rem; border-top: 1px solid var(--line); }
footer { margin-top: 1.25rem; text-align: center; color: var(--muted); font-size: .85rem; }
@media (max-width: 480px) {
  .page { padding: 1.25rem .75rem 2rem; }
  .card { padding: 1.25rem; }
  h1 { font-size: 1.25rem; }
  .facts { grid-template-columns: 1fr; gap: .1rem; }
  .facts dd { margin-bottom: .5rem; }
  .actions { flex-direction: column-reverse; }
  .actions form, .actions button { width: 100%; }
}
`;

export const FAVICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" fill="#3a3fd1"/><path d="M11 14v-3a5 5 0 0 1 10 0v3" fill="none" stroke="#fff" stroke-width="2.5" stroke-linecap="round"/><rect x="8" y="14" width="16" height="11" rx="2.5" fill="#fff"/><circle cx="16" cy="19.5" r="1.8" fill="#3a3fd1"/></svg>`;
