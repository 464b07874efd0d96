// Parses every ```mermaid (or ~~~mermaid) fenced block in the given Markdown files and folders
// with mermaid.parse(), the parser a renderer runs before drawing.
// Usage: node .ci/mermaid-check.mjs CACHE_DIR PATH... (CACHE_DIR holds node_modules/ with
// mermaid and jsdom; .ci/mermaid-check installs them). Prints `file:line: message` per failing
// block (line = the offending diagram line when Mermaid names one, else the opening fence) and
// exits 1; otherwise prints how many blocks were checked.
import { createRequire } from 'node:module';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [cacheDir, ...roots] = process.argv.slice(2);
if (!cacheDir || roots.length === 0) {
  console.error('usage: node .ci/mermaid-check.mjs CACHE_DIR PATH...');
  process.exit(2);
}
const require = createRequire(join(cacheDir, 'package.json'));

// Mermaid needs a browser DOM even to parse: DOMPurify, which it runs on label text, binds to
// the global `window` when its module is evaluated. So the globals go first, and mermaid is
// imported dynamically after them.
const { JSDOM } = require('jsdom');
const dom = new JSDOM('<!DOCTYPE html><html><body></body></html>', { pretendToBeVisual: true });
globalThis.window = dom.window;
globalThis.document = dom.window.document;
for (const name of ['Element', 'HTMLElement', 'SVGElement', 'Node', 'DocumentFragment', 'DOMParser']) {
  if (!(name in globalThis)) globalThis[name] = dom.window[name];
}
const mermaid = (await import(pathToFileURL(require.resolve('mermaid')).href)).default;
mermaid.initialize({ startOnLoad: false });

// Self-test, so that a broken setup cannot pass silently: an HTML label (sanitized by
// DOMPurify) must parse, and a `;` inside a sequence message (a statement break) must not.
async function parses(text) {
  try {
    await mermaid.parse(text);
    return true;
  } catch {
    return false;
  }
}
if (!(await parses('flowchart LR\n  a["x<br/>y"] --> b'))
  || await parses('sequenceDiagram\n  A->>B: one; two')) {
  console.error('mermaid-check: the Mermaid parser does not behave as expected here; the check cannot run');
  process.exit(2);
}

function markdownFiles(path) {
  if (statSync(path).isDirectory()) {
    return readdirSync(path).sort().flatMap((name) => markdownFiles(join(path, name)));
  }
  return path.endsWith('.md') ? [path] : [];
}

// CommonMark fences: an opening run of >= 3 backticks or tildes (indented at most 3 spaces)
// ends at a run of the same character at least as long. Blocks nested in another fence are text.
function mermaidBlocks(text) {
  const lines = text.split('\n');
  const blocks = [];
  let open = null;
  lines.forEach((line, i) => {
    if (open === null) {
      const m = /^( {0,3})(`{3,}|~{3,})\s*([^\s`]*)/.exec(line);
      if (m) {
        open = { indent: m[1].length, fence: m[2], info: m[3].toLowerCase(), line: i + 1, body: [] };
      }
      return;
    }
    const close = /^ {0,3}(`{3,}|~{3,})\s*$/.exec(line);
    if (close && close[1][0] === open.fence[0] && close[1].length >= open.fence.length) {
      if (open.info === 'mermaid') blocks.push(open);
      open = null;
      return;
    }
    open.body.push(line.replace(new RegExp(`^ {0,${open.indent}}`), ''));
  });
  if (open !== null && open.info === 'mermaid') blocks.push({ ...open, unclosed: true });
  return blocks;
}

let checked = 0;
const failures = [];
for (const file of roots.flatMap(markdownFiles)) {
  for (const block of mermaidBlocks(readFileSync(file, 'utf8'))) {
    checked += 1;
    if (block.unclosed) {
      failures.push(`${file}:${block.line}: mermaid block is never closed`);
      continue;
    }
    try {
      await mermaid.parse(block.body.join('\n'));
    } catch (err) {
      const message = String(err?.message ?? err);
      const at = /on line (\d+)/.exec(message);
      const line = at ? block.line + Number(at[1]) : block.line;
      // Jison lists every token it would have accepted; past a few that is noise.
      const oneLine = message.split('\n').map((s) => s.trim()).filter(Boolean).join(' | ')
        .replace(/Expecting ((?:'[^']*', ){4})(?:'[^']*', )+/, 'Expecting $1…, ');
      failures.push(`${file}:${line}: ${oneLine} (block opened at line ${block.line})`);
    }
  }
}

for (const failure of failures) console.log(failure);
if (failures.length > 0) {
  console.log(`mermaid-check: ${failures.length} of ${checked} Mermaid blocks do not parse`);
  process.exit(1);
}
if (checked === 0) {
  console.log('mermaid-check: found no Mermaid blocks (wrong paths?)');
  process.exit(1);
}
console.log(`mermaid-check: all ${checked} Mermaid blocks parse`);
