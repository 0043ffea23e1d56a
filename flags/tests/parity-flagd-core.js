// Evaluates a corpus with @openfeature/flagd-core (flagd's JavaScript evaluator) for the
// parity test in parity.rs: node parity-flagd-core.js INPUT OUTPUT, with NODE_PATH set to
// the node_modules holding the package. INPUT: {"now", "sets": [json...], "contexts": [...]}.
// OUTPUT: one line per context, one `variant\u0001reason\u0001errorCode` per flag of every
// set (sets in order, flags by key), separated by tabs.
'use strict';
const fs = require('fs');
const { FlagdCore } = require('@openfeature/flagd-core');

const [input, output] = process.argv.slice(2);
const corpus = JSON.parse(fs.readFileSync(input, 'utf8'));
// $flagd.timestamp is Date.now() in seconds: fix it so both sides see the same time.
Date.now = () => corpus.now * 1000;
const silent = { error() {}, warn() {}, info() {}, debug() {} };

const sets = corpus.sets.map((json) => {
  const core = new FlagdCore(undefined, silent);
  core.setConfigurations(json);
  const keys = [...core.getFlags().keys()].sort();
  const types = keys.map((k) => {
    const flag = core.getFlag(k);
    const d = flag.defaultVariant === undefined ? undefined : flag.variants.get(flag.defaultVariant);
    const t = typeof d;
    return t === 'boolean' || t === 'string' || t === 'number' ? t : 'object';
  });
  return { core, keys, types };
});

const fd = fs.openSync(output, 'w');
let buf = [];
for (const ctx of corpus.contexts) {
  const row = [];
  for (const { core, keys, types } of sets) {
    keys.forEach((k, i) => {
      const r = core.resolve(types[i], k, null, ctx, silent);
      row.push(`${r.variant ?? ''}\u0001${r.reason}\u0001${r.errorCode ?? ''}`);
    });
  }
  buf.push(row.join('\t'));
  if (buf.length >= 1000) {
    fs.writeSync(fd, buf.join('\n') + '\n');
    buf = [];
  }
}
if (buf.length) fs.writeSync(fd, buf.join('\n') + '\n');
fs.closeSync(fd);
