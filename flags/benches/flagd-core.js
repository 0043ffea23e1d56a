// The same fractional flag as benches/evaluate.rs, evaluated by @openfeature/flagd-core, for
// BENCHMARKS.md: NODE_PATH=<node_modules> node flags/benches/flagd-core.js
'use strict';
const { FlagdCore } = require('@openfeature/flagd-core');
const core = new FlagdCore(undefined, { error() {}, warn() {}, info() {}, debug() {} });
core.setConfigurations(JSON.stringify({ flags: { 'new-checkout': {
  state: 'ENABLED', defaultVariant: 'off', variants: { on: true, off: false },
  targeting: { fractional: [['on', 25], ['off', 75]] } } } }));
const contexts = Array.from({ length: 1024 }, (_, i) => ({ targetingKey: `user-${i}`, plan: 'pro' }));
const run = (n) => {
  let on = 0;
  for (let i = 0; i < n; i++) {
    if (core.resolveBooleanEvaluation('new-checkout', false, contexts[i % 1024]).value) on++;
  }
  return on;
};
run(200000); // warm up the JIT
const n = 2000000;
const t0 = process.hrtime.bigint();
run(n);
const secs = Number(process.hrtime.bigint() - t0) / 1e9;
console.log(`flagd-core ${require('@openfeature/flagd-core/package.json').version}: ${Math.round(n / secs)} evaluations/s (${(secs * 1e9 / n).toFixed(0)} ns each) on node ${process.version}`);
