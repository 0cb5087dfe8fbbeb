// test/mermaid/check.mjs -- parses Mermaid files with Mermaid's own parser
// (the npm package mermaid, in a DOM made by jsdom: no browser), for
// test/t/060_monitor.pl.
//
//   node test/mermaid/check.mjs FILE...
//
// Prints "ok FILE: TYPE" (the diagram type detected) or "FAIL FILE:
// MESSAGE" for each; exits 1 if any failed.
import { readFileSync } from 'node:fs';
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');
mermaid.initialize({ startOnLoad: false });

let failed = 0;
for (const file of process.argv.slice(2)) {
	try {
		const result = await mermaid.parse(readFileSync(file, 'utf8'));
		console.log(`ok ${file}: ${result.diagramType}`);
	} catch (e) {
		failed++;
		console.log(`FAIL ${file}: ${String(e.message ?? e).split('\n').slice(0, 3).join(' | ')}`);
	}
}
process.exit(failed ? 1 : 0);
